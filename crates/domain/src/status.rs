//! Delivery statuses and their order.

use serde::{Deserialize, Serialize};

/// A message's delivery status as Meta reports it. Statuses only move forward:
/// sent < delivered < read; `failed` is terminal and outranks the rest so a late `sent` or
/// `delivered` never hides a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn rank(self) -> i16 {
        match self {
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// Meta's status string; `None` for statuses Careline does not track (`played`, …).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_rank_in_delivery_order_with_failed_last() {
        let mut all = [DeliveryStatus::Failed, DeliveryStatus::Read, DeliveryStatus::Sent, DeliveryStatus::Delivered];
        all.sort_by_key(|s| s.rank());
        assert_eq!(
            all,
            [DeliveryStatus::Sent, DeliveryStatus::Delivered, DeliveryStatus::Read, DeliveryStatus::Failed]
        );
        for s in all {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("played"), None);
    }
}
