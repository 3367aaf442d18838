//! One due job, from `job.due` to a final `sends` row: the idempotent send protocol.
//!
//! 1. **Read** job, appointment, patient, consent, the `sends` row and the recipient's
//!    standing with the shared limits (batched with every job in flight).
//! 2. **Idempotency.** A final row (accepted, failed, suppressed) means a redelivery: ack. A
//!    row another live sender holds (lease) is deferred. A row whose owner stopped with a call
//!    on the wire becomes `unknown`. An `unknown` row waits for a status webhook carrying its
//!    `biz_opaque_callback_data` for `SENDER_UNKNOWN_WINDOW_MS`; after that it is sent again,
//!    at most `SENDER_UNKNOWN_MAX_RESENDS` times in all, then failed with the reason
//!    `outcome_unknown`.
//! 3. **Re-check right before sending**: revoked or stale job, cancelled appointment, unknown
//!    patient, no consent or opted out, appointment started, the kind's deadline passed
//!    (`too_late`, see `careline_domain::plan::send_deadline`), number known not to be on
//!    WhatsApp: suppressed with the reason, never sent late.
//! 4. **Defer without holding anything**: a paused business number, a full messaging tier, a
//!    recipient inside the pair interval. The job goes to a delay queue and the delivery is
//!    acked (see `careline_bus::topology`).
//! 5. **Slot and claim.** The job waits for a send slot of its number (urgent lane first), then
//!    claims the job in one batched statement that also checks the recipient's pair interval
//!    across every replica and commits `attempts = n` before the call.
//! 6. **Call** at the slot and **record** the answer, batched: accepted; outcome unknown;
//!    retry later through a delay queue (exponential backoff with jitter; 131056 waits 4^n s;
//!    130429 also halves the number's rate for a minute); pause the number; mark the patient
//!    not on WhatsApp; or fail for good with Meta's code and class, all by
//!    `careline_whatsapp::errors::ERROR_TABLE`.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use careline_bus::{Handling, Publisher};
use careline_domain::clock::Clock;
use careline_domain::consent::ConsentState;
use careline_domain::events::{Envelope, Event, JobDue};
use careline_domain::facility::{Facility, NetworkConfig};
use careline_domain::phone::Phone;
use careline_domain::plan::send_deadline;
use careline_domain::template::{Addressee, TemplateValues};
use careline_store::PgPool;
use careline_store::sends::{self, CallOutcome, Claim, ClaimResult, JobView, SendContext, SendState, Settlement};
use careline_whatsapp::client::{SendError, WhatsAppClient};
use careline_whatsapp::errors::{ErrorClass, pair_limit_backoff, rule_for};
use careline_whatsapp::types::{SendRequest, Template};
use uuid::Uuid;

use crate::batch::{BatchError, Batcher};
use crate::limits::{Lane, NumberPacers, RecipientGuard};
use crate::tier::TierBudget;

/// Jobs read, claimed or recorded per statement at most.
const BATCH_MAX: usize = 256;
/// Statements of one kind running at once.
const BATCH_PARALLEL: usize = 2;
/// How long a job owned by another live sender waits before it is looked at again.
const OWNED_ELSEWHERE_DELAY: Duration = Duration::from_secs(5);
/// How long a delivery that met a database outage waits before going back to the queue.
const DATABASE_DOWN_PAUSE: Duration = Duration::from_secs(1);
/// Meta's "template paused" (low quality) and "template disabled" codes.
const TEMPLATE_PAUSED: i64 = 132015;
const TEMPLATE_DISABLED: i64 = 132016;
/// How long the whole number is slowed down after a 130429.
const SLOW_DOWN_FOR: Duration = Duration::from_secs(60);

/// How a job ended in this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Meta accepted the message.
    Accepted { wamid: String },
    /// Refused for good, impossible to build, or out of retries.
    Failed { reason: String },
    /// Not sent on purpose.
    Suppressed { reason: String },
    /// A call may have been accepted; waiting for a status webhook.
    Unknown { reason: String },
    /// Nothing to do: the row is final, or an unknown outcome is still inside its window.
    AlreadySettled(SendState),
    /// Not now: the job went to a delay queue (or must, if the caller publishes it).
    Deferred { delay: Duration, reason: &'static str },
}

