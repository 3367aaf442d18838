//! `customer_service_windows` and `service_replies`, written by the webhook-consumer.
//!
//! The protocol of a service reply (STOP/START acknowledgement, HELP answer):
//! 1. Queued as `pending` in the transaction that records the inbound message asking for it
//!    (unique per inbound message: one answer, however often the webhook is replayed).
//! 2. Claimed with `FOR UPDATE SKIP LOCKED`; if the 24 h window of that number has closed it
//!    ends `window_closed`, else it is marked `sending` and committed *before* the call.
//! 3. After the call: `sent` with the wamid, `pending` again with a backoff for a retryable
//!    error, `failed` otherwise, or `unknown` when the answer was lost. A row found in
//!    `sending` after a crash is marked `unknown` and never sent again (the Cloud API has no
//!    idempotency key).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// How long a customer-service window stays open after the patient's last message.
pub const SERVICE_WINDOW: Duration = Duration::hours(24);
/// A row left in `sending` longer than this was abandoned by a stopped process.
const ABANDONED_AFTER: Duration = Duration::minutes(2);

/// Opens or extends the window of a (business number, patient number) pair.
pub async fn touch_window(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    phone_e164: &str,
    inbound_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO customer_service_windows (phone_number_id, phone_e164, last_inbound_at)
         VALUES ($1, $2, $3)
         ON CONFLICT (phone_number_id, phone_e164) DO UPDATE
         SET last_inbound_at = GREATEST(customer_service_windows.last_inbound_at, excluded.last_inbound_at),
             updated_at = now()",
    )
    .bind(phone_number_id)
    .bind(phone_e164)
    .bind(inbound_at)
    .execute(db)
    .await?;
    Ok(())
}

/// When the window closes (`None`: never opened).
pub async fn window_closes_at(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    phone_e164: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_inbound_at FROM customer_service_windows WHERE phone_number_id = $1 AND phone_e164 = $2",
    )
    .bind(phone_number_id)
    .bind(phone_e164)
    .fetch_optional(db)
    .await?;
    Ok(last.map(|at| at + SERVICE_WINDOW))
}

/// A free-form answer to queue.
#[derive(Debug, Clone)]
pub struct NewServiceReply<'a> {
    pub inbound_message_id: &'a str,
    pub kind: &'a str,
    pub phone_number_id: &'a str,
    pub to_e164: &'a str,
    pub facility_id: Option<&'a str>,
    pub language: &'a str,
}

/// Queues an answer; `None` if this inbound message already has one.
pub async fn enqueue(db: impl PgExecutor<'_>, r: &NewServiceReply<'_>) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO service_replies (reply_id, inbound_message_id, kind, phone_number_id, to_e164, facility_id, language, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')
         ON CONFLICT (inbound_message_id) DO NOTHING
         RETURNING reply_id",
    )
    .bind(Uuid::now_v7())
    .bind(r.inbound_message_id)
    .bind(r.kind)
    .bind(r.phone_number_id)
    .bind(r.to_e164)
    .bind(r.facility_id)
    .bind(r.language)
    .fetch_optional(db)
    .await
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ServiceReply {
    pub reply_id: Uuid,
    pub inbound_message_id: String,
    pub kind: String,
    pub phone_number_id: String,
    pub to_e164: Option<String>,
    pub facility_id: Option<String>,
    pub language: String,
    pub state: String,
    pub attempts: i32,
    pub wamid: Option<String>,
    pub error_code: Option<i32>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "reply_id, inbound_message_id, kind, phone_number_id, to_e164, facility_id, language, state,
                       attempts, wamid, error_code, created_at";

/// Marks abandoned `sending` rows `unknown`; returns how many.
pub async fn expire_abandoned(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE service_replies SET state = 'unknown', updated_at = now()
         WHERE state = 'sending' AND updated_at < now() - make_interval(secs => $1)",
    )
    .bind(ABANDONED_AFTER.num_seconds() as f64)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Claims the oldest due `pending` answer (locked until the transaction ends).
pub async fn claim_due(conn: &mut PgConnection) -> sqlx::Result<Option<ServiceReply>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM service_replies
         WHERE state = 'pending' AND retry_at <= now()
         ORDER BY retry_at, created_at
         LIMIT 1
         FOR UPDATE SKIP LOCKED"
    )))
    .fetch_optional(conn)
    .await
}

/// Moves an answer to `state` (`sending` counts an attempt).
pub async fn set_state(
    db: impl PgExecutor<'_>,
    reply_id: Uuid,
    state: &str,
    wamid: Option<&str>,
    error_code: Option<i32>,
    retry_in: Option<Duration>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE service_replies
         SET state = $2,
             attempts = attempts + CASE WHEN $2 = 'sending' THEN 1 ELSE 0 END,
             wamid = COALESCE($3, wamid),
             error_code = COALESCE($4, error_code),
             retry_at = now() + make_interval(secs => COALESCE($5, 0)),
             updated_at = now()
         WHERE reply_id = $1",
    )
    .bind(reply_id)
    .bind(state)
    .bind(wamid)
    .bind(error_code)
    .bind(retry_in.map(|d| d.num_milliseconds() as f64 / 1000.0))
    .execute(db)
    .await?;
    Ok(())
}

/// Every answer to a number, oldest first (tests and the export).
pub async fn for_phone(db: impl PgExecutor<'_>, phone_e164: &str) -> sqlx::Result<Vec<ServiceReply>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM service_replies WHERE to_e164 = $1 ORDER BY created_at"
    )))
    .bind(phone_e164)
    .fetch_all(db)
    .await
}

/// The language of the patients reached at a number (the most recently reported one).
pub async fn language_for_phone(db: impl PgExecutor<'_>, phone_e164: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT language FROM patients WHERE phone_e164 = $1 ORDER BY reported_at DESC LIMIT 1")
        .bind(phone_e164)
        .fetch_optional(db)
        .await
}
