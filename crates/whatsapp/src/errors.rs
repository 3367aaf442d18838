//! Meta's error codes as data: one table says what each code means for Careline.
//!
//! Meta asks integrators to branch on `error.code`, not on the HTTP status nor the message text
//! (titles are being deprecated, throttles arrive as 400 or 429 depending on the source). So the
//! decision lives in [`ERROR_TABLE`], a `const` slice that a reviewer can read against Meta's
//! error-code page row by row, and that the unit test walks exhaustively.
//!
//! The classes are decisions, not descriptions: a sender only needs to know whether to retry the
//! same request, slow the whole number down, wait for one recipient, stop the number, give up on
//! the message, or (for an unknown outcome) reconcile before doing anything.

use std::time::Duration;

/// What a sender should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient: retry the same request with exponential backoff (see
    /// [`ErrorCodeRule::max_retries`] for codes Meta says to retry only a few times).
    Retry,
    /// 130429: the business number's throughput is exhausted; lower the number's send rate
    /// and retry in seconds with jitter.
    SlowDownNumber,
    /// 131056: too many messages to this one recipient; delay this recipient only, by
    /// [`pair_limit_backoff`] (4^n seconds). Other recipients are unaffected.
    RetryRecipientLater,
    /// Every send from this number will fail until a human fixes something (token, billing,
    /// policy block, registration): stop the number's queue and alert once.
    PauseNumber,
    /// This message can never succeed as built (bad parameter, template mismatch, window
    /// closed…): fail it for good, do not retry.
    Permanent,
    /// 131026: the recipient cannot receive WhatsApp messages; mark the patient and fall back
    /// to another channel.
    NotOnWhatsapp,
    /// 131049: Meta chose not to deliver; wait at least 24 h before any resend.
    DoNotHotRetry,
    /// The request may or may not have been accepted (timeout, reset, 5xx, unparsable
    /// answer). Do not resend before a status webhook has been awaited for the
    /// `biz_opaque_callback_data`.
    OutcomeUnknown,
    /// A code missing from the table: treat as a failure of this message, log and alert,
    /// never hot-retry.
    Unknown,
}

impl ErrorClass {
    /// Whether resending the *same* request right after a backoff may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retry | Self::SlowDownNumber | Self::RetryRecipientLater)
    }

    /// A stable lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::SlowDownNumber => "slow_down_number",
            Self::RetryRecipientLater => "retry_recipient_later",
            Self::PauseNumber => "pause_number",
            Self::Permanent => "permanent",
            Self::NotOnWhatsapp => "not_on_whatsapp",
            Self::DoNotHotRetry => "do_not_hot_retry",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Unknown => "unknown",
        }
    }
}

/// One row of [`ERROR_TABLE`]: a code, or an inclusive range of codes, and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeRule {
    /// First code covered.
    pub first: i64,
    /// Last code covered (equal to `first` for a single code).
    pub last: i64,
    /// The decision.
    pub class: ErrorClass,
    /// For [`ErrorClass::Retry`] codes Meta says to retry only a little: the most retries.
    /// `None` means the sender's own policy decides.
    pub max_retries: Option<u32>,
    /// Meta's title, used by the sandbox to phrase `error.message` and by logs.
    pub title: &'static str,
}

impl ErrorCodeRule {
    const fn one(code: i64, class: ErrorClass, title: &'static str) -> Self {
        Self { first: code, last: code, class, max_retries: None, title }
    }

    const fn range(first: i64, last: i64, class: ErrorClass, title: &'static str) -> Self {
        Self { first, last, class, max_retries: None, title }
    }

    const fn limited(code: i64, max_retries: u32, title: &'static str) -> Self {
        Self { first: code, last: code, class: ErrorClass::Retry, max_retries: Some(max_retries), title }
    }

    /// Whether `code` falls in this row.
    pub fn covers(&self, code: i64) -> bool {
        (self.first..=self.last).contains(&code)
    }
}

use ErrorClass::*;

