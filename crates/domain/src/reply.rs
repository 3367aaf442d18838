//! What a patient's WhatsApp reply means.
//!
//! Quick-reply buttons carry a payload Careline set when it sent the template:
//! `ACTION:<job id>` (for example `CONFIRM:0190…`). Typed keywords (STOP, START, HELP) are
//! matched in the patient's language by [`crate::keywords`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keywords::Keywords;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyAction {
    Confirm,
    Reschedule,
    Cancel,
    Stop,
    Start,
    Help,
    /// Anything else: free text, media, an unknown button.
    Other,
}

impl ReplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Reschedule => "reschedule",
            Self::Cancel => "cancel",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Help => "help",
            Self::Other => "other",
        }
    }

    /// The payload prefix used on quick-reply buttons.
    pub fn payload_prefix(self) -> &'static str {
        match self {
            Self::Confirm => "CONFIRM",
            Self::Reschedule => "RESCHEDULE",
            Self::Cancel => "CANCEL",
            Self::Stop => "STOP",
            Self::Start => "START",
            Self::Help => "HELP",
            Self::Other => "OTHER",
        }
    }
}

/// The payload for a quick-reply button: `ACTION:<job id>`. Carries no PHI.
pub fn button_payload(action: ReplyAction, job_id: Uuid) -> String {
    format!("{}:{}", action.payload_prefix(), job_id)
}

/// Reads a quick-reply payload back; unknown or malformed payloads give `(Other, None)`.
pub fn parse_button_payload(payload: &str) -> (ReplyAction, Option<Uuid>) {
    let (prefix, rest) = payload.split_once(':').unwrap_or((payload, ""));
    let action = match prefix.trim().to_ascii_uppercase().as_str() {
        "CONFIRM" => ReplyAction::Confirm,
        "RESCHEDULE" => ReplyAction::Reschedule,
        "CANCEL" => ReplyAction::Cancel,
        "STOP" => ReplyAction::Stop,
        "START" => ReplyAction::Start,
        "HELP" => ReplyAction::Help,
        _ => return (ReplyAction::Other, None),
    };
    (action, Uuid::parse_str(rest.trim()).ok())
}

/// Classifies typed text as a keyword of the built-in lists (see [`crate::keywords`]), or
/// [`ReplyAction::Other`].
pub fn classify_text(text: &str) -> ReplyAction {
    static BUILT_IN: std::sync::LazyLock<Keywords> = std::sync::LazyLock::new(Keywords::built_in);
    BUILT_IN.action(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_payloads_round_trip() {
        let id = Uuid::now_v7();
        for action in [ReplyAction::Confirm, ReplyAction::Reschedule, ReplyAction::Cancel, ReplyAction::Stop] {
            assert_eq!(parse_button_payload(&button_payload(action, id)), (action, Some(id)));
        }
        assert_eq!(parse_button_payload("CONFIRM:not-a-uuid"), (ReplyAction::Confirm, None));
        assert_eq!(parse_button_payload("WHATEVER"), (ReplyAction::Other, None));
        assert_eq!(parse_button_payload(""), (ReplyAction::Other, None));
    }

    #[test]
    fn keywords_match_regardless_of_case_and_punctuation() {
        assert_eq!(classify_text("STOP"), ReplyAction::Stop);
        assert_eq!(classify_text("  stop! "), ReplyAction::Stop);
        assert_eq!(classify_text("Stop   reminders"), ReplyAction::Stop);
        assert_eq!(classify_text("Start"), ReplyAction::Start);
        assert_eq!(classify_text("help?"), ReplyAction::Help);
        assert_eq!(classify_text("Hilfe"), ReplyAction::Help);
        assert_eq!(classify_text("please don't stop"), ReplyAction::Other);
        assert_eq!(classify_text(""), ReplyAction::Other);
    }
}
