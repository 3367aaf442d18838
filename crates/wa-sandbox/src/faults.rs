//! Fault injection: the failures Careline must survive, on demand.
//!
//! - 500 *before* acceptance: the message does not exist; a retry is safe.
//! - 500 *after* acceptance: the message was accepted and its webhooks flow, but the client
//!   sees a server error — the "outcome unknown" case that must be reconciled through
//!   `biz_opaque_callback_data`, never blindly resent.
//! - Slow answers: the decision (acceptance included) is made first and only the answer is
//!   delayed, so a client timeout hides an acceptance exactly like a lost answer from Meta.
//! - Forced error codes for the next N sends or for one recipient, answered synchronously or
//!   (`async`) accepted and then failed in a `failed` status webhook.
//! - Periodic bursts: every `burst_every_ms`, every send is refused for `burst_ms` with one
//!   code of `burst_codes`, taken in turn (e.g. 130429 then 131056), as when Meta pushes back
//!   for a moment. Being timed, a burst weighs the same share of a fast or a slow sender.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Probabilistic faults (`SANDBOX_FAULT_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Share of sends answered 500 without being accepted.
    #[serde(default)]
    pub http_500_before_accept: f64,
    /// Share of sends accepted and then answered 500.
    #[serde(default)]
    pub http_500_after_accept: f64,
    /// Share of answers delayed by `slow_ms`.
    #[serde(default)]
    pub slow_probability: f64,
    /// Delay of slow answers, in milliseconds.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
    /// Only sends that were accepted (a wamid exists) are answered slowly: the client's
    /// timeout then always hides an acceptance.
    #[serde(default)]
    pub slow_accepted_only: bool,
    /// Codes of the periodic bursts, used in turn; empty: no bursts.
    #[serde(default)]
    pub burst_codes: Vec<i64>,
    /// A burst starts every this many milliseconds (the first one after one period); 0: none.
    #[serde(default)]
    pub burst_every_ms: u64,
    /// How long each burst lasts, in milliseconds.
    #[serde(default = "default_burst_ms")]
    pub burst_ms: u64,
}

fn default_slow_ms() -> u64 {
    15_000
}

fn default_burst_ms() -> u64 {
    500
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            http_500_before_accept: 0.0,
            http_500_after_accept: 0.0,
            slow_probability: 0.0,
            slow_ms: default_slow_ms(),
            slow_accepted_only: false,
            burst_codes: Vec::new(),
            burst_every_ms: 0,
            burst_ms: default_burst_ms(),
        }
    }
}

impl FaultSettings {
    /// The code of the burst in force `elapsed` after the start (or the last reset), if one
    /// is. Burst n starts n periods after the start and uses code n - 1 (in turn).
    pub fn burst_at(&self, elapsed: std::time::Duration) -> Option<i64> {
        if self.burst_every_ms == 0 || self.burst_codes.is_empty() || self.burst_ms == 0 {
            return None;
        }
        let ms = elapsed.as_millis();
        let every = u128::from(self.burst_every_ms);
        let period = ms / every;
        if period == 0 || ms % every >= u128::from(self.burst_ms) {
            return None;
        }
        let index = usize::try_from((period - 1) % self.burst_codes.len() as u128).unwrap_or(0);
        Some(self.burst_codes[index])
    }
}

/// An error code to answer instead of processing normally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForcedError {
    /// Meta error code (e.g. 131000, 131026, 130429, 190).
    pub code: i64,
    /// HTTP status of a synchronous answer; defaults to Meta's for the code (401 for 190,
    /// 400 for most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How many sends it applies to; `None` for every send until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `true`: accept the send, then report the code in a `failed` status webhook.
    #[serde(default, rename = "async")]
    pub asynchronous: bool,
    /// `error_data.details`; defaults to a generic sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// A [`ForcedError`] for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientFault {
    /// The recipient, as sent in `to` (normalised to digits).
    pub to: String,
    /// The error.
    #[serde(flatten)]
    pub error: ForcedError,
}

