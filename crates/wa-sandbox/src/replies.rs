//! Simulated patients: replies to messages, typed keywords, and an automatic reply policy
//! for demos.
//!
//! A tap on a template quick-reply button arrives as an inbound `button` message whose
//! `context.id` is the tapped message's wamid and whose `button.payload` is the payload the
//! send put on that button index (or the button's label when it set none, as WhatsApp does).
//! A tap on an interactive reply button arrives as `interactive.button_reply` with the id.
//! Typed text (STOP, START, free text) arrives as `text` without context.
//!
//! The automatic policy decides per *recipient*, from a hash of the seed and the number, so
//! the same patient behaves the same way in every run, whatever the order of sends.

use serde::{Deserialize, Serialize};

/// What an automatic reply does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoReplyAction {
    /// Tap the first button whose payload (or label) starts with this, case-insensitively.
    ButtonPrefix(String),
    /// Tap the button at this index.
    ButtonIndex(usize),
    /// Type this text.
    Text(String),
}

/// Shares of recipients and what they do after reading (`SANDBOX_AUTO_REPLY`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoReplyPolicy {
    rules: Vec<(AutoReplyAction, f64)>,
}

impl AutoReplyPolicy {
    /// Parses `confirm:0.5,reschedule:0.1,stop:0.05`. Actions: `confirm`, `reschedule`,
    /// `cancel` (button by payload prefix), `buttonN` (button by index), `stop`, `start`,
    /// `help` (typed keyword). Shares must add up to at most 1.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut total = 0.0;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, share) = item.split_once(':').ok_or_else(|| format!("{item:?} is not action:share"))?;
            let share: f64 = share.trim().parse().map_err(|e| format!("share of {name:?}: {e}"))?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("share of {name:?} is not in 0..=1"));
            }
            let name = name.trim().to_ascii_lowercase();
            let action = match name.as_str() {
                "confirm" | "reschedule" | "cancel" => AutoReplyAction::ButtonPrefix(name.to_ascii_uppercase()),
                "stop" | "start" | "help" => AutoReplyAction::Text(name.to_ascii_uppercase()),
                other => match other.strip_prefix("button").map(str::parse::<usize>) {
                    Some(Ok(index)) => AutoReplyAction::ButtonIndex(index),
                    _ => return Err(format!("unknown auto-reply action {other:?}")),
                },
            };
            total += share;
            rules.push((action, share));
        }
        if total > 1.0 + 1e-9 {
            return Err(format!("shares add up to {total}, more than 1"));
        }
        Ok(Self { rules })
    }

    /// The rules in order.
    pub fn rules(&self) -> &[(AutoReplyAction, f64)] {
        &self.rules
    }

    /// Whether any recipient ever replies.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of a recipient whose draw is `u` in `0..1`: the rules split `0..1` in
    /// consecutive shares; a draw past them all means no reply.
    pub fn choose(&self, u: f64) -> Option<&AutoReplyAction> {
        let mut upper = 0.0;
        for (action, share) in &self.rules {
            upper += share;
            if u < upper {
                return Some(action);
            }
        }
        None
    }
}

/// A recipient's fixed draw in `0..1` for the auto-reply policy.
pub fn recipient_draw(seed: u64, recipient: &str) -> f64 {
    // FNV-1a over the seed and the number, then a splitmix64 finaliser for good mixing.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(recipient.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A patient's reply (`POST /_sandbox/replies`).
///
/// Exactly one of `button_index` and `text`. A button tap needs `wamid` (the message tapped);
/// text needs `wamid` (the sender is its recipient) or `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    /// The message replied to.
    #[serde(default)]
    pub wamid: Option<String>,
    /// Tap this button of that message.
    #[serde(default)]
    pub button_index: Option<usize>,
    /// Type this text.
    #[serde(default)]
    pub text: Option<String>,
    /// Who types, when there is no `wamid`.
    #[serde(default)]
    pub from: Option<String>,
    /// Which business number receives it, when there is no `wamid`; defaults to the number
    /// that last messaged `from`, else the first registered one.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// Deliver after this many milliseconds (default: at once).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// What a reply became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyReceipt {
    /// The inbound message's wamid (Careline's dedupe key).
    pub inbound_wamid: String,
    /// The business number that receives it.
    pub phone_number_id: String,
    /// The payload of a button tap (or the id of an interactive one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// Why a reply cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// `SANDBOX_WEBHOOK_URL` is not set: nowhere to deliver.
    #[error("no webhook URL is configured, so replies cannot be delivered")]
    WebhooksDisabled,
    /// Not exactly one of `button_index` and `text`.
    #[error("give exactly one of button_index and text")]
    NeitherOrBoth,
    /// A button tap without the message tapped.
    #[error("a button tap needs the wamid of the message")]
    ButtonWithoutMessage,
    /// Text without `wamid` nor `from`.
    #[error("a text reply needs a wamid or a from")]
    MissingSender,
    /// `from` is not a phone number.
    #[error("from is not a phone number")]
    InvalidSender,
    /// Empty text.
    #[error("text is empty")]
    EmptyText,
    /// No accepted message has this wamid (or it was dropped from memory).
    #[error("no accepted message {0}")]
    UnknownMessage(String),
    /// The message has no button at this index.
    #[error("message has {buttons} button(s), no index {index}")]
    NoSuchButton {
        /// Asked.
        index: usize,
        /// Available.
        buttons: usize,
    },
    /// The message failed: the patient never saw it.
    #[error("message {0} failed, the patient never saw it")]
    MessageFailed(String),
    /// The business number is not registered.
    #[error("phone number id {0} is not registered")]
    UnknownPhoneNumber(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_and_splits_the_unit_interval() {
        let policy = AutoReplyPolicy::parse("confirm:0.5, reschedule:0.1,stop:0.05,button2:0.1").unwrap();
        assert_eq!(policy.choose(0.2), Some(&AutoReplyAction::ButtonPrefix("CONFIRM".into())));
        assert_eq!(policy.choose(0.55), Some(&AutoReplyAction::ButtonPrefix("RESCHEDULE".into())));
        assert_eq!(policy.choose(0.62), Some(&AutoReplyAction::Text("STOP".into())));
        assert_eq!(policy.choose(0.7), Some(&AutoReplyAction::ButtonIndex(2)));
        assert_eq!(policy.choose(0.9), None);
        assert!(AutoReplyPolicy::parse("").unwrap().is_empty());
        for bad in ["confirm", "confirm:x", "confirm:2", "dance:0.1", "confirm:0.6,cancel:0.6", "buttonx:0.1"] {
            assert!(AutoReplyPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recipient_draws_are_stable_uniform_and_seeded() {
        assert_eq!(recipient_draw(1, "919812345678"), recipient_draw(1, "919812345678"));
        assert_ne!(recipient_draw(1, "919812345678"), recipient_draw(2, "919812345678"));
        let draws: Vec<f64> = (0..10_000).map(|i| recipient_draw(42, &format!("9198{i:08}"))).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below_half = draws.iter().filter(|&&d| d < 0.5).count();
        assert!((4_700..5_300).contains(&below_half), "{below_half}");
    }
}
