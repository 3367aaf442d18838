//! Meta's messaging tier: each business portfolio may start conversations with at most its
//! `messaging_limit` unique recipients per rolling 24 h.
//!
//! Every claim records the recipient in `portfolio_recipients` (PostgreSQL, shared by every
//! replica). Each replica re-reads the count of the last 24 h every few seconds and admits new
//! recipients while the count plus its admissions not yet in that count is under the limit; a recipient
//! already messaged in the window costs nothing. A job past the limit is deferred, never
//! dropped. Replicas may together overshoot by what they admit between two reads (at most the
//! refresh period × the send rate): alert well below the limit
//! (`careline_sender_tier_recipients / careline_sender_tier_limit > 0.8`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use careline_domain::facility::NetworkConfig;

struct Budget {
    limit: Option<u64>,
    counted: AtomicU64,
    /// Admissions since the last read of PostgreSQL's count.
    admitted_since: AtomicU64,
    /// Admissions of the period before it that had not reached that count yet (a job still
    /// waiting for its slot). Dropped at the next read: an admission whose job never claimed
    /// (deferred, suppressed) is forgotten after two periods instead of shrinking the budget.
    admitted_before: AtomicU64,
}

/// The tier budget of every portfolio of the network.
pub struct TierBudget {
    portfolios: HashMap<String, Budget>,
}

impl TierBudget {
    pub fn new(network: &NetworkConfig) -> Self {
        let mut portfolios = HashMap::new();
        for facility in &network.facilities {
            let portfolio = facility.portfolio().to_owned();
            let limit = network.messaging_limit(&portfolio).map(u64::from);
            portfolios.entry(portfolio).or_insert_with(|| Budget {
                limit,
                counted: AtomicU64::new(0),
                admitted_since: AtomicU64::new(0),
                admitted_before: AtomicU64::new(0),
            });
        }
        for (portfolio, budget) in &portfolios {
            if let Some(limit) = budget.limit {
                metrics::gauge!("careline_sender_tier_limit", "portfolio" => portfolio.clone()).set(limit as f64);
            }
        }
        Self { portfolios }
    }

    /// Whether one more new recipient fits in the portfolio's tier (and counts it if so).
    pub fn admit(&self, portfolio: &str) -> bool {
        let Some(budget) = self.portfolios.get(portfolio) else { return true };
        let Some(limit) = budget.limit else { return true };
        let counted = budget.counted.load(Ordering::Relaxed) + budget.admitted_before.load(Ordering::Relaxed);
        let admitted = budget.admitted_since.fetch_add(1, Ordering::Relaxed);
        if counted + admitted < limit {
            return true;
        }
        budget.admitted_since.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Takes the counts of the last 24 h from PostgreSQL.
    pub fn refresh(&self, usage: &[(String, i64)]) {
        for (portfolio, budget) in &self.portfolios {
            let count = usage.iter().find(|(p, _)| p == portfolio).map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
            // Admissions whose claim has reached PostgreSQL are in the new count; those still
            // waiting for a slot are not, and stay counted here.
            let previous = budget.counted.swap(count, Ordering::Relaxed);
            let arrived = count.saturating_sub(previous);
            let recent = budget.admitted_since.swap(0, Ordering::Relaxed);
            budget.admitted_before.store(recent.saturating_sub(arrived), Ordering::Relaxed);
            metrics::gauge!("careline_sender_tier_recipients", "portfolio" => portfolio.clone()).set(count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> NetworkConfig {
        NetworkConfig::from_toml(
            r#"
            [portfolios.small]
            messaging_limit = 2
            [templates.booking_confirmation]
            name = "appointment_booked"
            languages = { en = "en" }
            [templates.reminder]
            name = "appointment_reminder"
            languages = { en = "en" }
            [[facility]]
            id = "a"
            name = "A"
            time_zone = "UTC"
            phone_number_id = "1"
            portfolio = "small"
            [[facility]]
            id = "b"
            name = "B"
            time_zone = "UTC"
            phone_number_id = "2"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn new_recipients_past_the_limit_are_refused_until_the_window_frees_up() {
        let tier = TierBudget::new(&network());
        assert!(tier.admit("small"));
        assert!(tier.admit("small"));
        assert!(!tier.admit("small"));
        assert!(tier.admit("default"), "a portfolio without a limit is unlimited");
        // One of the two admissions has reached PostgreSQL; the other still counts.
        tier.refresh(&[("small".into(), 1)]);
        assert!(!tier.admit("small"));
        // The next read: the recipient in PostgreSQL has left the window, and the admission
        // that never reached PostgreSQL (its job was deferred) is forgotten after two reads.
        tier.refresh(&[("small".into(), 0)]);
        assert!(tier.admit("small"));
        assert!(tier.admit("small"));
        assert!(!tier.admit("small"));
    }
}
