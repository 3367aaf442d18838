//! One due job, from `job.due` to a final `sends` row: the idempotent send protocol.
//!
//! 1. **Lock.** The job's advisory lock is taken for the whole processing (one pooled
//!    connection holds it). Busy means another live worker has the job: this delivery is
//!    put back after a pause and will find the job settled.
//! 2. **Idempotency.** A final `sends` row (accepted, failed, suppressed, unknown) means the
//!    job is done: ack. A `sending` row left by a dead owner is looked at closely: if a call
//!    was on the wire (`attempts` > recorded attempts) the outcome is unknown — the job is
//!    marked `unknown` and *never resent*, because the Cloud API has no idempotency key.
//!    Reconciling an unknown send belongs to the status webhooks, which carry the job id in
//!    `biz_opaque_callback_data` (not implemented in the sender: `unknown` rows stay as they
//!    are and are counted in `careline_sender_outcome_unknown_total`). If no call was on
//!    the wire, the job is simply taken over.
//! 3. **Re-check right before sending.** Job, appointment and patient are read in one query,
//!    consent through the consent log; anything that makes the message wrong now (revoked,
//!    stale generation, cancelled, no consent, opted out, appointment started, unknown
//!    patient) suppresses it with a reason.
//! 4. **Render** the facility's template (whitelisted fields only).
//! 5. **Claim** with a committed `sending` row, then for each call: wait for the rate limits,
//!    commit `attempts = n`, call, record the attempt. Retryable classes back off (exponential
//!    with jitter; 131056 by Meta's 4^n s) up to `SENDER_MAX_ATTEMPTS`; an unknown outcome
//!    stops at once; everything else fails for good with its code and class.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use careline_bus::Handling;
use careline_domain::clock::Clock;
use careline_domain::consent::ConsentState;
use careline_domain::events::{Envelope, Event, JobDue};
use careline_domain::facility::{Facility, NetworkConfig};
use careline_domain::phone::Phone;
use careline_domain::template::TemplateValues;
use careline_store::PgPool;
use careline_store::sends::{self, AttemptRecord, NewSend, SendContext, SendState};
use careline_whatsapp::client::{SendError, WhatsAppClient};
use careline_whatsapp::errors::{ErrorClass, pair_limit_backoff, rule_for};
use careline_whatsapp::types::{SendRequest, Template};

use crate::limits::RateLimits;

/// How long a delivery whose job is locked elsewhere waits before going back to the queue,
/// so it does not spin through the broker's delivery limit.
const LOCKED_ELSEWHERE_PAUSE: Duration = Duration::from_secs(1);
/// How long a delivery that met a database outage waits before going back to the queue.
const DATABASE_DOWN_PAUSE: Duration = Duration::from_secs(1);
/// Writes after a call are retried this long before the delivery is handed back: the call's
/// result is known only to this process.
const RECORD_RETRY_MAX_TIMES: usize = 6;

/// How a job ended in this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Meta accepted the message.
    Accepted { wamid: String },
    /// Refused for good or impossible to build.
    Failed { reason: String },
    /// Not sent on purpose.
    Suppressed { reason: &'static str },
    /// A call may have been accepted; never resent.
    Unknown { reason: String },
    /// A final row already existed: a redelivery.
    AlreadySettled(SendState),
    /// Another live worker holds the job.
    LockedElsewhere,
}

/// Why a job could not be settled in this delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendJobError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl SendJobError {
    /// Worth handing the delivery back (a connection problem), rather than dead-lettering it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => careline_store::is_transient(e),
        }
    }
}

/// Retry schedule and bounds of WhatsApp calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Calls per job, first one included.
    pub max_attempts: u32,
    /// First backoff; doubles with jitter.
    pub min_delay: Duration,
    /// Backoff ceiling.
    pub max_delay: Duration,
}

/// Everything needed to settle jobs; shared by all handlers.
pub struct Worker {
    pool: PgPool,
    network: Arc<NetworkConfig>,
    client: WhatsAppClient,
    limits: RateLimits,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
}

