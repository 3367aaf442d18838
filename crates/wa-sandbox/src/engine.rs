//! The simulated Cloud API's state and decisions.
//!
//! Every decision about a send (authenticate, validate, inject faults, apply limits, accept,
//! plan its webhooks) happens under one lock, synchronously, so the order of checks is the
//! order of the code and a test can reason about counters exactly. Nothing awaits while the
//! lock is held; the HTTP layer and the webhook dispatcher do the waiting.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use careline_whatsapp::mask_phone;
use chrono::{DateTime, Utc};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{FaultState, FaultUpdate, ForcedError};
use crate::graph_error::GraphError;
use crate::limits::{PairLimiter, ThroughputLimiter};
use crate::registry::{PhoneNumberSpec, Registry, TemplateSpec};
use crate::replies::{AutoReplyAction, ReplyError, ReplyReceipt, ReplyRequest, recipient_draw};
use crate::settings::SandboxSettings;
use crate::validate::{Content, SentButton, ValidSend, normalise_phone, validate_send};

/// How long a patient's message keeps the customer-service window open.
const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Profile name on simulated inbound messages; never a real person's.
const PATIENT_PROFILE_NAME: &str = "Sandbox Patient";

/// An accepted message, as `/_sandbox/messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMessage {
    /// The wamid returned to the sender.
    pub wamid: String,
    /// The business number it was sent from.
    pub phone_number_id: String,
    /// `to` as sent.
    pub to: String,
    /// Normalised recipient.
    pub wa_id: String,
    /// `template`, `text`, `interactive`, …
    #[serde(rename = "type")]
    pub message_type: String,
    /// Template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Template language code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Body parameters.
    #[serde(default)]
    pub params: Vec<String>,
    /// Buttons with their payloads.
    #[serde(default)]
    pub buttons: Vec<MessageButton>,
    /// Text body, or the hydrated template body when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What the send put in `biz_opaque_callback_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    /// When it was accepted.
    pub accepted_at: DateTime<Utc>,
    /// Accepted, but the sender was answered HTTP 500 (an unknown outcome for it).
    #[serde(default)]
    pub answered_with_500: bool,
    /// Latest status POSTed for it: `accepted`, `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// Replies simulated to it.
    #[serde(default)]
    pub replies: u32,
}

/// A button of a stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageButton {
    /// Index.
    pub index: usize,
    /// Label.
    pub title: String,
    /// Payload sent for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl From<&SentButton> for MessageButton {
    fn from(b: &SentButton) -> Self {
        Self { index: b.index, title: b.title.clone(), payload: b.payload.clone() }
    }
}

/// Counters (`GET /_sandbox/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Send requests received.
    pub requests: u64,
    /// Sends accepted (a wamid was created), including those answered 500 afterwards.
    pub accepted: u64,
    /// Sends answered with an error and not accepted.
    pub refused: u64,
    /// Refusals by Meta error code.
    pub refused_by_code: BTreeMap<i64, u64>,
    /// Sends that exceeded a limit (each was refused with 130429 or 131056).
    pub violations: Violations,
    /// Injected faults.
    pub injected: Injected,
    /// Webhook traffic.
    pub webhooks: WebhookStats,
    /// Patient replies simulated (manual and automatic).
    pub replies: u64,
    /// Acceptances and limit violations per business number.
    #[serde(default)]
    pub by_number: BTreeMap<String, NumberStats>,
}

/// Counters of one business number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberStats {
    /// Sends accepted from it.
    pub accepted: u64,
    /// Sends over its throughput (130429).
    pub throughput_violations: u64,
    /// Sends over a pair rate (131056).
    pub pair_violations: u64,
}

/// Limit violations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violations {
    /// Over the number's throughput (130429).
    pub throughput: u64,
    /// Over the pair rate (131056).
    pub pair: u64,
    /// Both.
    pub total: u64,
}

/// Injected faults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// 500 without acceptance.
    pub http_500_before_accept: u64,
    /// 500 after acceptance.
    pub http_500_after_accept: u64,
    /// Delayed answers.
    pub slow: u64,
    /// Forced error codes answered synchronously.
    pub forced_sync: u64,
    /// Forced error codes reported in a `failed` webhook.
    pub forced_async: u64,
    /// Sends refused by a periodic burst (`burst_codes`).
    #[serde(default)]
    pub burst: u64,
}

