//! Typed configuration of the sandbox, read from environment variables (12-factor).
//!
//! Every knob has a default that behaves like Meta's production API for a healthy number and
//! a patient who reads messages, so `wa-sandbox` with no configuration is already realistic;
//! the fault and chaos knobs (duplicates, reordering, 500s, slow answers) default to off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultSettings;
use crate::registry::{PhoneNumberSpec, TemplateSpec};
use crate::replies::AutoReplyPolicy;

/// A setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct SettingsError {
    /// The environment variable.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Everything the sandbox can be told. [`SandboxSettings::from_env`] reads these variables
/// (unset or empty means the default):
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `SANDBOX_LISTEN_ADDR` | `0.0.0.0:8089` | HTTP listener (Graph API, `/_sandbox/*`, `/healthz`) |
/// | `WHATSAPP_ACCESS_TOKEN` | `sandbox-token` | the Bearer token requests must carry (else 401, code 190) |
/// | `SANDBOX_APP_SECRET` | `sandbox-app-secret` | HMAC key of `X-Hub-Signature-256`; must equal Careline's `WHATSAPP_APP_SECRET` |
/// | `SANDBOX_WEBHOOK_URL` | unset (no webhooks) | where status and inbound-message webhooks are POSTed |
/// | `SANDBOX_WABA_ID` | `102290129340398` | `entry[].id` of webhooks |
/// | `SANDBOX_TEMPLATES` | unset (built-in templates) | TOML or JSON file (`.json` extension) with `[[templates]]` and `[[phone_numbers]]` |
/// | `SANDBOX_PHONE_NUMBERS` | `106540352242922:15550783881` | registered numbers, comma-separated `ID[:DISPLAY[:MPS]]` (added to the file's) |
/// | `SANDBOX_AUTO_REGISTER_NUMBERS` | `false` | accept any numeric phone_number_id instead of answering 400/100 |
/// | `SANDBOX_DEFAULT_MPS` | `80` | throughput ceiling (messages per sliding second) of numbers that set none; `0` = unlimited |
/// | `SANDBOX_PAIR_INTERVAL_MS` | `6000` | per (number, recipient): one message per interval; `0` disables the pair limit |
/// | `SANDBOX_PAIR_BURST` | `1` | per (number, recipient): messages allowed back to back before the interval applies |
/// | `SANDBOX_SENT_AFTER_MS` | `100` | delay from acceptance to the `sent` status |
/// | `SANDBOX_DELIVERED_AFTER_MS` | `800` | delay from acceptance to `delivered` |
/// | `SANDBOX_READ_AFTER_MS` | `3000` | delay from acceptance to `read` |
/// | `SANDBOX_DELIVERED_PROBABILITY` | `1.0` | share of messages that reach the phone (the rest stay `sent`, like a phone that is off) |
/// | `SANDBOX_READ_PROBABILITY` | `0.6` | share of delivered messages that are read |
/// | `SANDBOX_FAILED_PROBABILITY` | `0.0` | share of accepted messages that fail asynchronously with 131026 |
/// | `SANDBOX_DUPLICATE_PROBABILITY` | `0.0` | share of webhook events delivered twice |
/// | `SANDBOX_REORDER_PROBABILITY` | `0.0` | share of messages whose statuses are POSTed in shuffled order |
/// | `SANDBOX_WEBHOOK_BATCH_MAX` | `1` | most events (statuses/messages) in one POST |
/// | `SANDBOX_WEBHOOK_BATCH_WINDOW_MS` | `0` | events due within this window are POSTed together |
/// | `SANDBOX_WEBHOOK_MAX_ATTEMPTS` | `6` | POST attempts per batch before giving up (Meta retries for days) |
/// | `SANDBOX_WEBHOOK_RETRY_BASE_MS` | `500` | first retry delay; doubles each attempt |
/// | `SANDBOX_WEBHOOK_RETRY_MAX_MS` | `30000` | retry delay ceiling |
/// | `SANDBOX_WEBHOOK_TIMEOUT_MS` | `5000` | per-POST timeout |
/// | `SANDBOX_WEBHOOK_CONCURRENCY` | `16` | webhook POSTs in flight at once |
/// | `SANDBOX_AUTO_REPLY` | unset (none) | e.g. `confirm:0.5,reschedule:0.1,stop:0.05`; actions `confirm`, `reschedule`, `cancel` (button whose payload starts so), `buttonN` (index N), `stop`, `start`, `help` (typed text) |
/// | `SANDBOX_AUTO_REPLY_AFTER_MS` | `1500` | delay from `read` to the automatic reply |
/// | `SANDBOX_SEED` | `42` | seed of every random choice (same seed, same sends in the same order → same behaviour) |
/// | `SANDBOX_FAULT_500_BEFORE_ACCEPT` | `0.0` | share of sends answered 500 without being accepted |
/// | `SANDBOX_FAULT_500_AFTER_ACCEPT` | `0.0` | share of sends accepted (webhooks flow) yet answered 500: an unknown outcome |
/// | `SANDBOX_FAULT_SLOW_PROBABILITY` | `0.0` | share of answers delayed by `SANDBOX_FAULT_SLOW_MS` (after the decision, so a client timeout hides an acceptance) |
/// | `SANDBOX_FAULT_SLOW_MS` | `15000` | that delay |
/// | `SANDBOX_FAULT_SLOW_ACCEPTED_ONLY` | `false` | delay only answers to sends that were accepted |
/// | `SANDBOX_FAULT_BURST_CODES` | unset (no bursts) | comma-separated Meta codes of periodic bursts, used in turn, e.g. `130429,131056` |
/// | `SANDBOX_FAULT_BURST_EVERY_MS` | `0` (off) | a burst starts every this many milliseconds |
/// | `SANDBOX_FAULT_BURST_MS` | `500` | how long each burst refuses every send |
/// | `SANDBOX_MAX_STORED_MESSAGES` | `100000` | accepted messages kept for `/_sandbox/messages` and replies (oldest dropped) |
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// `SANDBOX_LISTEN_ADDR`; port 0 in tests.
    pub listen_addr: SocketAddr,
    /// `WHATSAPP_ACCESS_TOKEN`.
    pub access_token: String,
    /// `SANDBOX_APP_SECRET`.
    pub app_secret: String,
    /// `SANDBOX_WEBHOOK_URL`; `None` keeps all webhooks to itself.
    pub webhook_url: Option<String>,
    /// `SANDBOX_WABA_ID`.
    pub waba_id: String,
    /// `SANDBOX_TEMPLATES`.
    pub templates_file: Option<PathBuf>,
    /// Templates registered at start (before the file's). Defaults to [`default_templates`]
    /// when no file is given.
    pub templates: Vec<TemplateSpec>,
    /// `SANDBOX_PHONE_NUMBERS`.
    pub phone_numbers: Vec<PhoneNumberSpec>,
    /// `SANDBOX_AUTO_REGISTER_NUMBERS`.
    pub auto_register_numbers: bool,
    /// `SANDBOX_DEFAULT_MPS`.
    pub default_mps: u32,
    /// `SANDBOX_PAIR_INTERVAL_MS`.
    pub pair_interval: Duration,
    /// `SANDBOX_PAIR_BURST`.
    pub pair_burst: u32,
    /// How statuses unfold.
    pub statuses: StatusSettings,
    /// How webhooks are POSTed.
    pub delivery: DeliverySettings,
    /// `SANDBOX_AUTO_REPLY`.
    pub auto_reply: AutoReplyPolicy,
    /// `SANDBOX_AUTO_REPLY_AFTER_MS`.
    pub auto_reply_after: Duration,
    /// `SANDBOX_FAULT_*`.
    pub faults: FaultSettings,
    /// `SANDBOX_SEED`.
    pub seed: u64,
    /// `SANDBOX_MAX_STORED_MESSAGES`.
    pub max_stored_messages: usize,
}

