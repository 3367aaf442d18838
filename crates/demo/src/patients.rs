//! The patients' side of the demo, played on wa-sandbox through its admin API.
//!
//! Each recipient's behaviour is fixed by the seed and their number (so it does not depend on
//! which message reaches them first): about 40 % tap Confirm, 5 % tap Reschedule, 3 % type STOP
//! in their language, the rest do not answer. A recipient answers once, to the first template
//! message that reached their phone (status `delivered` or `read`, so Careline has recorded the
//! message's wamid before the answer arrives).

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use wa_sandbox::{SandboxMessage, Stats};

use crate::population::mix;

pub const CONFIRM_SHARE: f64 = 0.40;
pub const RESCHEDULE_SHARE: f64 = 0.05;
pub const STOP_SHARE: f64 = 0.03;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    Confirm,
    Reschedule,
    Stop,
    None,
}

/// What the recipient `wa_id` does, given the demo's seed.
pub fn answer_of(seed: u64, wa_id: &str) -> Answer {
    let h = wa_id.bytes().fold(mix(seed ^ 0x0005_eed0_fa11), |h, b| mix(h ^ u64::from(b)));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    if u < CONFIRM_SHARE {
        Answer::Confirm
    } else if u < CONFIRM_SHARE + RESCHEDULE_SHARE {
        Answer::Reschedule
    } else if u < CONFIRM_SHARE + RESCHEDULE_SHARE + STOP_SHARE {
        Answer::Stop
    } else {
        Answer::None
    }
}

/// The opt-out keyword a patient types, in the language of the template they received.
fn stop_word(language: Option<&str>) -> &'static str {
    match language.map(|l| l.split(['_', '-']).next().unwrap_or(l)) {
        Some("es") => "BAJA",
        Some("hi") => "बंद करो",
        _ => "STOP",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("wa-sandbox {what}: {source}")]
    Http { what: &'static str, source: reqwest::Error },
    #[error("wa-sandbox {what}: HTTP {status}")]
    Status { what: &'static str, status: u16 },
}

#[derive(Debug, Serialize)]
struct ReplyBody<'a> {
    wamid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    button_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// wa-sandbox's admin API.
#[derive(Debug, Clone)]
pub struct SandboxClient {
    http: reqwest::Client,
    base_url: String,
}

impl SandboxClient {
    pub fn new(base_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    pub async fn stats(&self) -> Result<Stats, SandboxError> {
        self.get("stats", "/_sandbox/stats").await
    }

    pub async fn messages(&self) -> Result<Vec<SandboxMessage>, SandboxError> {
        self.get("messages", "/_sandbox/messages").await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, what: &'static str, path: &str) -> Result<T, SandboxError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .map_err(|source| SandboxError::Http { what, source })?;
        if !response.status().is_success() {
            return Err(SandboxError::Status { what, status: response.status().as_u16() });
        }
        response.json().await.map_err(|source| SandboxError::Http { what, source })
    }

    async fn reply(&self, body: &ReplyBody<'_>) -> Result<(), SandboxError> {
        let what = "replies";
        let response = self
            .http
            .post(format!("{}/_sandbox/replies", self.base_url))
            .json(body)
            .send()
            .await
            .map_err(|source| SandboxError::Http { what, source })?;
        if !response.status().is_success() {
            return Err(SandboxError::Status { what, status: response.status().as_u16() });
        }
        Ok(())
    }
}

/// How many answers of each kind the simulated patients gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    pub confirm: usize,
    pub reschedule: usize,
    pub stop: usize,
    pub failed: usize,
}

/// The simulated patients: remembers who has answered.
#[derive(Debug)]
pub struct Patients {
    seed: u64,
    decided: HashSet<String>,
    pub answered: Answered,
}

impl Patients {
    pub fn new(seed: u64) -> Self {
        Self { seed, decided: HashSet::new(), answered: Answered::default() }
    }

    /// Looks at what reached the phones and answers for every recipient who has not yet; returns
    /// how many recipients still wait for a message to arrive before they can answer.
    pub async fn answer_new_messages(&mut self, sandbox: &SandboxClient) -> Result<usize, SandboxError> {
        let messages = sandbox.messages().await?;
        let mut waiting: HashSet<&str> = HashSet::new();
        for message in &messages {
            if message.message_type != "template" || self.decided.contains(&message.wa_id) {
                continue;
            }
            if !matches!(message.status.as_str(), "delivered" | "read") {
                waiting.insert(&message.wa_id);
                continue;
            }
            waiting.remove(message.wa_id.as_str());
            self.decided.insert(message.wa_id.clone());
            let answer = answer_of(self.seed, &message.wa_id);
            let body = match answer {
                Answer::Confirm => {
                    ReplyBody { wamid: &message.wamid, button_index: Some(button(message, "CONFIRM", 0)), text: None }
                }
                Answer::Reschedule => ReplyBody {
                    wamid: &message.wamid,
                    button_index: Some(button(message, "RESCHEDULE", 1)),
                    text: None,
                },
                Answer::Stop => ReplyBody {
                    wamid: &message.wamid,
                    button_index: None,
                    text: Some(stop_word(message.language.as_deref())),
                },
                Answer::None => continue,
            };
            match sandbox.reply(&body).await {
                Ok(()) => match answer {
                    Answer::Confirm => self.answered.confirm += 1,
                    Answer::Reschedule => self.answered.reschedule += 1,
                    Answer::Stop => self.answered.stop += 1,
                    Answer::None => {}
                },
                Err(_) => self.answered.failed += 1,
            }
        }
        Ok(waiting.len())
    }
}

/// The index of the button whose payload starts with `prefix` (Careline's `CONFIRM:<job>`), else
/// `fallback` (the order Careline's templates use).
fn button(message: &SandboxMessage, prefix: &str, fallback: usize) -> usize {
    message
        .buttons
        .iter()
        .find(|b| b.payload.as_deref().is_some_and(|p| p.starts_with(prefix)))
        .map_or(fallback, |b| b.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_the_planned_shares_and_the_seed() {
        let numbers: Vec<String> = (0..20_000).map(|i| format!("9198{:08}", i * 7919)).collect();
        let count = |seed, a| numbers.iter().filter(|n| answer_of(seed, n) == a).count() as f64 / 20_000.0;
        assert!((count(42, Answer::Confirm) - CONFIRM_SHARE).abs() < 0.02);
        assert!((count(42, Answer::Reschedule) - RESCHEDULE_SHARE).abs() < 0.01);
        assert!((count(42, Answer::Stop) - STOP_SHARE).abs() < 0.01);
        assert_eq!(answer_of(42, "14152000001"), answer_of(42, "14152000001"));
        let differ = numbers.iter().take(200).filter(|n| answer_of(1, n) != answer_of(2, n)).count();
        assert!(differ > 50, "another seed, other answers");
    }

    #[test]
    fn stop_is_typed_in_the_patient_s_language_and_understood_by_careline() {
        use careline_domain::reply::{ReplyAction, classify_text};
        for language in [Some("en"), Some("hi"), Some("es"), Some("es_MX"), None] {
            assert_eq!(classify_text(stop_word(language)), ReplyAction::Stop, "{language:?}");
        }
    }
}