/// Webhook traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Events (statuses, inbound messages) planned, duplicates included.
    pub scheduled_events: u64,
    /// Events the receiver answered 200 for.
    pub delivered_events: u64,
    /// Statuses planned.
    pub statuses: u64,
    /// Inbound messages planned.
    pub inbound_messages: u64,
    /// Duplicate deliveries planned.
    pub duplicates: u64,
    /// Messages whose statuses were shuffled.
    pub reordered: u64,
    /// POSTs answered 200.
    pub posts_ok: u64,
    /// POSTs answered otherwise or failed.
    pub posts_failed: u64,
    /// Retries.
    pub retries: u64,
    /// Events dropped after the last attempt.
    pub gave_up_events: u64,
    /// Events not yet delivered (queued or in flight).
    pub pending: u64,
}

/// What the HTTP layer answers to a send.
pub(crate) struct SendDecision {
    pub outcome: Result<Value, GraphError>,
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Status,
    Inbound,
}

/// One status or inbound message waiting to be POSTed.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub kind: EventKind,
    /// The `statuses[]` or `messages[]` item.
    pub item: Value,
    /// The `contacts[]` item of an inbound message.
    pub contact: Option<Value>,
    /// For statuses: the message and the status, to track the latest one.
    pub wamid: String,
    pub status: Option<&'static str>,
    pub duplicate: bool,
}

struct Scheduled {
    due: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed so the max-heap pops the earliest due first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct StoredMessage {
    public: SandboxMessage,
    display_phone_number: String,
    category: String,
    read_planned: bool,
}

struct State {
    registry: Registry,
    throughput: ThroughputLimiter,
    pair: PairLimiter,
    messages: HashMap<String, StoredMessage>,
    order: VecDeque<String>,
    stats: Stats,
    faults: FaultState,
    rng: StdRng,
    /// (phone_number_id, wa_id) → (opens, closes) of the customer-service window.
    windows: HashMap<(String, String), (Instant, Instant)>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    in_flight_events: u64,
    /// Acceptances per `biz_opaque_callback_data` (never pruned; reset clears it).
    callbacks: HashMap<String, u32>,
    /// When bursts are counted from (start or reset).
    started: Instant,
}

/// The sandbox's shared core.
pub(crate) struct Engine {
    pub settings: SandboxSettings,
    state: Mutex<State>,
    /// Wakes the dispatcher when an event is queued.
    pub wake: Notify,
    /// Cancelled when the sandbox stops; slow answers and deliveries give up on it.
    pub stopping: CancellationToken,
    base_registry: Registry,
}

fn status_rank(status: &str) -> u8 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        _ => 0,
    }
}

fn new_wamid() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect();
    format!("wamid.HBgL{tail}")
}

fn unix_after(base: i64, offset: Duration) -> String {
    let secs = i64::try_from(offset.as_secs()).unwrap_or(i64::MAX);
    base.saturating_add(secs).to_string()
}

fn error_object(code: i64, details: &str) -> Value {
    let title = careline_whatsapp::errors::title(code);
    json!({
        "code": code,
        "title": title,
        "message": title,
        "error_data": { "details": details },
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    })
}