/// The life of an accepted message as status webhooks tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSettings {
    /// `SANDBOX_SENT_AFTER_MS`.
    pub sent_after: Duration,
    /// `SANDBOX_DELIVERED_AFTER_MS`.
    pub delivered_after: Duration,
    /// `SANDBOX_READ_AFTER_MS`.
    pub read_after: Duration,
    /// `SANDBOX_DELIVERED_PROBABILITY`.
    pub delivered_probability: f64,
    /// `SANDBOX_READ_PROBABILITY`.
    pub read_probability: f64,
    /// `SANDBOX_FAILED_PROBABILITY`.
    pub failed_probability: f64,
    /// `SANDBOX_DUPLICATE_PROBABILITY`.
    pub duplicate_probability: f64,
    /// `SANDBOX_REORDER_PROBABILITY`.
    pub reorder_probability: f64,
}

/// How webhook POSTs are batched and retried.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// `SANDBOX_WEBHOOK_BATCH_MAX`.
    pub batch_max: usize,
    /// `SANDBOX_WEBHOOK_BATCH_WINDOW_MS`.
    pub batch_window: Duration,
    /// `SANDBOX_WEBHOOK_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `SANDBOX_WEBHOOK_RETRY_BASE_MS`.
    pub retry_base: Duration,
    /// `SANDBOX_WEBHOOK_RETRY_MAX_MS`.
    pub retry_max: Duration,
    /// `SANDBOX_WEBHOOK_TIMEOUT_MS`.
    pub timeout: Duration,
    /// `SANDBOX_WEBHOOK_CONCURRENCY`.
    pub concurrency: usize,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 8089)),
            access_token: "sandbox-token".to_owned(),
            app_secret: "sandbox-app-secret".to_owned(),
            webhook_url: None,
            waba_id: "102290129340398".to_owned(),
            templates_file: None,
            templates: default_templates(),
            phone_numbers: vec![PhoneNumberSpec {
                id: "106540352242922".to_owned(),
                display_phone_number: "15550783881".to_owned(),
                mps: None,
            }],
            auto_register_numbers: false,
            default_mps: 80,
            pair_interval: Duration::from_secs(6),
            pair_burst: 1,
            statuses: StatusSettings {
                sent_after: Duration::from_millis(100),
                delivered_after: Duration::from_millis(800),
                read_after: Duration::from_millis(3000),
                delivered_probability: 1.0,
                read_probability: 0.6,
                failed_probability: 0.0,
                duplicate_probability: 0.0,
                reorder_probability: 0.0,
            },
            delivery: DeliverySettings {
                batch_max: 1,
                batch_window: Duration::ZERO,
                max_attempts: 6,
                retry_base: Duration::from_millis(500),
                retry_max: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                concurrency: 16,
            },
            auto_reply: AutoReplyPolicy::default(),
            auto_reply_after: Duration::from_millis(1500),
            faults: FaultSettings::default(),
            seed: 42,
            max_stored_messages: 100_000,
        }
    }
}