/// Why a job could not be handled in this delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendJobError {
    #[error("database error: {0}")]
    Database(#[from] BatchError),
    #[error("the sender is stopping")]
    Stopping,
}

impl From<sqlx::Error> for SendJobError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

impl SendJobError {
    /// Worth handing the delivery back (a connection problem, a stop), rather than
    /// dead-lettering it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => e.transient,
            Self::Stopping => true,
        }
    }
}

/// Retries, resends and waits.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// WhatsApp calls per job, first one included.
    pub max_attempts: u32,
    /// First backoff of a retryable error; doubles with jitter.
    pub retry_min_delay: Duration,
    /// Backoff ceiling.
    pub retry_max_delay: Duration,
    /// How long an unknown outcome waits for a status webhook before it is resent.
    pub unknown_window: Duration,
    /// Resends after unknown outcomes, in all.
    pub unknown_max_resends: u32,
    /// How long jobs of a paused number wait before they look again.
    pub paused_recheck: Duration,
    /// How long a job past its portfolio's messaging tier waits before it looks again.
    pub tier_recheck: Duration,
    /// Meta's minimum time between two messages to one recipient, plus the headroom.
    pub pair_interval: Duration,
    /// How long a claim owns its job (longer than the slot wait plus the HTTP timeout).
    pub lease: Duration,
}

/// A job read for sending, with its consent.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub view: JobView,
    pub consent: Option<ConsentState>,
}

/// Business numbers paused after an answer every further send would get too.
#[derive(Default)]
pub struct PausedNumbers {
    numbers: RwLock<HashSet<String>>,
}

impl PausedNumbers {
    pub fn contains(&self, number: &str) -> bool {
        self.numbers.read().expect("never poisoned").contains(number)
    }

    pub fn insert(&self, number: &str) {
        self.numbers.write().expect("never poisoned").insert(number.to_owned());
    }

    /// Replaces the set with what PostgreSQL says (an operator may have resumed a number).
    pub fn replace(&self, numbers: HashSet<String>) {
        *self.numbers.write().expect("never poisoned") = numbers;
    }
}

/// Everything needed to settle jobs; shared by all handlers.
pub struct Worker {
    pool: PgPool,
    network: Arc<NetworkConfig>,
    client: WhatsAppClient,
    clock: Arc<dyn Clock>,
    policy: Policy,
    publisher: Arc<Publisher>,
    pacers: NumberPacers,
    guard: RecipientGuard,
    paused: PausedNumbers,
    tier: TierBudget,
    loads: Batcher<Uuid, Loaded>,
    consents: Batcher<(String, String), Option<ConsentState>>,
    settlements: Batcher<Settlement, bool>,
    claims: Batcher<Claim, (Owner, ClaimResult)>,
    outcomes: Batcher<CallOutcome, bool>,
}

/// What the call needs about the message.
struct Prepared<'a> {
    job: &'a JobDue,
    facility: &'a Facility,
    request: SendRequest,
    recipient: Phone,
    recipient_key: String,
    template_name: String,
    language_code: String,
}

/// The owner id of one batch of claims (and of their outcomes).
type Owner = Uuid;

