//! Turning stored webhook bodies into statuses, replies, consent entries and events.
//!
//! The protocol:
//! 1. Claim the oldest due inbox row with `FOR UPDATE SKIP LOCKED` (replicas share the inbox
//!    without processing a row twice at once), in a transaction of its own.
//! 2. Handle every entry, change, status and message of the body inside a savepoint of that
//!    transaction; events to publish go to `webhook_outbox` in the same savepoint.
//! 3. Mark the row processed and commit. If handling failed, the savepoint is rolled back and
//!    the row gets `attempts + 1`, `last_error` and a backoff instead; it is never dropped.
//! 4. After a round of rows, publish the outbox (confirmed) and mark what the broker took.
//!    A crash between commit and publish leaves the events in the outbox for the next round.
//!
//! Every effect is idempotent (status events by `(wamid, status)`, inbound messages by Meta's
//! id, consent entries by dedupe key, events by `message_id`), so a row processed again after a
//! crash changes nothing.

use std::sync::Arc;
use std::time::Duration;

use careline_bus::{PublishError, Publisher};
use careline_domain::status::DeliveryStatus;
use careline_store::webhooks::{self, InboxRow, NewStatusEvent};
use careline_store::{PgPool, Postgres, Transaction};
use careline_whatsapp::webhook::{Status, WebhookEnvelope};
use chrono::{DateTime, Utc};
use opentelemetry::trace::TraceContextExt;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::inbound::{InboundContext, record_inbound};

/// The longest a failed inbox row waits before it is tried again.
const MAX_RETRY_DELAY_MS: i64 = 5 * 60 * 1000;
/// How long a stopping processor tries to publish what it committed.
const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Events published per confirmed batch.
const OUTBOX_BATCH: i64 = 100;

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
}

/// Processes the inbox and publishes the outbox.
#[derive(Clone)]
pub struct Processor {
    pool: PgPool,
    publisher: Arc<Publisher>,
    batch_size: usize,
    inbound: Arc<InboundContext>,
}

/// What one inbox row produced, for metrics after commit.
#[derive(Debug, Default)]
struct RowOutcome {
    /// Set when the body could not be read at all (kept in `last_error`).
    note: Option<String>,
    statuses: Vec<&'static str>,
    inbound: Vec<&'static str>,
    duplicates: u64,
}

impl Processor {
    pub fn new(pool: PgPool, publisher: Arc<Publisher>, batch_size: usize) -> Self {
        Self { pool, publisher, batch_size: batch_size.max(1), inbound: Arc::default() }
    }

    /// Uses these keyword lists and facilities for inbound messages (built-in lists otherwise).
    pub fn with_inbound(mut self, inbound: InboundContext) -> Self {
        self.inbound = Arc::new(inbound);
        self
    }

    /// Runs until `shutdown`: a round after every wake-up (a stored POST) or `poll_interval`.
    pub async fn run(self, wake: Arc<Notify>, poll_interval: Duration, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let processed = self.process_round(&shutdown).await;
            if processed >= self.batch_size {
                // More is probably waiting; go again without sleeping.
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Publish what the last round committed, so a clean stop leaves the outbox empty.
        match tokio::time::timeout(SHUTDOWN_FLUSH_LIMIT, self.flush_outbox()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "outbox not flushed at shutdown; it is published after restart"),
            Err(_) => tracing::warn!("outbox flush timed out at shutdown; it is published after restart"),
        }
        tracing::info!("webhook processor stopped");
    }

    /// One step: processes up to a batch of inbox rows, publishes the outbox, updates the lag
    /// gauge. Returns how many rows were handled. Errors are logged, never fatal.
    pub async fn process_round(&self, shutdown: &CancellationToken) -> usize {
        let processed = match self.process_batch(shutdown).await {
            Ok(n) => n,
            Err((n, error)) => {
                tracing::warn!(%error, "inbox processing interrupted; retrying on the next round");
                n
            }
        };
        if let Err(error) = self.flush_outbox().await {
            tracing::warn!(%error, "outbox publish failed; retrying on the next round");
        }
        self.update_lag().await;
        processed
    }

    async fn process_batch(&self, shutdown: &CancellationToken) -> Result<usize, (usize, sqlx::Error)> {
        let mut processed = 0;
        while processed < self.batch_size && !shutdown.is_cancelled() {
            match self.process_next().await {
                Ok(true) => processed += 1,
                Ok(false) => break,
                Err(error) => return Err((processed, error)),
            }
        }
        Ok(processed)
    }

    /// Claims and handles one inbox row. `Ok(false)` when nothing is due.
    async fn process_next(&self) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = webhooks::claim_next_inbox(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        let span = tracing::info_span!("process_webhook", inbox_id = row.inbox_id, attempt = row.attempts + 1);
        process_claimed(tx, row, &self.inbound).instrument(span).await?;
        Ok(true)
    }