/// A change to the faults (`POST /_sandbox/faults`); absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    /// Turn every fault off first.
    #[serde(default)]
    pub clear: bool,
    /// See [`FaultSettings::http_500_before_accept`].
    #[serde(default)]
    pub http_500_before_accept: Option<f64>,
    /// See [`FaultSettings::http_500_after_accept`].
    #[serde(default)]
    pub http_500_after_accept: Option<f64>,
    /// See [`FaultSettings::slow_probability`].
    #[serde(default)]
    pub slow_probability: Option<f64>,
    /// See [`FaultSettings::slow_ms`].
    #[serde(default)]
    pub slow_ms: Option<u64>,
    /// See [`FaultSettings::slow_accepted_only`].
    #[serde(default)]
    pub slow_accepted_only: Option<bool>,
    /// See [`FaultSettings::burst_codes`].
    #[serde(default)]
    pub burst_codes: Option<Vec<i64>>,
    /// See [`FaultSettings::burst_every_ms`].
    #[serde(default)]
    pub burst_every_ms: Option<u64>,
    /// See [`FaultSettings::burst_ms`].
    #[serde(default)]
    pub burst_ms: Option<u64>,
    /// Error for the next sends, whoever they are to.
    #[serde(default)]
    pub force_next: Option<ForcedError>,
    /// Error for sends to one recipient.
    #[serde(default)]
    pub force_recipient: Option<RecipientFault>,
}

/// The faults in force (`GET /_sandbox/faults`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultState {
    /// Probabilistic faults.
    pub settings: FaultSettings,
    /// Error for the next sends.
    pub next: Option<ForcedError>,
    /// Errors by recipient digits.
    pub recipients: BTreeMap<String, ForcedError>,
}

impl FaultState {
    /// Faults from settings, no forced errors.
    pub fn new(settings: FaultSettings) -> Self {
        Self { settings, next: None, recipients: BTreeMap::new() }
    }

    /// Applies an update, refusing probabilities outside 0..=1 and impossible statuses.
    pub fn apply(&mut self, update: FaultUpdate) -> Result<(), String> {
        for p in
            [update.http_500_before_accept, update.http_500_after_accept, update.slow_probability].into_iter().flatten()
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{p} is not a probability in 0..=1"));
            }
        }
        let forced = update.force_next.iter().chain(update.force_recipient.as_ref().map(|r| &r.error));
        for error in forced {
            if error.http_status.is_some_and(|s| !(400..=599).contains(&s)) {
                return Err("http_status must be a 4xx or 5xx status".to_owned());
            }
        }
        let recipient = match update.force_recipient {
            Some(fault) => Some((
                crate::validate::normalise_phone(&fault.to)
                    .ok_or_else(|| format!("{:?} is not a phone number", fault.to))?,
                fault.error,
            )),
            None => None,
        };
        if update.clear {
            *self = Self::new(FaultSettings { slow_ms: self.settings.slow_ms, ..FaultSettings::default() });
        }
        let s = &mut self.settings;
        s.http_500_before_accept = update.http_500_before_accept.unwrap_or(s.http_500_before_accept);
        s.http_500_after_accept = update.http_500_after_accept.unwrap_or(s.http_500_after_accept);
        s.slow_probability = update.slow_probability.unwrap_or(s.slow_probability);
        s.slow_ms = update.slow_ms.unwrap_or(s.slow_ms);
        s.slow_accepted_only = update.slow_accepted_only.unwrap_or(s.slow_accepted_only);
        if let Some(codes) = update.burst_codes {
            s.burst_codes = codes;
        }
        s.burst_every_ms = update.burst_every_ms.unwrap_or(s.burst_every_ms);
        s.burst_ms = update.burst_ms.unwrap_or(s.burst_ms);
        if let Some(next) = update.force_next {
            self.next = Some(next);
        }
        if let Some((to, error)) = recipient {
            self.recipients.insert(to, error);
        }
        Ok(())
    }

    /// The forced error for a send to `wa_id`, if any, consuming one use of it. A
    /// recipient's own fault wins over `next`.
    pub fn take(&mut self, wa_id: &str) -> Option<ForcedError> {
        if let Some(error) = self.recipients.get_mut(wa_id) {
            let taken = use_once(error);
            if error.count == Some(0) {
                self.recipients.remove(wa_id);
            }
            return Some(taken);
        }
        let error = self.next.as_mut()?;
        let taken = use_once(error);
        if error.count == Some(0) {
            self.next = None;
        }
        Some(taken)
    }
}