/// Templates available when no `SANDBOX_TEMPLATES` file is given: the ones Careline's sample
/// network configuration uses, approved in common languages, with Confirm / Reschedule /
/// Cancel quick replies.
pub fn default_templates() -> Vec<TemplateSpec> {
    let languages: Vec<String> =
        ["en", "en_US", "en_GB", "hi", "es", "pt_BR", "de", "ar"].into_iter().map(str::to_owned).collect();
    let buttons: Vec<String> = ["Confirm", "Reschedule", "Cancel"].into_iter().map(str::to_owned).collect();
    vec![
        TemplateSpec {
            name: "appointment_booked".to_owned(),
            languages: languages.clone(),
            body_params: 3,
            quick_replies: buttons.clone(),
            body_text: Some(
                "Hello {{1}}, your appointment on {{2}} at {{3}} is booked. Reply below to confirm, reschedule or cancel."
                    .to_owned(),
            ),
            ..TemplateSpec::default()
        },
        TemplateSpec {
            name: "appointment_reminder".to_owned(),
            languages,
            body_params: 5,
            quick_replies: buttons,
            body_text: Some(
                "Hello {{1}}, a reminder of your appointment on {{2}} with {{3}} at {{4}}, {{5}}."
                    .to_owned(),
            ),
            ..TemplateSpec::default()
        },
    ]
}

