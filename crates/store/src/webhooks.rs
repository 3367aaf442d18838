//! The webhook-consumer's tables: `webhook_inbox`, `message_status_events`, `message_delivery`,
//! `inbound_messages` and `webhook_outbox`, plus the read-only lookups it needs (`sends`,
//! `jobs`/`appointments`, `patients`).
//!
//! The protocol these queries implement:
//! - **Inbox.** Every signed POST is inserted as raw bytes before Meta gets its 200, then
//!   processed later. A row is claimed with `FOR UPDATE SKIP LOCKED` (so replicas never process
//!   the same row at once), handled in the same transaction, and marked `processed_at`. A row
//!   that fails is given `attempts + 1`, its `last_error` and a `retry_at` in the future; it is
//!   never deleted or skipped for good.
//! - **Statuses.** `message_status_events` keeps each `(wamid, status)` once; `message_delivery`
//!   only moves forward by rank (sent 1 < delivered 2 < read 3 < failed 4), so out-of-order or
//!   repeated webhooks cannot make a message look less delivered, and a failure keeps its error.
//! - **Inbound messages.** Keyed by Meta's message id; a repeat inserts nothing and the caller
//!   skips every side effect.
//! - **Outbox.** Events to publish are inserted in the transaction that produced them, published
//!   after commit and marked `published_at`; unpublished rows are picked up again later.

use careline_domain::events::Envelope;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One stored webhook POST.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub inbox_id: i64,
    pub received_at: DateTime<Utc>,
    pub body: Vec<u8>,
    pub attempts: i32,
}

/// Stores a webhook body exactly as received. Returns its `inbox_id`.
pub async fn insert_inbox(db: impl PgExecutor<'_>, body: &[u8]) -> sqlx::Result<i64> {
    sqlx::query_scalar("INSERT INTO webhook_inbox (body) VALUES ($1) RETURNING inbox_id").bind(body).fetch_one(db).await
}