/// Meta's error codes and Careline's decision for each. Single codes come before the ranges
/// that contain them, and [`rule_for`] takes the first match, so a specific row (132015
/// template paused) can refine a range.
pub const ERROR_TABLE: &[ErrorCodeRule] = &[
    // Transient: same request, backoff.
    ErrorCodeRule::limited(1, 1, "API Unknown"),
    ErrorCodeRule::one(2, Retry, "API Service"),
    ErrorCodeRule::one(4, Retry, "Too many calls"),
    ErrorCodeRule::one(80007, Retry, "Rate limit issues"),
    // Not in Meta's WhatsApp list; seen in the wild as a WABA throttle, handled like 80007.
    ErrorCodeRule::one(80008, Retry, "Rate limit issues"),
    ErrorCodeRule::limited(131000, 3, "Something went wrong"),
    ErrorCodeRule::one(131016, Retry, "Service unavailable"),
    ErrorCodeRule::one(131057, Retry, "Account in maintenance mode"),
    ErrorCodeRule::one(133004, Retry, "Server temporarily unavailable"),
    ErrorCodeRule::one(134101, Retry, "Template is syncing"),
    // Throttles with their own scope.
    ErrorCodeRule::one(130429, SlowDownNumber, "Rate limit hit"),
    ErrorCodeRule::one(131056, RetryRecipientLater, "Pair rate limit hit"),
    // The number cannot send until someone fixes something.
    ErrorCodeRule::one(0, PauseNumber, "AuthException"),
    ErrorCodeRule::one(3, PauseNumber, "API Method"),
    ErrorCodeRule::one(10, PauseNumber, "Permission Denied"),
    ErrorCodeRule::one(33, PauseNumber, "Business phone number deleted"),
    ErrorCodeRule::one(190, PauseNumber, "Access token has expired"),
    ErrorCodeRule::range(200, 299, PauseNumber, "API Permission"),
    ErrorCodeRule::one(368, PauseNumber, "Temporarily blocked for policies violations"),
    ErrorCodeRule::one(131031, PauseNumber, "Account has been locked"),
    ErrorCodeRule::one(131037, PauseNumber, "Display name approval required"),
    ErrorCodeRule::one(131042, PauseNumber, "Business eligibility payment issue"),
    ErrorCodeRule::one(131048, PauseNumber, "Spam rate limit hit"),
    ErrorCodeRule::one(133010, PauseNumber, "Phone number not registered"),
    // Recipient-specific outcomes.
    ErrorCodeRule::one(131026, NotOnWhatsapp, "Message undeliverable"),
    ErrorCodeRule::one(131049, DoNotHotRetry, "Meta chose not to deliver"),
    // This message is wrong and always will be.
    ErrorCodeRule::one(100, Permanent, "Invalid parameter"),
    ErrorCodeRule::one(470, Permanent, "Re-engagement message"),
    ErrorCodeRule::one(130472, Permanent, "User's number is part of an experiment"),
    ErrorCodeRule::one(131008, Permanent, "Required parameter is missing"),
    ErrorCodeRule::one(131009, Permanent, "Parameter value is not valid"),
    ErrorCodeRule::one(131021, Permanent, "Recipient cannot be sender"),
    ErrorCodeRule::one(131047, Permanent, "Re-engagement message"),
    ErrorCodeRule::one(131050, Permanent, "User stopped marketing messages"),
    ErrorCodeRule::one(131051, Permanent, "Unsupported message type"),
    ErrorCodeRule::one(131052, Permanent, "Media download error"),
    ErrorCodeRule::one(131053, Permanent, "Media upload error"),
    ErrorCodeRule::one(131064, Permanent, "Template category enforcement"),
    ErrorCodeRule::one(132000, Permanent, "Number of parameters does not match the expected number of params"),
    ErrorCodeRule::one(132001, Permanent, "Template name does not exist in the translation"),
    ErrorCodeRule::one(132005, Permanent, "Template hydrated text too long"),
    ErrorCodeRule::one(132007, Permanent, "Template format character policy violated"),
    ErrorCodeRule::one(132012, Permanent, "Template parameter format mismatch"),
    ErrorCodeRule::one(132015, Permanent, "Template is paused"),
    ErrorCodeRule::one(132016, Permanent, "Template is disabled"),
    ErrorCodeRule::range(132000, 132016, Permanent, "Template error"),
    ErrorCodeRule::one(132018, Permanent, "Template parameter error"),
    ErrorCodeRule::one(135000, Permanent, "Generic user error"),
];

/// The row that decides `code`, if the table knows it.
pub fn rule_for(code: i64) -> Option<&'static ErrorCodeRule> {
    ERROR_TABLE.iter().find(|rule| rule.covers(code))
}

/// What to do about Meta error `code`; [`ErrorClass::Unknown`] when the table has no row.
pub fn classify(code: i64) -> ErrorClass {
    rule_for(code).map_or(ErrorClass::Unknown, |rule| rule.class)
}

/// Meta's title for `code`, or `"Unknown error"`.
pub fn title(code: i64) -> &'static str {
    rule_for(code).map_or("Unknown error", |rule| rule.title)
}