impl Worker {
    pub fn new(
        pool: PgPool,
        network: Arc<NetworkConfig>,
        client: WhatsAppClient,
        clock: Arc<dyn Clock>,
        policy: Policy,
        publisher: Arc<Publisher>,
        pacers: NumberPacers,
    ) -> Self {
        let loads = {
            let pool = pool.clone();
            Batcher::start("load", BATCH_MAX, BATCH_PARALLEL, move |ids: Vec<Uuid>| {
                let pool = pool.clone();
                async move { load(&pool, &ids).await.map_err(BatchError::from) }
            })
        };
        let consents = {
            let pool = pool.clone();
            Batcher::start("consent", BATCH_MAX, BATCH_PARALLEL, move |subjects: Vec<(String, String)>| {
                let pool = pool.clone();
                async move { Ok(careline_store::consent::current_many(&pool, &subjects).await?) }
            })
        };
        let settlements = {
            let pool = pool.clone();
            Batcher::start("settle", BATCH_MAX, BATCH_PARALLEL, move |items: Vec<Settlement>| {
                let pool = pool.clone();
                async move {
                    let written: HashSet<Uuid> = sends::settle_without_call(&pool, &items).await?.into_iter().collect();
                    Ok(items.iter().map(|s| written.contains(&s.job_id)).collect())
                }
            })
        };
        let claims = {
            let pool = pool.clone();
            Batcher::start("claim", BATCH_MAX, BATCH_PARALLEL, move |items: Vec<Claim>| {
                let pool = pool.clone();
                async move { claim_batch(&pool, policy, items).await }
            })
        };
        let outcomes = {
            let pool = pool.clone();
            Batcher::start("record", BATCH_MAX, BATCH_PARALLEL, move |items: Vec<CallOutcome>| {
                let pool = pool.clone();
                async move {
                    let written: HashSet<Uuid> = sends::record_outcomes(&pool, &items).await?.into_iter().collect();
                    Ok(items.iter().map(|o| written.contains(&o.job_id)).collect())
                }
            })
        };
        let tier = TierBudget::new(&network);
        Self {
            pool,
            network,
            client,
            clock,
            policy,
            publisher,
            pacers,
            guard: RecipientGuard::new(policy.pair_interval),
            paused: PausedNumbers::default(),
            tier,
            loads,
            consents,
            settlements,
            claims,
            outcomes,
        }
    }

    pub fn guard(&self) -> &RecipientGuard {
        &self.guard
    }

    pub fn paused(&self) -> &PausedNumbers {
        &self.paused
    }

    pub fn tier(&self) -> &TierBudget {
        &self.tier
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Every business number the network sends from.
    pub fn paused_numbers_configured(&self) -> Vec<String> {
        let mut numbers: Vec<String> = self.network.facilities.iter().map(|f| f.phone_number_id.clone()).collect();
        numbers.sort();
        numbers.dedup();
        numbers
    }

    /// The consumer's handler: settles or defers the job and says what to do with the delivery.
    pub async fn handle(&self, envelope: Envelope) -> Handling {
        let Event::JobDue(job) = &envelope.event else {
            return Handling::Reject(format!("the sender only takes job.due, not {}", envelope.event.routing_key()));
        };
        match self.process(job).await {
            Ok(JobOutcome::Deferred { delay, reason }) => {
                match self.publisher.publish_delayed(&envelope, delay).await {
                    Ok(tier) => {
                        tracing::info!(job_id = %job.job_id, reason, delay_ms = tier.as_millis() as u64, "job deferred");
                        metrics::counter!("careline_sender_deferred_total", "reason" => reason).increment(1);
                        Handling::Ack
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %job.job_id, error = %e, "cannot defer the job; handing it back");
                        tokio::time::sleep(DATABASE_DOWN_PAUSE).await;
                        Handling::Requeue
                    }
                }
            }
            Ok(_) => Handling::Ack,
            Err(e) if e.is_transient() => {
                tracing::warn!(job_id = %job.job_id, error = %e, "job handed back");
                tokio::time::sleep(DATABASE_DOWN_PAUSE).await;
                Handling::Requeue
            }
            Err(e) => Handling::Reject(e.to_string()),
        }
    }