    /// Publishes unpublished outbox events, oldest first, until none is left. Events are marked
    /// published only after the broker confirmed them.
    pub async fn flush_outbox(&self) -> Result<usize, ProcessError> {
        let mut published = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let claimed = webhooks::claim_unpublished(&mut tx, OUTBOX_BATCH).await?;
            if claimed.is_empty() {
                tx.rollback().await?;
                return Ok(published);
            }
            let full = claimed.len() as i64 == OUTBOX_BATCH;
            let mut ids = Vec::with_capacity(claimed.len());
            let mut envelopes = Vec::with_capacity(claimed.len());
            for (id, envelope) in claimed {
                match envelope {
                    Ok(envelope) => {
                        ids.push(id);
                        envelopes.push(envelope);
                    }
                    // Written by this service, so this is a bug; leave the row for a human.
                    Err(error) => {
                        tracing::error!(event_id = %id, %error, "outbox event does not decode; left unpublished")
                    }
                }
            }
            if envelopes.is_empty() {
                tx.rollback().await?;
                return Ok(published);
            }
            self.publisher.publish_all(&envelopes).await?;
            webhooks::mark_published(&mut *tx, &ids).await?;
            tx.commit().await?;
            published += ids.len();
            if !full {
                return Ok(published);
            }
        }
    }

    async fn update_lag(&self) {
        match webhooks::oldest_pending_received_at(&self.pool).await {
            Ok(oldest) => {
                let lag = oldest.map_or(0.0, |at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
                metrics::gauge!("careline_webhook_inbox_lag_seconds").set(lag);
            }
            Err(error) => tracing::debug!(%error, "inbox lag not measured"),
        }
    }
}

/// Handles a claimed row inside a savepoint, then marks it processed, or records the failure
/// (rolling back everything the attempt wrote), and commits.
async fn process_claimed(
    mut tx: Transaction<'_, Postgres>,
    row: InboxRow,
    inbound: &InboundContext,
) -> sqlx::Result<()> {
    let outcome = {
        let mut savepoint = tx.begin().await?;
        match handle_row(&mut savepoint, &row, inbound).await {
            Ok(outcome) => {
                savepoint.commit().await?;
                Ok(outcome)
            }
            Err(error) => {
                savepoint.rollback().await?;
                Err(error)
            }
        }
    };
    match outcome {
        Ok(outcome) => {
            webhooks::mark_inbox_processed(&mut *tx, row.inbox_id, outcome.note.as_deref()).await?;
            tx.commit().await?;
            record_metrics(&outcome);
            match &outcome.note {
                Some(note) => tracing::warn!(problem = %note, "webhook body unreadable; kept and marked processed"),
                None => tracing::debug!(
                    statuses = outcome.statuses.len(),
                    messages = outcome.inbound.len(),
                    "webhook processed"
                ),
            }
        }
        Err(error) => {
            let delay = retry_delay_ms(row.attempts);
            webhooks::record_inbox_failure(&mut *tx, row.inbox_id, &error.to_string(), delay).await?;
            tx.commit().await?;
            metrics::counter!("careline_webhook_processing_failures_total").increment(1);
            tracing::warn!(%error, retry_in_ms = delay, "webhook processing failed; will retry");
        }
    }
    Ok(())
}

/// 1 s, 2 s, 4 s, … up to five minutes.
fn retry_delay_ms(previous_attempts: i32) -> i64 {
    let exponent = previous_attempts.clamp(0, 20) as u32;
    1000i64.saturating_mul(1i64 << exponent).min(MAX_RETRY_DELAY_MS)
}

fn record_metrics(outcome: &RowOutcome) {
    for status in &outcome.statuses {
        metrics::counter!("careline_webhook_statuses_total", "status" => *status).increment(1);
    }
    for action in &outcome.inbound {
        metrics::counter!("careline_webhook_inbound_total", "action" => *action).increment(1);
    }
    if outcome.duplicates > 0 {
        metrics::counter!("careline_webhook_inbound_duplicates_total").increment(outcome.duplicates);
    }
}

/// Handles every status and message of one body, in the caller's transaction.
async fn handle_row(conn: &mut PgConnection, row: &InboxRow, inbound: &InboundContext) -> sqlx::Result<RowOutcome> {
    let envelope = match WebhookEnvelope::parse(&row.body) {
        Ok(envelope) => envelope,
        Err(error) => return Ok(RowOutcome { note: Some(format!("unreadable body: {error}")), ..Default::default() }),
    };
    let mut outcome = RowOutcome::default();
    for (_, status) in envelope.statuses() {
        outcome.statuses.push(record_status(conn, row, status).await?);
        crate::audit_trail::status_received(conn, status).await?;
    }
    for (metadata, message) in envelope.messages() {
        let phone_number_id = metadata.and_then(|m| m.phone_number_id.as_deref()).unwrap_or("");
        match record_inbound(conn, row, phone_number_id, message, inbound).await? {
            Some(action) => outcome.inbound.push(action.as_str()),
            None => outcome.duplicates += 1,
        }
    }
    for (_, error) in envelope.errors() {
        tracing::warn!(inbox_id = row.inbox_id, code = error.code, "webhook reports an error");
    }
    Ok(outcome)
}