/// Upper bound of [`pair_limit_backoff`]: beyond ~4 minutes the reminder is better
/// re-planned than kept waiting.
pub const PAIR_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(256);

/// Delay before the next try to a recipient after the `failures`-th consecutive 131056
/// (`failures` = 0 for the first): 4^failures seconds as Meta suggests (1, 4, 16, 64, 256 s),
/// capped at [`PAIR_LIMIT_BACKOFF_MAX`].
pub fn pair_limit_backoff(failures: u32) -> Duration {
    let secs = 4u64.checked_pow(failures).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(PAIR_LIMIT_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the table, as a reviewer reads it off Meta's page.
    const EXPECTED: &[(i64, ErrorClass, Option<u32>)] = &[
        (1, Retry, Some(1)),
        (2, Retry, None),
        (4, Retry, None),
        (80007, Retry, None),
        (80008, Retry, None),
        (131000, Retry, Some(3)),
        (131016, Retry, None),
        (131057, Retry, None),
        (133004, Retry, None),
        (134101, Retry, None),
        (130429, SlowDownNumber, None),
        (131056, RetryRecipientLater, None),
        (0, PauseNumber, None),
        (3, PauseNumber, None),
        (10, PauseNumber, None),
        (33, PauseNumber, None),
        (190, PauseNumber, None),
        (200, PauseNumber, None),
        (299, PauseNumber, None),
        (368, PauseNumber, None),
        (131031, PauseNumber, None),
        (131037, PauseNumber, None),
        (131042, PauseNumber, None),
        (131048, PauseNumber, None),
        (133010, PauseNumber, None),
        (131026, NotOnWhatsapp, None),
        (131049, DoNotHotRetry, None),
        (100, Permanent, None),
        (470, Permanent, None),
        (130472, Permanent, None),
        (131008, Permanent, None),
        (131009, Permanent, None),
        (131021, Permanent, None),
        (131047, Permanent, None),
        (131050, Permanent, None),
        (131051, Permanent, None),
        (131052, Permanent, None),
        (131053, Permanent, None),
        (131064, Permanent, None),
        (132000, Permanent, None),
        (132001, Permanent, None),
        (132005, Permanent, None),
        (132007, Permanent, None),
        (132012, Permanent, None),
        (132015, Permanent, None),
        (132016, Permanent, None),
        (132018, Permanent, None),
        (135000, Permanent, None),
    ];

    #[test]
    fn every_listed_code_has_its_expected_class() {
        for &(code, class, max_retries) in EXPECTED {
            assert_eq!(classify(code), class, "code {code}");
            let rule = rule_for(code).expect("listed code has a row");
            assert_eq!(rule.max_retries, max_retries, "code {code}");
        }
    }

    #[test]
    fn every_row_of_the_table_is_covered_by_the_expectations() {
        for rule in ERROR_TABLE {
            assert!(rule.first <= rule.last, "{rule:?}");
            assert!(!rule.title.is_empty(), "{rule:?}");
            for code in [rule.first, rule.last] {
                assert!(EXPECTED.iter().any(|&(c, _, _)| c == code), "row {rule:?} has no expectation for {code}");
                assert_eq!(classify(code), rule_for(code).unwrap().class);
            }
        }
    }

    #[test]
    fn the_whole_template_range_is_permanent() {
        for code in 132000..=132016 {
            assert_eq!(classify(code), Permanent, "code {code}");
        }
        assert_eq!(title(132015), "Template is paused");
        assert_eq!(title(132003), "Template error");
    }

    #[test]
    fn codes_missing_from_the_table_are_unknown() {
        for code in [-1, 5, 999, 131001, 132017, 139200, i64::MAX, i64::MIN] {
            assert_eq!(classify(code), Unknown, "code {code}");
        }
        assert_eq!(title(5), "Unknown error");
    }

    #[test]
    fn only_throttles_and_transient_codes_are_retryable() {
        assert!(Retry.is_retryable());
        assert!(SlowDownNumber.is_retryable());
        assert!(RetryRecipientLater.is_retryable());
        for class in [PauseNumber, Permanent, NotOnWhatsapp, DoNotHotRetry, OutcomeUnknown, Unknown] {
            assert!(!class.is_retryable(), "{class:?}");
        }
    }

    #[test]
    fn pair_limit_backoff_is_four_to_the_n_seconds_capped() {
        let secs: Vec<u64> = (0..7).map(|n| pair_limit_backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 4, 16, 64, 256, 256, 256]);
        assert_eq!(pair_limit_backoff(u32::MAX), PAIR_LIMIT_BACKOFF_MAX);
    }
}