    /// Settles one job or says how long to defer it (see the module doc). Safe to call any
    /// number of times for a job, from any number of replicas.
    #[tracing::instrument(skip_all, fields(job_id = %job.job_id, kind = %job.kind))]
    pub async fn process(&self, job: &JobDue) -> Result<JobOutcome, SendJobError> {
        let loaded = self.loads.call(job.job_id).await?;
        let view = &loaded.view;
        let facility_label = view.context.as_ref().map(|c| c.facility_id.clone());
        let facility_label = facility_label.as_deref();
        let mut resend = false;
        if let Some(send) = &view.send {
            match send.state {
                state if state.is_final() => {
                    tracing::info!(state = state.as_str(), "job already settled; redelivery acknowledged");
                    metrics::counter!("careline_sender_redeliveries_settled_total").increment(1);
                    return Ok(JobOutcome::AlreadySettled(state));
                }
                SendState::Sending if send.leased => {
                    return Ok(JobOutcome::Deferred { delay: OWNED_ELSEWHERE_DELAY, reason: "owned_elsewhere" });
                }
                SendState::Sending if send.call_in_flight() => {
                    // The previous owner stopped with a call on the wire: Meta may have it.
                    sends::mark_interrupted(&self.pool, job.job_id).await?;
                    tracing::warn!(attempt = send.attempts, "outcome of an interrupted call is unknown");
                    metrics::counter!("careline_sender_outcome_unknown_total").increment(1);
                    self.count(job, facility_label, "unknown");
                    return Ok(JobOutcome::Unknown { reason: "owner stopped while a call was in flight".into() });
                }
                SendState::Unknown => {
                    // PostgreSQL's time against the wall clock (not the injectable clock, which
                    // tests move by days).
                    let since = send.unknown_since.unwrap_or_else(chrono::Utc::now);
                    let waited = (chrono::Utc::now() - since).to_std().unwrap_or_default();
                    if waited < self.policy.unknown_window {
                        return Ok(JobOutcome::AlreadySettled(SendState::Unknown));
                    }
                    if send.resends >= i32::try_from(self.policy.unknown_max_resends).unwrap_or(i32::MAX) {
                        return self
                            .settle(job, facility_label, SendState::Failed, "outcome_unknown".into(), None, None)
                            .await;
                    }
                    resend = true;
                }
                _ => {}
            }
        }

        let Some(ctx) = &view.context else {
            return self.settle(job, None, SendState::Suppressed, "unknown_job".into(), None, None).await;
        };
        if let Some(reason) = self.suppression_reason(job, ctx, loaded.consent) {
            return self.settle(job, facility_label, SendState::Suppressed, reason.into(), None, None).await;
        }
        let prepared = match self.prepare(job, ctx) {
            Ok(prepared) => prepared,
            Err(reason) => return self.settle(job, facility_label, SendState::Failed, reason, None, None).await,
        };
        let number = prepared.facility.phone_number_id.as_str();
        if self.paused.contains(number) {
            return Ok(JobOutcome::Deferred { delay: self.policy.paused_recheck, reason: "number_paused" });
        }
        let portfolio = prepared.facility.portfolio().to_owned();
        let in_window = view.tier_portfolios.contains(&portfolio);
        if !in_window && !self.tier.admit(&portfolio) {
            return Ok(JobOutcome::Deferred { delay: self.policy.tier_recheck, reason: "messaging_tier_full" });
        }
        if let Some(last) = view.pair_last_at {
            let free_at = last + chrono::Duration::from_std(self.policy.pair_interval).unwrap_or_default();
            if let Ok(wait) = (free_at - chrono::Utc::now()).to_std()
                && !wait.is_zero()
            {
                return Ok(JobOutcome::Deferred { delay: wait, reason: "recipient_pair_interval" });
            }
        }
        if let Err(wait) = self.guard.try_take(&prepared.recipient_key) {
            return Ok(JobOutcome::Deferred { delay: wait, reason: "recipient_pair_interval" });
        }

        let lane = if job.is_urgent() { Lane::Urgent } else { Lane::Bulk };
        let slot = self.pacers.slot(number, lane).await.ok_or(SendJobError::Stopping)?;
        // The wait for a slot can be long on a saturated number: a STOP recorded meanwhile must
        // still stop this message, so consent is read again (the slot is given up if not).
        if let Some(patient) = &ctx.patient {
            let consent = self.consents.call((ctx.patient_id.clone(), patient.phone_e164.clone())).await?;
            if let Some(reason) = consent_refusal(consent) {
                return self.settle(job, facility_label, SendState::Suppressed, reason.into(), None, None).await;
            }
        }
        let claim = Claim {
            job_id: job.job_id,
            phone_number_id: number.to_owned(),
            template_name: prepared.template_name.clone(),
            language: prepared.language_code.clone(),
            recipient_key: prepared.recipient_key.clone(),
            portfolio,
            lane: lane.as_str(),
            slot_at: slot.db_at,
            seen_attempts: view.send.as_ref().map_or(0, |s| s.attempts),
            resend,
        };
        let (owner, claimed) = self.claims.call(claim).await?;
        let attempt = match claimed {
            ClaimResult::Claimed { attempt } => attempt,
            ClaimResult::RecipientBusy => {
                return Ok(JobOutcome::Deferred {
                    delay: self.policy.pair_interval,
                    reason: "recipient_pair_interval",
                });
            }
            ClaimResult::Lost => {
                return Ok(JobOutcome::Deferred { delay: Duration::from_secs(1), reason: "claim_lost" });
            }
        };
        if resend {
            tracing::warn!(attempt, "resending after an unknown outcome");
            metrics::counter!("careline_sender_resends_total").increment(1);
        }
        let mut slot = slot;
        // A claim that committed well after its slot would send late and bunch with the next
        // slot's call: the job (still ours under its lease) takes the next slot instead.
        while tokio::time::Instant::now() > slot.at + crate::limits::LATE_TOLERANCE {
            metrics::counter!("careline_sender_late_claims_total").increment(1);
            let Some(next) = self.pacers.slot(number, lane).await else {
                // Stopping: no call left, so the claim is given back for the next sender.
                sends::release_claim(&self.pool, job.job_id, owner, attempt).await?;
                return Err(SendJobError::Stopping);
            };
            slot = next;
            sends::repace(&self.pool, &prepared.recipient_key, slot.db_at).await?;
        }
        tokio::time::sleep_until(slot.at).await;
        self.call(&prepared, owner, attempt, view.send.as_ref().map_or(0, |s| s.pair_limit_hits)).await
    }