/// Claims the oldest unprocessed row that is due and not locked by another replica. The lock
/// lasts until the caller's transaction ends.
pub async fn claim_next_inbox(conn: &mut PgConnection) -> sqlx::Result<Option<InboxRow>> {
    sqlx::query_as(
        "SELECT inbox_id, received_at, body, attempts FROM webhook_inbox
         WHERE processed_at IS NULL AND (retry_at IS NULL OR retry_at <= now())
         ORDER BY inbox_id
         LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await
}

/// Marks a row done. `note` is kept in `last_error` (a body that could not be read at all is
/// done, not retried: retrying cannot make it readable).
pub async fn mark_inbox_processed(db: impl PgExecutor<'_>, inbox_id: i64, note: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_inbox SET processed_at = now(), attempts = attempts + 1, last_error = COALESCE($2, last_error)
         WHERE inbox_id = $1",
    )
    .bind(inbox_id)
    .bind(note)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a failed attempt; the row becomes claimable again after `retry_in_ms`.
pub async fn record_inbox_failure(
    db: impl PgExecutor<'_>,
    inbox_id: i64,
    error: &str,
    retry_in_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_inbox
         SET attempts = attempts + 1, last_error = $2, retry_at = now() + make_interval(secs => $3::float8 / 1000)
         WHERE inbox_id = $1 AND processed_at IS NULL",
    )
    .bind(inbox_id)
    .bind(error)
    .bind(retry_in_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// When the oldest unprocessed body arrived (`None` when the inbox is empty).
pub async fn oldest_pending_received_at(db: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT received_at FROM webhook_inbox WHERE processed_at IS NULL ORDER BY inbox_id LIMIT 1")
        .fetch_optional(db)
        .await
}

/// One `statuses[]` item to record.
#[derive(Debug, Clone)]
pub struct NewStatusEvent<'a> {
    pub wamid: &'a str,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: &'a str,
    /// [`careline_domain::status::DeliveryStatus::rank`].
    pub status_rank: i16,
    pub job_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub error_code: Option<i32>,
    pub error_title: Option<&'a str>,
    pub error_detail: Option<&'a str>,
    pub inbox_id: i64,
}

/// Whether any status of this wamid was recorded before.
pub async fn has_status_events(db: impl PgExecutor<'_>, wamid: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM message_status_events WHERE wamid = $1)")
        .bind(wamid)
        .fetch_one(db)
        .await
}

/// Records a status event once per `(wamid, status)`. Returns whether it was new.
pub async fn insert_status_event(db: impl PgExecutor<'_>, e: &NewStatusEvent<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO message_status_events (wamid, status, job_id, occurred_at, error_code, error_title, error_detail, inbox_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (wamid, status) DO NOTHING",
    )
    .bind(e.wamid)
    .bind(e.status)
    .bind(e.job_id)
    .bind(e.occurred_at)
    .bind(e.error_code)
    .bind(e.error_title)
    .bind(e.error_detail)
    .bind(e.inbox_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Moves a message's delivery state forward: a status of lower or equal rank than the stored
/// one changes nothing (so `failed`, the highest, keeps its error). Returns whether it moved.
pub async fn advance_delivery(db: impl PgExecutor<'_>, e: &NewStatusEvent<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO message_delivery (wamid, job_id, status, status_rank, error_code, error_detail, status_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (wamid) DO UPDATE SET
             status = excluded.status,
             status_rank = excluded.status_rank,
             job_id = COALESCE(excluded.job_id, message_delivery.job_id),
             error_code = excluded.error_code,
             error_detail = excluded.error_detail,
             status_at = excluded.status_at,
             updated_at = now()
         WHERE message_delivery.status_rank < excluded.status_rank",
    )
    .bind(e.wamid)
    .bind(e.job_id)
    .bind(e.status)
    .bind(e.status_rank)
    .bind(e.error_code)
    .bind(e.error_detail.or(e.error_title))
    .bind(e.occurred_at)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// One inbound patient message, without its text.
#[derive(Debug, Clone)]
pub struct NewInboundMessage<'a> {
    pub message_id: &'a str,
    pub phone_number_id: &'a str,
    pub from_e164: &'a str,
    pub received_at: DateTime<Utc>,
    /// Meta's message `type` (`text`, `button`, `interactive`, …).
    pub kind: &'a str,
    /// [`careline_domain::reply::ReplyAction::as_str`].
    pub action: &'a str,
    pub context_wamid: Option<&'a str>,
    pub job_id: Option<Uuid>,
    pub appointment_id: Option<&'a str>,
    pub inbox_id: i64,
}

/// Records an inbound message once. Returns `false` if Meta delivered it before (the caller then
/// skips every side effect).
pub async fn insert_inbound_message(db: impl PgExecutor<'_>, m: &NewInboundMessage<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO inbound_messages
             (message_id, phone_number_id, from_e164, received_at, kind, action, context_wamid, job_id, appointment_id, inbox_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(m.message_id)
    .bind(m.phone_number_id)
    .bind(m.from_e164)
    .bind(m.received_at)
    .bind(m.kind)
    .bind(m.action)
    .bind(m.context_wamid)
    .bind(m.job_id)
    .bind(m.appointment_id)
    .bind(m.inbox_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The job a sent message belongs to, by its wamid (read from the sender's `sends`).
pub async fn job_id_for_wamid(db: impl PgExecutor<'_>, wamid: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT job_id FROM sends WHERE wamid = $1").bind(wamid).fetch_optional(db).await
}

/// What a reply is about: the job's appointment and its facility.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobContext {
    pub appointment_id: String,
    pub facility_id: String,
}

/// The appointment and facility of a job (read from the scheduler's `jobs` and `appointments`).
pub async fn job_context(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<JobContext>> {
    sqlx::query_as(
        "SELECT a.appointment_id, a.facility_id FROM jobs j
         JOIN appointments a ON a.appointment_id = j.appointment_id
         WHERE j.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await
}

/// Every patient reached at this number (read from the scheduler's `patients`).
pub async fn patient_ids_by_phone(db: impl PgExecutor<'_>, phone_e164: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT patient_id FROM patients WHERE phone_e164 = $1 ORDER BY patient_id")
        .bind(phone_e164)
        .fetch_all(db)
        .await
}

/// Queues an event for publishing, in the caller's transaction. Idempotent by `message_id`.
pub async fn enqueue_outbox(db: impl PgExecutor<'_>, envelope: &Envelope) -> sqlx::Result<()> {
    let json = serde_json::to_value(envelope).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO webhook_outbox (event_id, envelope) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
        .bind(envelope.message_id)
        .bind(json)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks up to `limit` unpublished events, oldest first, skipping those another replica holds.
/// Rows whose envelope no longer decodes are returned as `Err` so the caller can report them.
pub async fn claim_unpublished(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Result<Envelope, serde_json::Error>)>> {
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT event_id, envelope FROM webhook_outbox
         WHERE published_at IS NULL
         ORDER BY created_at, event_id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id, json)| (id, serde_json::from_value(json))).collect())
}

/// Marks events published.
pub async fn mark_published(db: impl PgExecutor<'_>, event_ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("UPDATE webhook_outbox SET published_at = now() WHERE event_id = ANY($1)")
        .bind(event_ids)
        .execute(db)
        .await?;
    Ok(())
}