fn use_once(error: &mut ForcedError) -> ForcedError {
    if let Some(count) = error.count.as_mut() {
        *count = count.saturating_sub(1);
    }
    error.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forced(code: i64, count: Option<u32>) -> ForcedError {
        ForcedError { code, http_status: None, count, asynchronous: false, details: None }
    }

    #[test]
    fn forced_errors_are_used_up_and_recipients_win() {
        let mut state = FaultState::default();
        state
            .apply(FaultUpdate {
                force_next: Some(forced(131000, Some(2))),
                force_recipient: Some(RecipientFault { to: "+91 98123 45678".into(), error: forced(131026, Some(1)) }),
                ..FaultUpdate::default()
            })
            .unwrap();
        assert_eq!(state.take("919812345678").unwrap().code, 131026);
        assert_eq!(state.take("919812345678").unwrap().code, 131000);
        assert_eq!(state.take("15550001111").unwrap().code, 131000);
        assert!(state.take("15550001111").is_none());
        state.apply(FaultUpdate { force_next: Some(forced(2, None)), ..FaultUpdate::default() }).unwrap();
        assert!((0..10).all(|_| state.take("1").is_some()), "None = until cleared");
        state.apply(FaultUpdate { clear: true, ..FaultUpdate::default() }).unwrap();
        assert!(state.take("1").is_none());
    }

    #[test]
    fn invalid_updates_change_nothing() {
        let mut state = FaultState::default();
        let bad = [
            FaultUpdate { slow_probability: Some(2.0), ..FaultUpdate::default() },
            FaultUpdate {
                force_next: Some(ForcedError { http_status: Some(200), ..forced(1, None) }),
                ..FaultUpdate::default()
            },
            FaultUpdate {
                force_recipient: Some(RecipientFault { to: "nobody".into(), error: forced(1, None) }),
                ..FaultUpdate::default()
            },
        ];
        for update in bad {
            assert!(state.apply(update).is_err());
        }
        assert_eq!(state, FaultState::default());
    }

    #[test]
    fn bursts_last_burst_ms_and_take_their_codes_in_turn() {
        let ms = std::time::Duration::from_millis;
        let mut settings = FaultSettings {
            burst_codes: vec![130429, 131056],
            burst_every_ms: 1000,
            burst_ms: 200,
            ..FaultSettings::default()
        };
        assert_eq!(settings.burst_at(ms(100)), None, "nothing during the first period");
        assert_eq!(settings.burst_at(ms(1000)), Some(130429));
        assert_eq!(settings.burst_at(ms(1199)), Some(130429));
        assert_eq!(settings.burst_at(ms(1200)), None, "a burst lasts burst_ms");
        assert_eq!(settings.burst_at(ms(2100)), Some(131056));
        assert_eq!(settings.burst_at(ms(3000)), Some(130429));
        settings.burst_every_ms = 0;
        assert_eq!(settings.burst_at(ms(3000)), None, "0 turns bursts off");
    }

    #[test]
    fn the_admin_json_shape_parses() {
        let update: FaultUpdate = serde_json::from_str(
            r#"{"http_500_after_accept":0.5,"force_recipient":{"to":"919812345678","code":131026,"async":true}}"#,
        )
        .unwrap();
        assert!(update.force_recipient.unwrap().error.asynchronous);
        assert!(serde_json::from_str::<FaultUpdate>(r#"{"typo":1}"#).is_err());
    }
}