    /// Why the message must not go out now, if it must not.
    fn suppression_reason(
        &self,
        job: &JobDue,
        ctx: &SendContext,
        consent: Option<ConsentState>,
    ) -> Option<&'static str> {
        if matches!(ctx.job_state.as_str(), "revoked" | "skipped") {
            return Some("revoked");
        }
        if ctx.appointment_status == "cancelled"
            || ctx.job_generation != ctx.appointment_generation
            || job.generation != ctx.appointment_generation
        {
            return Some("stale");
        }
        let Some(patient) = &ctx.patient else {
            return Some("unknown_patient");
        };
        if let Some(reason) = consent_refusal(consent) {
            return Some(reason);
        }
        if patient.unreachable {
            return Some("not_on_whatsapp");
        }
        let now = self.clock.now();
        if ctx.starts_at <= now {
            return Some("appointment_started");
        }
        if send_deadline(&ctx.kind, ctx.due_at, ctx.starts_at) < now {
            return Some("too_late");
        }
        None
    }

    /// Facility, template, recipient and request; an error is a reason to fail the job.
    fn prepare<'a>(&'a self, job: &'a JobDue, ctx: &SendContext) -> Result<Prepared<'a>, String> {
        let facility = self.network.facility(&ctx.facility_id).ok_or("unknown_facility")?;
        let spec = self.network.template_for(facility, &ctx.kind).ok_or("no_template")?;
        let patient = ctx.patient.as_ref().ok_or("unknown_patient")?;
        let recipient = Phone::parse(&patient.phone_e164).map_err(|_| "invalid_phone")?;
        let values = TemplateValues {
            first_name: patient.first_name.as_deref(),
            clinician: ctx.clinician.as_deref(),
            facility_name: &facility.name,
            address: facility.address.as_deref(),
            map_link: facility.map_link.as_deref(),
            starts_at: ctx.starts_at,
            time_zone: facility.time_zone,
        };
        // A number shared by several patients (a family phone) gets neutral wording.
        let addressee = if patient.shared_number { Addressee::SharedNumber } else { Addressee::Named };
        if patient.shared_number {
            metrics::counter!("careline_sender_shared_number_messages_total").increment(1);
        }
        let rendered = spec
            .render_for(&patient.language, &self.network.default_language, &values, job.job_id, addressee)
            .map_err(|e| format!("render: {e}"))?;
        let (template_name, language_code) = (rendered.name.clone(), rendered.language_code.clone());
        let mut template = Template::new(rendered.name, rendered.language_code).with_body_text(rendered.body);
        for (index, payload) in rendered.button_payloads.into_iter().enumerate() {
            template = template.with_quick_reply(index, payload);
        }
        let request = SendRequest::template(recipient.wa_id(), template).with_callback_data(job.job_id.to_string());
        Ok(Prepared {
            job,
            facility,
            request,
            recipient,
            recipient_key: patient.recipient_key.clone(),
            template_name,
            language_code,
        })
    }

    async fn settle(
        &self,
        job: &JobDue,
        facility: Option<&str>,
        state: SendState,
        reason: String,
        error_code: Option<i32>,
        error_detail: Option<String>,
    ) -> Result<JobOutcome, SendJobError> {
        let settlement = Settlement { job_id: job.job_id, state, reason: reason.clone(), error_code, error_detail };
        if !self.settlements.call(settlement).await? {
            // The row moved meanwhile (another sender, a status webhook): look again later.
            return Ok(JobOutcome::Deferred { delay: Duration::from_secs(1), reason: "claim_lost" });
        }
        match state {
            SendState::Suppressed => {
                tracing::info!(reason = %reason, "message suppressed");
                self.count(job, facility, "suppressed");
                Ok(JobOutcome::Suppressed { reason })
            }
            _ => {
                tracing::error!(reason = %reason, "message failed");
                self.count(job, facility, "failed");
                Ok(JobOutcome::Failed { reason })
            }
        }
    }

    /// Call `attempt` at its slot, and what comes of it (see the module doc).
    async fn call(
        &self,
        p: &Prepared<'_>,
        owner: Owner,
        attempt: i32,
        pair_limit_hits: i32,
    ) -> Result<JobOutcome, SendJobError> {
        let job_id = p.job.job_id;
        let number = p.facility.phone_number_id.as_str();
        let facility = Some(p.facility.id.as_str());
        let started = Instant::now();
        let result = self.client.send(number, &p.request).await;
        let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let mut outcome = CallOutcome {
            job_id,
            owner,
            attempt,
            http_status: None,
            error_code: None,
            outcome: String::new(),
            latency_ms,
            state: SendState::Sending,
            wamid: None,
            message_status: None,
            reason: None,
            error_detail: None,
        };
        let error = match result {
            Ok(accepted) => {
                outcome.http_status = Some(200);
                outcome.outcome = "accepted".into();
                outcome.state = SendState::Accepted;
                outcome.wamid = Some(accepted.wamid.clone());
                outcome.message_status = Some(accepted.status.as_str().to_owned());
                self.record(outcome).await?;
                let due_to_sent = (self.clock.now() - p.job.due_at).to_std().unwrap_or_default();
                metrics::histogram!("careline_sender_due_to_sent_seconds").record(due_to_sent.as_secs_f64());
                self.count(p.job, facility, "accepted");
                self.template_paused(p, false);
                tracing::info!(attempt, wamid = %accepted.wamid, to = %p.recipient.log_id(), "message accepted");
                return Ok(JobOutcome::Accepted { wamid: accepted.wamid });
            }
            Err(error) => error,
        };
        let class = error.class();
        let code = error.code();
        if let Some(code) = code {
            metrics::counter!("careline_sender_meta_errors_total", "code" => code.to_string()).increment(1);
        }
        outcome.http_status = http_status(&error);
        outcome.error_code = code.and_then(|c| i32::try_from(c).ok());
        outcome.outcome = class.as_str().to_owned();
        outcome.error_detail = Some(error.to_string());
        tracing::warn!(attempt, code, class = class.as_str(), latency_ms, "call failed");

        match class {
            ErrorClass::OutcomeUnknown => {
                outcome.state = SendState::Unknown;
                outcome.reason = Some("outcome_unknown".into());
                self.record(outcome).await?;
                metrics::counter!("careline_sender_outcome_unknown_total").increment(1);
                self.count(p.job, facility, "unknown");
                Ok(JobOutcome::Unknown { reason: error.to_string() })
            }
            ErrorClass::Retry | ErrorClass::SlowDownNumber | ErrorClass::RetryRecipientLater => {
                let limit = code
                    .and_then(rule_for)
                    .and_then(|r| r.max_retries)
                    .map_or(self.policy.max_attempts, |m| (m + 1).min(self.policy.max_attempts));
                if attempt >= i32::try_from(limit).unwrap_or(i32::MAX) {
                    outcome.state = SendState::Failed;
                    outcome.reason = Some("retries_exhausted".into());
                    self.record(outcome).await?;
                    tracing::error!(code, "message failed: retries exhausted");
                    self.count(p.job, facility, "failed");
                    return Ok(JobOutcome::Failed { reason: "retries_exhausted".into() });
                }
                outcome.reason = Some(class.as_str().to_owned());
                self.record(outcome).await?;
                let delay = match class {
                    ErrorClass::RetryRecipientLater => pair_limit_backoff(u32::try_from(pair_limit_hits).unwrap_or(0)),
                    ErrorClass::SlowDownNumber => {
                        if let Err(e) = sends::slow_down_number(&self.pool, number, SLOW_DOWN_FOR).await {
                            tracing::warn!(error = %e, "cannot slow the number down");
                        }
                        self.backoff(attempt)
                    }
                    _ => self.backoff(attempt),
                };
                metrics::counter!("careline_sender_retries_total", "class" => class.as_str()).increment(1);
                Ok(JobOutcome::Deferred { delay, reason: class.as_str() })
            }
            ErrorClass::PauseNumber => {
                outcome.reason = Some("number_paused".into());
                self.record(outcome).await?;
                let reason =
                    format!("Meta answered {}", code.map_or_else(|| "an unexpected status".into(), |c| c.to_string()));
                if sends::pause_number(&self.pool, number, code.and_then(|c| i32::try_from(c).ok()), &reason).await? {
                    tracing::error!(number, code, "business number paused; resume it once the cause is fixed");
                }
                self.paused.insert(number);
                metrics::gauge!("careline_sender_number_paused", "phone_number_id" => number.to_owned()).set(1.0);
                Ok(JobOutcome::Deferred { delay: self.policy.paused_recheck, reason: "number_paused" })
            }
            ErrorClass::NotOnWhatsapp => {
                outcome.state = SendState::Failed;
                outcome.reason = Some("not_on_whatsapp".into());
                self.record(outcome).await?;
                sends::mark_unreachable(&self.pool, job_id).await?;
                tracing::warn!(to = %p.recipient.log_id(), "recipient cannot receive WhatsApp messages");
                self.count(p.job, facility, "failed");
                Ok(JobOutcome::Failed { reason: "not_on_whatsapp".into() })
            }
            ErrorClass::Permanent | ErrorClass::DoNotHotRetry | ErrorClass::Unknown => {
                if matches!(code, Some(TEMPLATE_PAUSED | TEMPLATE_DISABLED)) {
                    self.template_paused(p, true);
                }
                outcome.state = SendState::Failed;
                outcome.reason = Some(class.as_str().to_owned());
                self.record(outcome).await?;
                tracing::error!(reason = class.as_str(), code, "message failed");
                self.count(p.job, facility, "failed");
                Ok(JobOutcome::Failed { reason: class.as_str().to_owned() })
            }
        }
    }

    /// The wait before retry number `attempt` (exponential from the minimum, with jitter).
    fn backoff(&self, attempt: i32) -> Duration {
        let n = usize::try_from(attempt.max(1) - 1).unwrap_or(0);
        ExponentialBuilder::default()
            .with_min_delay(self.policy.retry_min_delay)
            .with_max_delay(self.policy.retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(n)
            .unwrap_or(self.policy.retry_max_delay)
    }

    /// Records a call's outcome. Its loss would cost knowledge only this process has, so a
    /// write that meets a database outage is tried again for a while before giving up (the
    /// row then says a call was in flight, and the job ends `unknown`).
    async fn record(&self, outcome: CallOutcome) -> Result<(), SendJobError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(6)
            .build();
        loop {
            match self.outcomes.call(outcome.clone()).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // The lease ran out and the row moved on: another sender treated this call
                    // as interrupted. Its answer is kept only in the logs.
                    tracing::warn!(attempt = outcome.attempt, outcome = %outcome.outcome, "call recorded too late; the job had moved on");
                    return Ok(());
                }
                Err(e) if e.transient => match delays.next() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `careline_sender_template_paused{template,language}`: 1 after Meta refused the template
    /// as paused or disabled, 0 again once it accepts that template.
    fn template_paused(&self, p: &Prepared<'_>, paused: bool) {
        metrics::gauge!(
            "careline_sender_template_paused",
            "template" => p.template_name.clone(),
            "language" => p.language_code.clone()
        )
        .set(if paused { 1.0 } else { 0.0 });
    }

    fn count(&self, job: &JobDue, facility: Option<&str>, outcome: &'static str) {
        metrics::counter!(
            "careline_sender_messages_total",
            "kind" => job.kind.clone(),
            "facility" => facility.unwrap_or("unknown").to_owned(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

async fn load(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Loaded>> {
    let views = sends::load_views(pool, ids).await?;
    let subjects: Vec<(String, String)> = views
        .iter()
        .map(|v| match &v.context {
            Some(SendContext { patient_id, patient: Some(p), .. }) => (patient_id.clone(), p.phone_e164.clone()),
            _ => (String::new(), String::new()),
        })
        .collect();
    let consents = careline_store::consent::current_many(pool, &subjects).await?;
    Ok(views.into_iter().zip(consents).map(|(view, consent)| Loaded { view, consent }).collect())
}

/// Claims a batch, one fresh owner id per statement (its outcomes are recorded under it).
/// Recipients repeated inside the batch go in later statements: one statement may touch a
/// recipient's pacing row only once.
async fn claim_batch(
    pool: &PgPool,
    policy: Policy,
    items: Vec<Claim>,
) -> Result<Vec<(Owner, ClaimResult)>, BatchError> {
    let mut results = vec![(Uuid::nil(), ClaimResult::Lost); items.len()];
    let mut remaining: Vec<usize> = (0..items.len()).collect();
    while !remaining.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            remaining.iter().partition(|&&i| seen.insert(items[i].recipient_key.clone()));
        let owner = Uuid::new_v4();
        let claims: Vec<Claim> = round.iter().map(|&i| items[i].clone()).collect();
        let claimed = sends::claim(pool, owner, policy.lease, policy.pair_interval, &claims).await?;
        for (&i, result) in round.iter().zip(claimed) {
            results[i] = (owner, result);
        }
        remaining = later;
    }
    Ok(results)
}

/// Why the consent in force forbids sending, if it does.
fn consent_refusal(consent: Option<ConsentState>) -> Option<&'static str> {
    match consent {
        None => Some("no_consent"),
        Some(ConsentState::OptedOut) => Some("opted_out"),
        Some(ConsentState::OptedIn) => None,
    }
}

fn http_status(error: &SendError) -> Option<i32> {
    match error {
        SendError::Api { http_status, .. } | SendError::UnexpectedStatus { http_status } => {
            Some(i32::from(*http_status))
        }
        SendError::OutcomeUnknown { http_status, .. } => http_status.map(i32::from),
        SendError::Connect(_) | SendError::InvalidRequest(_) => None,
    }
}