impl Engine {
    pub fn new(settings: SandboxSettings, registry: Registry) -> Self {
        let state = State {
            registry: registry.clone(),
            throughput: ThroughputLimiter::default(),
            pair: PairLimiter::new(settings.pair_interval, settings.pair_burst),
            messages: HashMap::new(),
            order: VecDeque::new(),
            stats: Stats::default(),
            faults: FaultState::new(settings.faults.clone()),
            rng: StdRng::seed_from_u64(settings.seed),
            windows: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            in_flight_events: 0,
            callbacks: HashMap::new(),
            started: Instant::now(),
        };
        Self {
            settings,
            state: Mutex::new(state),
            wake: Notify::new(),
            stopping: CancellationToken::new(),
            base_registry: registry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn webhooks_enabled(&self) -> bool {
        self.settings.webhook_url.is_some()
    }

    // ---- sends -------------------------------------------------------------------------

    /// Decides the answer to `POST /{version}/{phone_number_id}/messages`.
    pub fn handle_send(
        &self,
        version: &str,
        phone_number_id: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> SendDecision {
        let mut st = self.lock();
        st.stats.requests += 1;
        let outcome = self.decide(&mut st, version, phone_number_id, authorization, body);
        let accepted = outcome.is_ok();
        let outcome = match outcome {
            Ok(Accepted { response, then_500 }) => {
                st.stats.accepted += 1;
                if then_500 {
                    st.stats.injected.http_500_after_accept += 1;
                    Err(GraphError::internal())
                } else {
                    Ok(response)
                }
            }
            Err(error) => {
                st.stats.refused += 1;
                *st.stats.refused_by_code.entry(error.code).or_default() += 1;
                Err(error)
            }
        };
        let slow =
            if st.faults.settings.slow_accepted_only && !accepted { 0.0 } else { st.faults.settings.slow_probability };
        let delay =
            (slow > 0.0 && st.rng.random::<f64>() < slow).then(|| Duration::from_millis(st.faults.settings.slow_ms));
        if delay.is_some() {
            st.stats.injected.slow += 1;
        }
        SendDecision { outcome, delay }
    }

    fn decide(
        &self,
        st: &mut State,
        version: &str,
        phone_number_id: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Accepted, GraphError> {
        let token = authorization.and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        match token {
            None => return Err(GraphError::invalid_token(true)),
            Some(t) if t != self.settings.access_token => {
                return Err(GraphError::invalid_token(false));
            }
            Some(_) => {}
        }
        if !is_graph_version(version) {
            return Err(GraphError::invalid_parameter(format!(
                "Unknown path components: /{version}/{phone_number_id}/messages"
            )));
        }
        let number = match st.registry.number(phone_number_id) {
            Some(n) => n.clone(),
            None if self.settings.auto_register_numbers
                && !phone_number_id.is_empty()
                && phone_number_id.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let spec = PhoneNumberSpec {
                    id: phone_number_id.to_owned(),
                    display_phone_number: phone_number_id.to_owned(),
                    mps: None,
                };
                st.registry.register_number(spec.clone()).map_err(|_| GraphError::unknown_object(phone_number_id))?;
                spec
            }
            None => return Err(GraphError::unknown_object(phone_number_id)),
        };
        let send = validate_send(body, &number, &st.registry)?;

        let forced = st.faults.take(&send.wa_id);
        if let Some(error) = forced.as_ref().filter(|f| !f.asynchronous) {
            st.stats.injected.forced_sync += 1;
            let details = error.details.clone().unwrap_or_else(|| "Error injected by wa-sandbox.".to_owned());
            let mut graph = GraphError::whatsapp(error.code, details);
            if let Some(status) = error.http_status {
                graph = graph.with_http_status(status);
            }
            return Err(graph);
        }
        if let Some(code) = st.faults.settings.burst_at(Instant::now().saturating_duration_since(st.started)) {
            st.stats.injected.burst += 1;
            return Err(GraphError::whatsapp(code, "Error injected by wa-sandbox (periodic burst)."));
        }
        let before = st.faults.settings.http_500_before_accept;
        if before > 0.0 && st.rng.random::<f64>() < before {
            st.stats.injected.http_500_before_accept += 1;
            return Err(GraphError::internal());
        }
        let now = Instant::now();
        let mps = number.mps.unwrap_or(self.settings.default_mps);
        if !st.throughput.try_admit(&number.id, mps, now) {
            st.stats.violations.throughput += 1;
            st.stats.violations.total += 1;
            st.stats.by_number.entry(number.id.clone()).or_default().throughput_violations += 1;
            return Err(GraphError::whatsapp(
                130429,
                "Message failed to send because there were too many messages sent from this phone number in a short period of time.",
            ));
        }
        if !st.pair.try_admit(&number.id, &send.wa_id, now) {
            st.stats.violations.pair += 1;
            st.stats.violations.total += 1;
            st.stats.by_number.entry(number.id.clone()).or_default().pair_violations += 1;
            return Err(GraphError::whatsapp(
                131056,
                "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
            ));
        }
        let after = st.faults.settings.http_500_after_accept;
        let then_500 = after > 0.0 && st.rng.random::<f64>() < after;
        let async_failure = forced.filter(|f| f.asynchronous);
        let response = self.accept(st, &number, send, async_failure, then_500, now);
        Ok(Accepted { response, then_500 })
    }

    /// Stores an accepted message and plans its webhooks; returns the 200 body.
    fn accept(
        &self,
        st: &mut State,
        number: &PhoneNumberSpec,
        send: ValidSend,
        async_failure: Option<ForcedError>,
        then_500: bool,
        now: Instant,
    ) -> Value {
        let wamid = new_wamid();
        let accepted_at = Utc::now();
        let (template, language, params, buttons, text, category) = match &send.content {
            Content::Template { name, language, category, params, buttons, rendered, .. } => (
                Some(name.clone()),
                Some(language.clone()),
                params.clone(),
                buttons.iter().map(MessageButton::from).collect(),
                rendered.clone(),
                category.to_ascii_lowercase(),
            ),
            Content::Text { body } => (None, None, Vec::new(), Vec::new(), Some(body.clone()), "service".to_owned()),
            Content::Interactive { body, buttons } => (
                None,
                None,
                Vec::new(),
                buttons.iter().map(MessageButton::from).collect(),
                Some(body.clone()),
                "service".to_owned(),
            ),
            Content::Other { .. } => (None, None, Vec::new(), Vec::new(), None, "service".to_owned()),
        };
        tracing::debug!(
            %wamid,
            phone_number_id = %number.id,
            to = %mask_phone(&send.wa_id),
            message_type = send.content.message_type(),
            template = template.as_deref().unwrap_or(""),
            "message accepted"
        );
        let stored = StoredMessage {
            public: SandboxMessage {
                wamid: wamid.clone(),
                phone_number_id: number.id.clone(),
                to: send.to_input.clone(),
                wa_id: send.wa_id.clone(),
                message_type: send.content.message_type().to_owned(),
                template,
                language,
                params,
                buttons,
                text,
                biz_opaque_callback_data: send.biz_opaque_callback_data.clone(),
                accepted_at,
                answered_with_500: then_500,
                status: "accepted".to_owned(),
                replies: 0,
            },
            display_phone_number: number.display_phone_number.clone(),
            category,
            read_planned: false,
        };
        self.store(st, stored);
        st.stats.by_number.entry(number.id.clone()).or_default().accepted += 1;
        if let Some(data) = &send.biz_opaque_callback_data {
            *st.callbacks.entry(data.clone()).or_default() += 1;
        }

        let window_open = st
            .windows
            .get(&(number.id.clone(), send.wa_id.clone()))
            .is_some_and(|&(opens, closes)| opens <= now && now < closes);
        let failure = match async_failure {
            Some(forced) => {
                st.stats.injected.forced_async += 1;
                Some((
                    forced.code,
                    forced
                        .details
                        .unwrap_or_else(|| "Error injected by wa-sandbox.".to_owned()),
                ))
            }
            None if send.content.needs_open_window() && !window_open => Some((
                131047,
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.".to_owned(),
            )),
            None => {
                let p = self.settings.statuses.failed_probability;
                (p > 0.0 && st.rng.random::<f64>() < p).then(|| {
                    (
                        131026,
                        "Message Undeliverable.".to_owned(),
                    )
                })
            }
        };
        self.plan_statuses(st, &wamid, failure, now, accepted_at.timestamp());

        json!({
            "messaging_product": "whatsapp",
            "contacts": [ { "input": send.to_input, "wa_id": send.wa_id } ],
            "messages": [ { "id": wamid, "message_status": "accepted" } ],
        })
    }

    fn store(&self, st: &mut State, message: StoredMessage) {
        while st.order.len() >= self.settings.max_stored_messages.max(1) {
            if let Some(old) = st.order.pop_front() {
                st.messages.remove(&old);
            }
        }
        st.order.push_back(message.public.wamid.clone());
        st.messages.insert(message.public.wamid.clone(), message);
    }

    /// Plans sent → delivered → read (or failed) for a message, with the configured
    /// probabilities, duplicates, reordering and automatic reply.
    fn plan_statuses(
        &self,
        st: &mut State,
        wamid: &str,
        failure: Option<(i64, String)>,
        now: Instant,
        accepted_unix: i64,
    ) {
        if !self.webhooks_enabled() {
            return;
        }
        let s = &self.settings.statuses;
        let mut planned: Vec<(Duration, &'static str)> = Vec::new();
        let mut read = false;
        if failure.is_some() {
            planned.push((s.sent_after, "failed"));
        } else {
            planned.push((s.sent_after, "sent"));
            if st.rng.random::<f64>() < s.delivered_probability {
                read = st.rng.random::<f64>() < s.read_probability;
                if read && s.read_after <= s.delivered_after {
                    // Delivered and read at once: Meta then sends only `read`.
                    planned.push((s.read_after.max(s.sent_after), "read"));
                } else {
                    planned.push((s.delivered_after.max(s.sent_after), "delivered"));
                    if read {
                        planned.push((s.read_after.max(s.delivered_after), "read"));
                    }
                }
            }
        }
        let Some(message) = st.messages.get_mut(wamid) else {
            return;
        };
        message.read_planned = read;
        let items: Vec<Value> = planned
            .iter()
            .map(|&(after, status)| status_item(message, status, &unix_after(accepted_unix, after), failure.as_ref()))
            .collect();
        let phone_number_id = message.public.phone_number_id.clone();
        let display = message.display_phone_number.clone();
        let wa_id = message.public.wa_id.clone();

        // Reordering keeps each status's own timestamp but swaps when it is POSTed.
        let mut dues: Vec<Duration> = planned.iter().map(|&(after, _)| after).collect();
        if dues.len() > 1 && st.rng.random::<f64>() < s.reorder_probability {
            dues.reverse();
            st.stats.webhooks.reordered += 1;
        }
        for ((item, &(_, status)), due) in items.into_iter().zip(&planned).zip(dues) {
            let event = Event {
                phone_number_id: phone_number_id.clone(),
                display_phone_number: display.clone(),
                kind: EventKind::Status,
                item,
                contact: None,
                wamid: wamid.to_owned(),
                status: Some(status),
                duplicate: false,
            };
            self.schedule(st, now + due, event);
        }
        if read {
            let read_after = planned.last().map_or(s.read_after, |&(after, _)| after);
            self.plan_auto_reply(st, wamid, &wa_id, now + read_after + self.settings.auto_reply_after);
        }
    }

    fn plan_auto_reply(&self, st: &mut State, wamid: &str, wa_id: &str, at: Instant) {
        let policy = &self.settings.auto_reply;
        if policy.is_empty() {
            return;
        }
        let Some(action) = policy.choose(recipient_draw(self.settings.seed, wa_id)) else {
            return;
        };
        let Some(message) = st.messages.get(wamid) else {
            return;
        };
        let reply = match action {
            AutoReplyAction::Text(text) => Reply::Text(text.clone()),
            AutoReplyAction::ButtonIndex(index) => Reply::Button(*index),
            AutoReplyAction::ButtonPrefix(prefix) => {
                let found = message.public.buttons.iter().find(|b| {
                    b.payload.as_deref().unwrap_or(&b.title).to_ascii_uppercase().starts_with(prefix.as_str())
                });
                match found {
                    Some(b) => Reply::Button(b.index),
                    None => return,
                }
            }
        };
        if let Err(error) = self.plan_reply_to(st, wamid, reply, at) {
            tracing::debug!(%wamid, %error, "automatic reply skipped");
        }
    }

    /// Queues `event` at `due`, plus a late duplicate with the configured probability.
    fn schedule(&self, st: &mut State, due: Instant, event: Event) {
        let p = self.settings.statuses.duplicate_probability;
        if p > 0.0 && st.rng.random::<f64>() < p {
            let lag = Duration::from_millis(st.rng.random_range(50..=1000));
            let mut copy = event.clone();
            copy.duplicate = true;
            st.stats.webhooks.duplicates += 1;
            self.push(st, due + lag, copy);
        }
        self.push(st, due, event);
    }

    fn push(&self, st: &mut State, due: Instant, event: Event) {
        st.stats.webhooks.scheduled_events += 1;
        match event.kind {
            EventKind::Status => st.stats.webhooks.statuses += 1,
            EventKind::Inbound => st.stats.webhooks.inbound_messages += 1,
        }
        st.seq += 1;
        let seq = st.seq;
        st.queue.push(Scheduled { due, seq, event });
        self.wake.notify_one();
    }

    // ---- replies -----------------------------------------------------------------------

    /// Simulates a patient's reply.
    pub fn reply(&self, request: ReplyRequest) -> Result<ReplyReceipt, ReplyError> {
        if !self.webhooks_enabled() {
            return Err(ReplyError::WebhooksDisabled);
        }
        let reply = match (request.button_index, request.text) {
            (Some(index), None) => Reply::Button(index),
            (None, Some(text)) if text.trim().is_empty() => return Err(ReplyError::EmptyText),
            (None, Some(text)) => Reply::Text(text),
            _ => return Err(ReplyError::NeitherOrBoth),
        };
        let at = Instant::now() + Duration::from_millis(request.delay_ms.unwrap_or(0));
        let mut st = self.lock();
        if let Some(wamid) = request.wamid {
            return self.plan_reply_to(&mut st, &wamid, reply, at);
        }
        let Reply::Text(text) = reply else {
            return Err(ReplyError::ButtonWithoutMessage);
        };
        let from = request.from.ok_or(ReplyError::MissingSender)?;
        let from = normalise_phone(&from).ok_or(ReplyError::InvalidSender)?;
        let number = match request.phone_number_id {
            Some(id) => st.registry.number(&id).cloned().ok_or(ReplyError::UnknownPhoneNumber(id))?,
            None => {
                let last = st
                    .order
                    .iter()
                    .rev()
                    .filter_map(|w| st.messages.get(w))
                    .find(|m| m.public.wa_id == from)
                    .map(|m| m.public.phone_number_id.clone());
                let id = last.or_else(|| st.registry.numbers().first().map(|n| n.id.clone()));
                id.and_then(|id| st.registry.number(&id).cloned())
                    .ok_or_else(|| ReplyError::UnknownPhoneNumber(String::new()))?
            }
        };
        Ok(self.plan_inbound(&mut st, &number.id, &number.display_phone_number, &from, Inbound::Text(text), None, at))
    }

    fn plan_reply_to(
        &self,
        st: &mut State,
        wamid: &str,
        reply: Reply,
        at: Instant,
    ) -> Result<ReplyReceipt, ReplyError> {
        let message = st.messages.get(wamid).ok_or_else(|| ReplyError::UnknownMessage(wamid.to_owned()))?;
        if message.public.status == "failed" {
            return Err(ReplyError::MessageFailed(wamid.to_owned()));
        }
        let inbound = match reply {
            Reply::Text(text) => Inbound::Text(text),
            Reply::Button(index) => {
                let button = message
                    .public
                    .buttons
                    .get(index)
                    .ok_or(ReplyError::NoSuchButton { index, buttons: message.public.buttons.len() })?;
                let payload = button.payload.clone().unwrap_or_else(|| button.title.clone());
                if message.public.message_type == "interactive" {
                    Inbound::ButtonReply { id: payload, title: button.title.clone() }
                } else {
                    Inbound::QuickReply { text: button.title.clone(), payload }
                }
            }
        };
        // A tap quotes the tapped message; typed text does not.
        let quoted = (!matches!(inbound, Inbound::Text(_))).then_some(wamid);
        let phone_number_id = message.public.phone_number_id.clone();
        let display = message.display_phone_number.clone();
        let from = message.public.wa_id.clone();
        if !message.read_planned {
            // Nobody taps a button on a message they have not read.
            let item = status_item(message, "read", &Utc::now().timestamp().to_string(), None);
            let event = Event {
                phone_number_id: phone_number_id.clone(),
                display_phone_number: display.clone(),
                kind: EventKind::Status,
                item,
                contact: None,
                wamid: wamid.to_owned(),
                status: Some("read"),
                duplicate: false,
            };
            self.schedule(st, at, event);
        }
        if let Some(message) = st.messages.get_mut(wamid) {
            message.read_planned = true;
            message.public.replies += 1;
        }
        Ok(self.plan_inbound(st, &phone_number_id, &display, &from, inbound, quoted, at))
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_inbound(
        &self,
        st: &mut State,
        phone_number_id: &str,
        display: &str,
        from: &str,
        inbound: Inbound,
        context: Option<&str>,
        at: Instant,
    ) -> ReplyReceipt {
        let id = new_wamid();
        let lead = at.saturating_duration_since(Instant::now());
        let timestamp = unix_after(Utc::now().timestamp(), lead);
        let mut item = json!({ "from": from, "id": id, "timestamp": timestamp });
        let mut payload = None;
        match inbound {
            Inbound::Text(body) => {
                item["type"] = json!("text");
                item["text"] = json!({ "body": body });
            }
            Inbound::QuickReply { text, payload: p } => {
                item["type"] = json!("button");
                item["button"] = json!({ "text": text, "payload": p });
                payload = Some(p);
            }
            Inbound::ButtonReply { id: reply_id, title } => {
                item["type"] = json!("interactive");
                item["interactive"] =
                    json!({ "type": "button_reply", "button_reply": { "id": reply_id, "title": title } });
                payload = Some(reply_id);
            }
        }
        if let Some(quoted) = context {
            item["context"] = json!({ "from": display, "id": quoted });
        }
        // The patient's message opens the 24 h customer-service window when it arrives.
        st.windows.insert((phone_number_id.to_owned(), from.to_owned()), (at, at + SERVICE_WINDOW));
        st.stats.replies += 1;
        tracing::debug!(inbound_wamid = %id, from = %mask_phone(from), "patient reply planned");
        let event = Event {
            phone_number_id: phone_number_id.to_owned(),
            display_phone_number: display.to_owned(),
            kind: EventKind::Inbound,
            item,
            contact: Some(json!({ "profile": { "name": PATIENT_PROFILE_NAME }, "wa_id": from })),
            wamid: id.clone(),
            status: None,
            duplicate: false,
        };
        self.schedule(st, at, event);
        ReplyReceipt { inbound_wamid: id, phone_number_id: phone_number_id.to_owned(), payload }
    }

    // ---- dispatcher side ---------------------------------------------------------------

    /// Pops the events due by `now + window` (at most `max`), marking them in flight, and
    /// returns them with the due time of the next event.
    pub fn take_due(&self, now: Instant, window: Duration, max: usize) -> (Vec<Event>, Option<Instant>) {
        let mut st = self.lock();
        let mut batch = Vec::new();
        while batch.len() < max {
            match st.queue.peek() {
                Some(next) if next.due <= now + window => {}
                _ => break,
            }
            let Some(Scheduled { event, .. }) = st.queue.pop() else {
                break;
            };
            if let (Some(status), false) = (event.status, event.duplicate)
                && let Some(message) = st.messages.get_mut(&event.wamid)
                && status_rank(status) > status_rank(&message.public.status)
            {
                message.public.status = status.to_owned();
            }
            batch.push(event);
        }
        st.in_flight_events += batch.len() as u64;
        let next = st.queue.peek().map(|s| s.due);
        (batch, next)
    }

    /// Records the end of a POST's life.
    pub fn finish_delivery(&self, events: u64, delivered: bool) {
        let mut st = self.lock();
        st.in_flight_events = st.in_flight_events.saturating_sub(events);
        if delivered {
            st.stats.webhooks.delivered_events += events;
        } else {
            st.stats.webhooks.gave_up_events += events;
        }
    }

    /// Records one POST attempt.
    pub fn record_post(&self, ok: bool, retrying: bool) {
        let mut st = self.lock();
        if ok {
            st.stats.webhooks.posts_ok += 1;
        } else {
            st.stats.webhooks.posts_failed += 1;
        }
        if retrying {
            st.stats.webhooks.retries += 1;
        }
    }

    /// Events queued or in flight.
    pub fn pending_events(&self) -> u64 {
        let st = self.lock();
        st.queue.len() as u64 + st.in_flight_events
    }

    // ---- introspection and administration ---------------------------------------------

    pub fn stats(&self) -> Stats {
        let st = self.lock();
        let mut stats = st.stats.clone();
        stats.webhooks.pending = st.queue.len() as u64 + st.in_flight_events;
        stats
    }

    pub fn messages(&self) -> Vec<SandboxMessage> {
        let st = self.lock();
        st.order.iter().filter_map(|w| st.messages.get(w)).map(|m| m.public.clone()).collect()
    }

    pub fn message(&self, wamid: &str) -> Option<SandboxMessage> {
        self.lock().messages.get(wamid).map(|m| m.public.clone())
    }

    /// Back to the state at start: no messages, counters, limits, windows, queued webhooks;
    /// faults and registry as configured. Webhooks already in flight still finish.
    pub fn reset(&self) {
        let mut st = self.lock();
        st.registry = self.base_registry.clone();
        st.throughput.clear();
        st.pair.clear();
        st.messages.clear();
        st.order.clear();
        st.stats = Stats::default();
        st.faults = FaultState::new(self.settings.faults.clone());
        st.rng = StdRng::seed_from_u64(self.settings.seed);
        st.windows.clear();
        st.queue.clear();
        st.callbacks.clear();
        st.started = Instant::now();
    }

    /// Acceptances per `biz_opaque_callback_data` since start or reset.
    pub fn callbacks(&self) -> BTreeMap<String, u32> {
        self.lock().callbacks.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn faults(&self) -> FaultState {
        self.lock().faults.clone()
    }

    pub fn update_faults(&self, update: FaultUpdate) -> Result<FaultState, String> {
        let mut st = self.lock();
        st.faults.apply(update)?;
        Ok(st.faults.clone())
    }

    pub fn register_template(&self, spec: TemplateSpec) -> Result<(), String> {
        self.lock().registry.register_template(spec)
    }

    pub fn templates(&self) -> Vec<TemplateSpec> {
        self.lock().registry.templates()
    }

    pub fn register_number(&self, spec: PhoneNumberSpec) -> Result<(), String> {
        self.lock().registry.register_number(spec)
    }

    pub fn numbers(&self) -> Vec<PhoneNumberSpec> {
        self.lock().registry.numbers()
    }
}

struct Accepted {
    response: Value,
    then_500: bool,
}

enum Reply {
    Button(usize),
    Text(String),
}

enum Inbound {
    Text(String),
    QuickReply { text: String, payload: String },
    ButtonReply { id: String, title: String },
}

/// `v23.0`-style path segment.
fn is_graph_version(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.split('.');
    let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

/// A `statuses[]` item as Meta sends it: pricing on sent/delivered, errors on failed,
/// timestamps as strings.
fn status_item(message: &StoredMessage, status: &str, timestamp: &str, failure: Option<&(i64, String)>) -> Value {
    let m = &message.public;
    let mut item = json!({
        "id": m.wamid,
        "status": status,
        "timestamp": timestamp,
        "recipient_id": m.wa_id,
    });
    if let Some(data) = &m.biz_opaque_callback_data {
        item["biz_opaque_callback_data"] = json!(data);
    }
    let pricing_type = if message.category == "service" { "free_customer_service" } else { "regular" };
    match status {
        "sent" | "delivered" => {
            item["pricing"] = json!({
                "billable": pricing_type == "regular",
                "pricing_model": "PMP",
                "category": message.category,
                "type": pricing_type,
            });
        }
        "failed" => {
            if let Some((code, details)) = failure {
                item["errors"] = json!([error_object(*code, details)]);
            }
        }
        _ => {}
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_versions_look_like_v23_0() {
        for ok in ["v23.0", "v1.0", "v100.12"] {
            assert!(is_graph_version(ok), "{ok}");
        }
        for bad in ["23.0", "v23", "v23.", "v.0", "v23.0.1", "vX.0", "", "_sandbox"] {
            assert!(!is_graph_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_queue_pops_the_earliest_first_then_by_insertion() {
        let t0 = Instant::now();
        let event = |n: &str| Event {
            phone_number_id: "1".into(),
            display_phone_number: "1".into(),
            kind: EventKind::Status,
            item: json!(n),
            contact: None,
            wamid: n.into(),
            status: None,
            duplicate: false,
        };
        let mut heap = BinaryHeap::new();
        heap.push(Scheduled { due: t0 + Duration::from_secs(2), seq: 1, event: event("late") });
        heap.push(Scheduled { due: t0, seq: 3, event: event("second") });
        heap.push(Scheduled { due: t0, seq: 2, event: event("first") });
        let order: Vec<String> = std::iter::from_fn(|| heap.pop()).map(|s| s.event.wamid).collect();
        assert_eq!(order, vec!["first", "second", "late"]);
    }
}