/// What the attempt loop needs about the message.
struct Prepared<'a> {
    job: &'a JobDue,
    facility: &'a Facility,
    request: SendRequest,
    recipient: Phone,
    template_name: String,
    language_code: String,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        network: Arc<NetworkConfig>,
        client: WhatsAppClient,
        clock: Arc<dyn Clock>,
        pair_interval: Duration,
        retry: RetryPolicy,
    ) -> Self {
        let limits = RateLimits::new(&network, pair_interval);
        Self { pool, network, client, limits, clock, retry }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The consumer's handler: settles the job and says what to do with the delivery.
    pub async fn handle(&self, envelope: Envelope) -> Handling {
        let Event::JobDue(job) = envelope.event else {
            return Handling::Reject(format!("the sender only takes job.due, not {}", envelope.event.routing_key()));
        };
        match self.process(&job).await {
            Ok(JobOutcome::LockedElsewhere) => {
                tokio::time::sleep(LOCKED_ELSEWHERE_PAUSE).await;
                Handling::Requeue
            }
            Ok(_) => Handling::Ack,
            Err(e) if e.is_transient() => {
                tracing::warn!(job_id = %job.job_id, error = %e, "database unavailable; job handed back");
                tokio::time::sleep(DATABASE_DOWN_PAUSE).await;
                Handling::Requeue
            }
            Err(e) => Handling::Reject(e.to_string()),
        }
    }

    /// Settles one job (see the module doc). Safe to call any number of times for a job.
    #[tracing::instrument(skip_all, fields(job_id = %job.job_id, kind = %job.kind))]
    pub async fn process(&self, job: &JobDue) -> Result<JobOutcome, SendJobError> {
        let mut lock = self.pool.begin().await?;
        if !sends::try_lock_job(&mut lock, job.job_id).await? {
            tracing::info!("job is being worked on by another worker");
            return Ok(JobOutcome::LockedElsewhere);
        }
        let outcome = self.process_locked(job).await;
        // Ends the transaction, which releases the lock (it dies with the connection anyway).
        let _ = lock.rollback().await;
        outcome
    }

    async fn process_locked(&self, job: &JobDue) -> Result<JobOutcome, SendJobError> {
        let previous_attempts = match sends::find(&self.pool, job.job_id).await? {
            Some(row) if row.state.is_final() => {
                tracing::info!(state = row.state.as_str(), "job already settled; redelivery acknowledged");
                metrics::counter!("careline_sender_redeliveries_settled_total").increment(1);
                return Ok(JobOutcome::AlreadySettled(row.state));
            }
            Some(row) if row.call_in_flight() => {
                // The previous owner died with a call on the wire: Meta may have accepted it.
                let reason = "owner stopped while a call was in flight";
                sends::finish_unsent(&self.pool, job.job_id, SendState::Unknown, reason, None, None).await?;
                tracing::warn!(attempt = row.attempts, "outcome of an interrupted call is unknown; not resending");
                metrics::counter!("careline_sender_outcome_unknown_total").increment(1);
                self.count(job, None, "unknown");
                return Ok(JobOutcome::Unknown { reason: reason.to_owned() });
            }
            Some(row) => {
                tracing::info!(attempts = row.attempts, "taking over a job whose owner stopped between calls");
                row.attempts
            }
            None => 0,
        };

        let Some(ctx) = sends::load_send_context(&self.pool, job.job_id).await? else {
            return self.suppress(job, None, "unknown_job").await;
        };
        let facility_label = Some(ctx.facility_id.as_str());
        if let Some(reason) = self.suppression_reason(job, &ctx).await? {
            return self.suppress(job, facility_label, reason).await;
        }
        let prepared = match self.prepare(job, &ctx) {
            Ok(prepared) => prepared,
            Err(reason) => return self.fail_before_call(job, facility_label, reason).await,
        };
        sends::insert_sending(
            &self.pool,
            &NewSend {
                job_id: job.job_id,
                phone_number_id: &prepared.facility.phone_number_id,
                template_name: &prepared.template_name,
                language: &prepared.language_code,
            },
        )
        .await?;
        self.send_with_retries(&prepared, previous_attempts).await
    }

    /// Why the message must not go out now, if it must not.
    async fn suppression_reason(&self, job: &JobDue, ctx: &SendContext) -> Result<Option<&'static str>, SendJobError> {
        if matches!(ctx.job_state.as_str(), "revoked" | "skipped") {
            return Ok(Some("revoked"));
        }
        if ctx.appointment_status == "cancelled"
            || ctx.job_generation != ctx.appointment_generation
            || job.generation != ctx.appointment_generation
        {
            return Ok(Some("stale"));
        }
        let Some(patient) = &ctx.patient else {
            return Ok(Some("unknown_patient"));
        };
        match careline_store::consent::current(&self.pool, &ctx.patient_id, &patient.phone_e164).await? {
            None => return Ok(Some("no_consent")),
            Some(ConsentState::OptedOut) => return Ok(Some("opted_out")),
            Some(ConsentState::OptedIn) => {}
        }
        if ctx.starts_at <= self.clock.now() {
            return Ok(Some("appointment_started"));
        }
        Ok(None)
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
        let rendered = spec
            .render(&patient.language, &self.network.default_language, &values, job.job_id)
            .map_err(|e| format!("render: {e}"))?;
        let (template_name, language_code) = (rendered.name.clone(), rendered.language_code.clone());
        let mut template = Template::new(rendered.name, rendered.language_code).with_body_text(rendered.body);
        for (index, payload) in rendered.button_payloads.into_iter().enumerate() {
            template = template.with_quick_reply(index, payload);
        }
        let request = SendRequest::template(recipient.wa_id(), template).with_callback_data(job.job_id.to_string());
        Ok(Prepared { job, facility, request, recipient, template_name, language_code })
    }

    async fn suppress(
        &self,
        job: &JobDue,
        facility: Option<&str>,
        reason: &'static str,
    ) -> Result<JobOutcome, SendJobError> {
        sends::record_without_call(&self.pool, job.job_id, SendState::Suppressed, reason).await?;
        tracing::info!(reason, "message suppressed");
        self.count(job, facility, "suppressed");
        Ok(JobOutcome::Suppressed { reason })
    }

    async fn fail_before_call(
        &self,
        job: &JobDue,
        facility: Option<&str>,
        reason: String,
    ) -> Result<JobOutcome, SendJobError> {
        sends::record_without_call(&self.pool, job.job_id, SendState::Failed, &reason).await?;
        tracing::error!(reason = %reason, "message cannot be built");
        self.count(job, facility, "failed");
        Ok(JobOutcome::Failed { reason })
    }

    /// The calls, each behind the rate limits and recorded; see the module doc.
    async fn send_with_retries(&self, p: &Prepared<'_>, previous_attempts: i32) -> Result<JobOutcome, SendJobError> {
        let job_id = p.job.job_id;
        let number = p.facility.phone_number_id.as_str();
        let facility = Some(p.facility.id.as_str());
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let mut pair_limit_hits = 0u32;
        let max_attempts = i32::try_from(self.retry.max_attempts).unwrap_or(i32::MAX);
        let mut attempt = previous_attempts;
        let mut last_error: Option<(Option<i64>, String)> = None;
        loop {
            attempt += 1;
            if attempt > max_attempts {
                let (code, detail) = last_error.unwrap_or((None, "no attempt left".to_owned()));
                return self.finish_failed(p, "retries_exhausted", code, &detail).await;
            }
            self.limits.until_ready(number, p.recipient.e164()).await;
            if !self.record(|| sends::start_attempt(&self.pool, job_id, attempt)).await? {
                // The row left `sending` under us (it cannot while we hold the lock); re-read it.
                let state = sends::find(&self.pool, job_id).await?.map_or(SendState::Unknown, |r| r.state);
                return Ok(JobOutcome::AlreadySettled(state));
            }
            let started = Instant::now();
            let result = self.client.send(number, &p.request).await;
            let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            match result {
                Ok(accepted) => {
                    let record = AttemptRecord {
                        job_id,
                        attempt,
                        http_status: Some(200),
                        error_code: None,
                        outcome: "accepted",
                        latency_ms,
                    };
                    let status = accepted.status.as_str();
                    self.record(|| sends::record_accepted_attempt(&self.pool, &record, &accepted.wamid, status))
                        .await?;
                    let due_to_sent = (self.clock.now() - p.job.due_at).to_std().unwrap_or_default();
                    metrics::histogram!("careline_sender_due_to_sent_seconds").record(due_to_sent.as_secs_f64());
                    self.count(p.job, facility, "accepted");
                    tracing::info!(attempt, wamid = %accepted.wamid, to = %p.recipient.log_id(), "message accepted");
                    return Ok(JobOutcome::Accepted { wamid: accepted.wamid });
                }
                Err(error) => {
                    let class = error.class();
                    let code = error.code();
                    if let Some(code) = code {
                        metrics::counter!("careline_sender_meta_errors_total", "code" => code.to_string()).increment(1);
                    }
                    let record = AttemptRecord {
                        job_id,
                        attempt,
                        http_status: http_status(&error),
                        error_code: code.and_then(|c| i32::try_from(c).ok()),
                        outcome: class.as_str(),
                        latency_ms,
                    };
                    tracing::warn!(attempt, code, class = class.as_str(), latency_ms, "call failed");
                    if class == ErrorClass::OutcomeUnknown {
                        let reason = error.to_string();
                        self.record(|| {
                            sends::record_final_unsent_attempt(&self.pool, &record, SendState::Unknown, &reason, None)
                        })
                        .await?;
                        metrics::counter!("careline_sender_outcome_unknown_total").increment(1);
                        self.count(p.job, facility, "unknown");
                        return Ok(JobOutcome::Unknown { reason });
                    }
                    if !class.is_retryable() {
                        let detail = error.to_string();
                        self.record(|| {
                            sends::record_final_unsent_attempt(
                                &self.pool,
                                &record,
                                SendState::Failed,
                                class.as_str(),
                                Some(&detail),
                            )
                        })
                        .await?;
                        tracing::error!(reason = class.as_str(), code, "message failed");
                        self.count(p.job, facility, "failed");
                        return Ok(JobOutcome::Failed { reason: class.as_str().to_owned() });
                    }
                    // A retryable failure: the attempt is recorded before anything else, so a
                    // successor knows this call is over and may take the job over.
                    self.record(|| sends::record_attempt(&self.pool, &record)).await?;
                    let retries_allowed = code.and_then(rule_for).and_then(|r| r.max_retries);
                    if retries_allowed.is_some_and(|max| attempt > i32::try_from(max).unwrap_or(i32::MAX)) {
                        return self.finish_failed(p, "retries_exhausted", code, &error.to_string()).await;
                    }
                    let delay = match class {
                        ErrorClass::RetryRecipientLater => {
                            pair_limit_hits += 1;
                            pair_limit_backoff(pair_limit_hits - 1)
                        }
                        _ => backoff.next().unwrap_or(self.retry.max_delay),
                    };
                    last_error = Some((code, error.to_string()));
                    if attempt < max_attempts {
                        tracing::info!(attempt, retry_in_ms = delay.as_millis() as u64, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn finish_failed(
        &self,
        p: &Prepared<'_>,
        reason: &str,
        code: Option<i64>,
        detail: &str,
    ) -> Result<JobOutcome, SendJobError> {
        let code = code.and_then(|c| i32::try_from(c).ok());
        self.record(|| sends::finish_unsent(&self.pool, p.job.job_id, SendState::Failed, reason, code, Some(detail)))
            .await?;
        tracing::error!(reason, code, "message failed");
        self.count(p.job, Some(p.facility.id.as_str()), "failed");
        Ok(JobOutcome::Failed { reason: reason.to_owned() })
    }

    /// A write whose loss would cost knowledge only this process has (a call's result):
    /// retried through short database outages before the delivery is handed back.
    async fn record<T, F, Fut>(&self, write: F) -> Result<T, SendJobError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        let schedule = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(RECORD_RETRY_MAX_TIMES);
        Ok(write.retry(schedule).when(careline_store::is_transient).await?)
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

fn http_status(error: &SendError) -> Option<i32> {
    match error {
        SendError::Api { http_status, .. } | SendError::UnexpectedStatus { http_status } => {
            Some(i32::from(*http_status))
        }
        SendError::OutcomeUnknown { http_status, .. } => http_status.map(i32::from),
        SendError::Connect(_) | SendError::InvalidRequest(_) => None,
    }
}