fn unix_time(secs: Option<i64>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0)).unwrap_or(fallback)
}

/// Records one status; returns its label for metrics.
async fn record_status(conn: &mut PgConnection, row: &InboxRow, status: &Status) -> sqlx::Result<&'static str> {
    let Some(wamid) = status.id.as_deref().filter(|id| !id.is_empty()) else {
        tracing::warn!(inbox_id = row.inbox_id, "status without a message id ignored");
        return Ok("other");
    };
    let Some(kind) = status.status.as_deref().and_then(DeliveryStatus::parse) else {
        let reported: String = status.status.as_deref().unwrap_or("").chars().take(32).collect();
        tracing::info!(inbox_id = row.inbox_id, status = %reported, "untracked status ignored");
        return Ok("other");
    };
    let job_id = match status.biz_opaque_callback_data.as_deref().and_then(|d| Uuid::parse_str(d.trim()).ok()) {
        Some(job_id) => Some(job_id),
        None => webhooks::job_id_for_wamid(&mut *conn, wamid).await?,
    };
    let span = status_span(&mut *conn, job_id, wamid, kind).await?;
    record_status_event(conn, row, status, wamid, kind, job_id).instrument(span).await?;
    Ok(kind.as_str())
}

/// The span of one status: a child of the job's `job.due` publish (stored by the scheduler),
/// so the status lands in the trace that planned and sent the message, linked to the span of
/// the inbox row that carried it. Without a stored context it is a child of the row's span.
async fn status_span(
    conn: &mut PgConnection,
    job_id: Option<Uuid>,
    wamid: &str,
    kind: DeliveryStatus,
) -> sqlx::Result<tracing::Span> {
    let traceparent = match job_id {
        Some(job_id) => careline_store::jobs::dispatched_traceparent(&mut *conn, job_id).await?,
        None => None,
    };
    let inbox_span = tracing::Span::current().context().span().span_context().clone();
    let span = tracing::info_span!(
        "whatsapp.status",
        otel.name = "process whatsapp.status",
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.message.id = %wamid,
        whatsapp.status = kind.as_str(),
        job_id = job_id.map(tracing::field::display),
    );
    if traceparent.is_some() {
        careline_telemetry::trace_context::set_parent_from_traceparent(&span, traceparent.as_deref());
        if inbox_span.is_valid() {
            span.add_link(inbox_span);
        }
    }
    Ok(span)
}

async fn record_status_event(
    conn: &mut PgConnection,
    row: &InboxRow,
    status: &Status,
    wamid: &str,
    kind: DeliveryStatus,
    job_id: Option<Uuid>,
) -> sqlx::Result<()> {
    let error = status.errors.first();
    let event = NewStatusEvent {
        wamid,
        status: kind.as_str(),
        status_rank: kind.rank(),
        job_id,
        occurred_at: unix_time(status.timestamp_secs(), row.received_at),
        error_code: error.and_then(|e| e.code).and_then(|c| i32::try_from(c).ok()),
        error_title: error.and_then(|e| e.title.as_deref()),
        error_detail: error.and_then(|e| e.details().or(e.message.as_deref())),
        inbox_id: row.inbox_id,
    };
    let first_for_wamid = !webhooks::has_status_events(&mut *conn, wamid).await?;
    let new_event = webhooks::insert_status_event(&mut *conn, &event).await?;
    webhooks::advance_delivery(&mut *conn, &event).await?;
    if new_event && let Some(job_id) = job_id {
        let reconciled = crate::reconcile::apply(&mut *conn, job_id, wamid, kind, error, first_for_wamid).await?;
        if let Some(reconciled) = reconciled {
            metrics::counter!("careline_webhook_reconciled_total", "outcome" => reconciled.as_str()).increment(1);
            if reconciled == crate::reconcile::Reconciled::Duplicate {
                metrics::counter!("careline_webhook_duplicate_sends_total").increment(1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_five_minutes() {
        assert_eq!(retry_delay_ms(0), 1000);
        assert_eq!(retry_delay_ms(1), 2000);
        assert_eq!(retry_delay_ms(3), 8000);
        assert_eq!(retry_delay_ms(30), MAX_RETRY_DELAY_MS);
        assert_eq!(retry_delay_ms(-1), 1000);
    }
}