impl SandboxSettings {
    /// Reads the environment (see the table on [`SandboxSettings`]).
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads settings through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env(&lookup);
        let mut s = Self::default();
        if let Some(v) = env.get("SANDBOX_LISTEN_ADDR") {
            s.listen_addr = v.parse().map_err(|e| env.error("SANDBOX_LISTEN_ADDR", &v, e))?;
        }
        if let Some(v) = env.get("WHATSAPP_ACCESS_TOKEN") {
            s.access_token = v;
        }
        if let Some(v) = env.get("SANDBOX_APP_SECRET") {
            s.app_secret = v;
        }
        s.webhook_url = env.get("SANDBOX_WEBHOOK_URL");
        if let Some(v) = env.get("SANDBOX_WABA_ID") {
            s.waba_id = v;
        }
        if let Some(v) = env.get("SANDBOX_TEMPLATES") {
            s.templates_file = Some(PathBuf::from(v));
            s.templates = Vec::new();
        }
        if let Some(v) = env.get("SANDBOX_PHONE_NUMBERS") {
            s.phone_numbers =
                PhoneNumberSpec::parse_list(&v).map_err(|reason| env.error("SANDBOX_PHONE_NUMBERS", &v, reason))?;
        }
        env.parse("SANDBOX_AUTO_REGISTER_NUMBERS", &mut s.auto_register_numbers)?;
        env.parse("SANDBOX_DEFAULT_MPS", &mut s.default_mps)?;
        env.millis("SANDBOX_PAIR_INTERVAL_MS", &mut s.pair_interval)?;
        env.parse("SANDBOX_PAIR_BURST", &mut s.pair_burst)?;
        let st = &mut s.statuses;
        env.millis("SANDBOX_SENT_AFTER_MS", &mut st.sent_after)?;
        env.millis("SANDBOX_DELIVERED_AFTER_MS", &mut st.delivered_after)?;
        env.millis("SANDBOX_READ_AFTER_MS", &mut st.read_after)?;
        env.probability("SANDBOX_DELIVERED_PROBABILITY", &mut st.delivered_probability)?;
        env.probability("SANDBOX_READ_PROBABILITY", &mut st.read_probability)?;
        env.probability("SANDBOX_FAILED_PROBABILITY", &mut st.failed_probability)?;
        env.probability("SANDBOX_DUPLICATE_PROBABILITY", &mut st.duplicate_probability)?;
        env.probability("SANDBOX_REORDER_PROBABILITY", &mut st.reorder_probability)?;
        let d = &mut s.delivery;
        env.parse("SANDBOX_WEBHOOK_BATCH_MAX", &mut d.batch_max)?;
        env.millis("SANDBOX_WEBHOOK_BATCH_WINDOW_MS", &mut d.batch_window)?;
        env.parse("SANDBOX_WEBHOOK_MAX_ATTEMPTS", &mut d.max_attempts)?;
        env.millis("SANDBOX_WEBHOOK_RETRY_BASE_MS", &mut d.retry_base)?;
        env.millis("SANDBOX_WEBHOOK_RETRY_MAX_MS", &mut d.retry_max)?;
        env.millis("SANDBOX_WEBHOOK_TIMEOUT_MS", &mut d.timeout)?;
        env.parse("SANDBOX_WEBHOOK_CONCURRENCY", &mut d.concurrency)?;
        if let Some(v) = env.get("SANDBOX_AUTO_REPLY") {
            s.auto_reply = AutoReplyPolicy::parse(&v).map_err(|reason| env.error("SANDBOX_AUTO_REPLY", &v, reason))?;
        }
        env.millis("SANDBOX_AUTO_REPLY_AFTER_MS", &mut s.auto_reply_after)?;
        env.parse("SANDBOX_SEED", &mut s.seed)?;
        let f = &mut s.faults;
        env.probability("SANDBOX_FAULT_500_BEFORE_ACCEPT", &mut f.http_500_before_accept)?;
        env.probability("SANDBOX_FAULT_500_AFTER_ACCEPT", &mut f.http_500_after_accept)?;
        env.probability("SANDBOX_FAULT_SLOW_PROBABILITY", &mut f.slow_probability)?;
        env.parse("SANDBOX_FAULT_SLOW_MS", &mut f.slow_ms)?;
        env.parse("SANDBOX_FAULT_SLOW_ACCEPTED_ONLY", &mut f.slow_accepted_only)?;
        if let Some(v) = env.get("SANDBOX_FAULT_BURST_CODES") {
            f.burst_codes = v
                .split(',')
                .map(|c| c.trim().parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|e| env.error("SANDBOX_FAULT_BURST_CODES", &v, e))?;
        }
        env.parse("SANDBOX_FAULT_BURST_EVERY_MS", &mut f.burst_every_ms)?;
        env.parse("SANDBOX_FAULT_BURST_MS", &mut f.burst_ms)?;
        env.parse("SANDBOX_MAX_STORED_MESSAGES", &mut s.max_stored_messages)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks values that types cannot: probabilities within 0..=1, positive sizes, an
    /// http(s) webhook URL, a non-empty app secret.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |var: &'static str, value: String, reason: &str| {
            Err(SettingsError { var, value, reason: reason.to_owned() })
        };
        let st = &self.statuses;
        let f = &self.faults;
        for (var, p) in [
            ("SANDBOX_DELIVERED_PROBABILITY", st.delivered_probability),
            ("SANDBOX_READ_PROBABILITY", st.read_probability),
            ("SANDBOX_FAILED_PROBABILITY", st.failed_probability),
            ("SANDBOX_DUPLICATE_PROBABILITY", st.duplicate_probability),
            ("SANDBOX_REORDER_PROBABILITY", st.reorder_probability),
            ("SANDBOX_FAULT_500_BEFORE_ACCEPT", f.http_500_before_accept),
            ("SANDBOX_FAULT_500_AFTER_ACCEPT", f.http_500_after_accept),
            ("SANDBOX_FAULT_SLOW_PROBABILITY", f.slow_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return fail(var, p.to_string(), "not a probability in 0..=1");
            }
        }
        for (var, value) in [
            ("SANDBOX_WEBHOOK_BATCH_MAX", self.delivery.batch_max),
            ("SANDBOX_WEBHOOK_CONCURRENCY", self.delivery.concurrency),
            ("SANDBOX_WEBHOOK_MAX_ATTEMPTS", self.delivery.max_attempts as usize),
            ("SANDBOX_PAIR_BURST", self.pair_burst as usize),
        ] {
            if value == 0 {
                return fail(var, "0".to_owned(), "must be at least 1");
            }
        }
        if self.app_secret.is_empty() {
            // An empty HMAC key lets anyone sign webhooks; Careline refuses it too.
            return fail("SANDBOX_APP_SECRET", String::new(), "must not be empty");
        }
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return fail("SANDBOX_WEBHOOK_URL", url.clone(), "not an http(s) URL");
        }
        Ok(())
    }
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn error(&self, var: &'static str, value: &str, reason: impl ToString) -> SettingsError {
        SettingsError { var, value: value.to_owned(), reason: reason.to_string() }
    }

    fn parse<T>(&self, var: &'static str, target: &mut T) -> Result<(), SettingsError>
    where
        T: std::str::FromStr,
        T::Err: ToString,
    {
        if let Some(v) = self.get(var) {
            *target = v.parse().map_err(|e: T::Err| self.error(var, &v, e))?;
        }
        Ok(())
    }

    fn millis(&self, var: &'static str, target: &mut Duration) -> Result<(), SettingsError> {
        let mut ms = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
        self.parse(var, &mut ms)?;
        *target = Duration::from_millis(ms);
        Ok(())
    }

    fn probability(&self, var: &'static str, target: &mut f64) -> Result<(), SettingsError> {
        self.parse(var, target)?;
        if !(0.0..=1.0).contains(target) {
            return Err(self.error(var, &target.to_string(), "not a probability in 0..=1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<SandboxSettings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SandboxSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        let s = from(&[]).unwrap();
        assert_eq!(s.listen_addr.port(), 8089);
        assert_eq!(s.default_mps, 80);
        assert_eq!(s.pair_interval, Duration::from_secs(6));
        assert_eq!(s.templates.len(), 2);
        assert!(s.webhook_url.is_none());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn variables_override_the_defaults() {
        let s = from(&[
            ("SANDBOX_LISTEN_ADDR", "127.0.0.1:0"),
            ("WHATSAPP_ACCESS_TOKEN", "tok"),
            ("SANDBOX_WEBHOOK_URL", "http://127.0.0.1:9/webhook"),
            ("SANDBOX_PHONE_NUMBERS", "1001:15550001001:20, 1002"),
            ("SANDBOX_PAIR_INTERVAL_MS", "100"),
            ("SANDBOX_READ_PROBABILITY", "1"),
            ("SANDBOX_AUTO_REPLY", "confirm:0.5,stop:0.1"),
            ("SANDBOX_TEMPLATES", "/tmp/none.toml"),
            ("SANDBOX_FAULT_500_AFTER_ACCEPT", "0.25"),
            ("SANDBOX_FAULT_BURST_CODES", "130429, 131056"),
            ("SANDBOX_FAULT_BURST_EVERY_MS", "5000"),
            ("SANDBOX_SEED", "7"),
        ])
        .unwrap();
        assert_eq!(s.access_token, "tok");
        assert_eq!(s.phone_numbers.len(), 2);
        assert_eq!(s.phone_numbers[0].mps, Some(20));
        assert_eq!(s.phone_numbers[1].display_phone_number, "1002");
        assert_eq!(s.pair_interval, Duration::from_millis(100));
        assert_eq!(s.statuses.read_probability, 1.0);
        assert_eq!(s.auto_reply.rules().len(), 2);
        assert!(s.templates.is_empty(), "a file replaces the built-ins");
        assert_eq!(s.faults.http_500_after_accept, 0.25);
        assert_eq!(s.faults.burst_codes, vec![130429, 131056]);
        assert_eq!(s.faults.burst_every_ms, 5000);
        assert_eq!(s.faults.burst_ms, 500);
        assert_eq!(s.seed, 7);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("SANDBOX_DEFAULT_MPS", "fast"),
            ("SANDBOX_READ_PROBABILITY", "1.5"),
            ("SANDBOX_LISTEN_ADDR", "localhost"),
            ("SANDBOX_AUTO_REPLY", "confirm:0.9,stop:0.9"),
            ("SANDBOX_PHONE_NUMBERS", "abc"),
            ("SANDBOX_WEBHOOK_BATCH_MAX", "0"),
            ("SANDBOX_WEBHOOK_URL", "ftp://x"),
            ("SANDBOX_FAULT_BURST_CODES", "130429,slow"),
        ] {
            let err = from(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }
}
