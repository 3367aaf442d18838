//! Owned by the sender: `sends` and `send_attempts`, plus the read-only view of jobs,
//! appointments and patients the sender needs right before it sends.
//!
//! The idempotency protocol (see the sender crate's docs):
//! - a `sends` row is written (state `sending`) before the first WhatsApp call and committed,
//!   so a redelivered job finds it and is never sent blindly a second time;
//! - `sends.attempts` is raised to `n` (committed) right *before* call `n` goes on the wire,
//!   and the `send_attempts` row for `n` is written right *after* the answer. A `sending` row
//!   whose `attempts` exceeds its recorded attempts therefore had a call on the wire when its
//!   owner died: its outcome is unknown. Equal counts mean nothing was on the wire;
//! - while a job is being worked on, its owner holds a transaction-scoped advisory lock
//!   ([`try_lock_job`]); the lock dies with the owner's connection, so "someone alive is
//!   working on it" and "its owner crashed" are told apart.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Where a job stands in the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Taken on; a WhatsApp call may be under way.
    Sending,
    /// Meta accepted the message (wamid known).
    Accepted,
    /// Meta refused it for good, or it could not be built.
    Failed,
    /// Not sent on purpose (no consent, stale job, …).
    Suppressed,
    /// A call may have been accepted but the answer was lost; never resent blindly.
    Unknown,
}

impl SendState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Accepted => "accepted",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sending" => Self::Sending,
            "accepted" => Self::Accepted,
            "failed" => Self::Failed,
            "suppressed" => Self::Suppressed,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// Every state but `sending` is final for the sender.
    pub fn is_final(self) -> bool {
        self != Self::Sending
    }
}

/// A `sends` row with the number of attempts whose answer was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRow {
    pub job_id: Uuid,
    pub state: SendState,
    pub reason: Option<String>,
    pub wamid: Option<String>,
    /// Calls started (raised before each call goes on the wire).
    pub attempts: i32,
    /// Calls whose answer (or failure) is recorded in `send_attempts`.
    pub recorded_attempts: i32,
}

impl SendRow {
    /// Whether a call was on the wire when the row's owner stopped.
    pub fn call_in_flight(&self) -> bool {
        self.attempts > self.recorded_attempts
    }
}

/// Everything the sender reads about a job right before acting, in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendContext {
    pub job_id: Uuid,
    pub job_state: String,
    pub job_generation: i32,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub appointment_id: String,
    pub appointment_status: String,
    pub appointment_generation: i32,
    pub starts_at: DateTime<Utc>,
    pub clinician: Option<String>,
    pub facility_id: String,
    pub patient_id: String,
    /// `None` when the patient is unknown.
    pub patient: Option<PatientContact>,
}

/// The contact facts a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientContact {
    pub first_name: Option<String>,
    pub phone_e164: String,
    pub language: String,
}

type ContextRow = (
    Uuid,
    String,
    i32,
    String,
    DateTime<Utc>,
    String,
    String,
    i32,
    DateTime<Utc>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Loads job, appointment and patient in one read; `None` when the job does not exist.
pub async fn load_send_context(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<SendContext>> {
    let row: Option<ContextRow> = sqlx::query_as(
        "SELECT j.job_id, j.state, j.generation, j.kind, j.due_at,
                a.appointment_id, a.status, a.generation, a.starts_at, a.clinician, a.facility_id, a.patient_id,
                p.first_name, p.phone_e164, p.language
         FROM jobs j
         JOIN appointments a ON a.appointment_id = j.appointment_id
         LEFT JOIN patients p ON p.patient_id = a.patient_id
         WHERE j.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| SendContext {
        job_id: r.0,
        job_state: r.1,
        job_generation: r.2,
        kind: r.3,
        due_at: r.4,
        appointment_id: r.5,
        appointment_status: r.6,
        appointment_generation: r.7,
        starts_at: r.8,
        clinician: r.9,
        facility_id: r.10,
        patient_id: r.11,
        patient: match (r.13, r.14) {
            (Some(phone_e164), Some(language)) => Some(PatientContact { first_name: r.12, phone_e164, language }),
            _ => None,
        },
    }))
}

/// Takes the job's processing lock for the life of the transaction `lock` is in; `false` when
/// another live session holds it. The lock is released at commit/rollback, or when the
/// connection closes (a crashed owner).
pub async fn try_lock_job(lock: &mut PgConnection, job_id: Uuid) -> sqlx::Result<bool> {
    // Namespaced so another table's advisory locks on the same uuid never collide.
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended('careline.sends:' || $1::text, 0))")
        .bind(job_id)
        .fetch_one(lock)
        .await
}

/// The job's `sends` row, if any.
pub async fn find(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<SendRow>> {
    type Row = (Uuid, String, Option<String>, Option<String>, i32, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.job_id, s.state, s.reason, s.wamid, s.attempts,
                (SELECT count(*) FROM send_attempts a WHERE a.job_id = s.job_id)
         FROM sends s WHERE s.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(job_id, state, reason, wamid, attempts, recorded)| SendRow {
        job_id,
        // The CHECK constraint admits only the five states.
        state: SendState::parse(&state).unwrap_or(SendState::Unknown),
        reason,
        wamid,
        attempts,
        recorded_attempts: i32::try_from(recorded).unwrap_or(i32::MAX),
    }))
}

/// What is about to be sent.
#[derive(Debug, Clone)]
pub struct NewSend<'a> {
    pub job_id: Uuid,
    pub phone_number_id: &'a str,
    pub template_name: &'a str,
    pub language: &'a str,
}

/// Writes the `sending` row before the first call. Returns `false` if a row already existed
/// (which is left untouched).
pub async fn insert_sending(db: impl PgExecutor<'_>, send: &NewSend<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO sends (job_id, state, phone_number_id, template_name, language)
         VALUES ($1, 'sending', $2, $3, $4)
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(send.job_id)
    .bind(send.phone_number_id)
    .bind(send.template_name)
    .bind(send.language)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records that nothing will be sent for this job (`suppressed`) or that it could not even be
/// built (`failed`), without a call in flight. Overwrites only a `sending` row (whose owner
/// holds the job's lock and has checked that no call is on the wire).
pub async fn record_without_call(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    state: SendState,
    reason: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO sends (job_id, state, reason) VALUES ($1, $2, $3)
         ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, updated_at = now()
         WHERE sends.state = 'sending'",
    )
    .bind(job_id)
    .bind(state.as_str())
    .bind(reason)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Marks call `attempt` as going on the wire (committed before the HTTP request).
pub async fn start_attempt(db: impl PgExecutor<'_>, job_id: Uuid, attempt: i32) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET attempts = $2, updated_at = now() WHERE job_id = $1 AND state = 'sending' AND attempts < $2",
    )
    .bind(job_id)
    .bind(attempt)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// One call and what came of it.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub job_id: Uuid,
    pub attempt: i32,
    pub http_status: Option<i32>,
    pub error_code: Option<i32>,
    /// `accepted`, or the error class (`retry`, `permanent`, `outcome_unknown`, …).
    pub outcome: &'a str,
    pub latency_ms: i32,
}

/// Appends a `send_attempts` row (idempotent per (job, attempt)).
pub async fn record_attempt(db: impl PgExecutor<'_>, a: &AttemptRecord<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO send_attempts (job_id, attempt, http_status, error_code, outcome, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.http_status)
    .bind(a.error_code)
    .bind(a.outcome)
    .bind(a.latency_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// Meta accepted the message. Also settles a row marked `unknown` meanwhile (the acceptance
/// is the better knowledge).
pub async fn finish_accepted(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    wamid: &str,
    message_status: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET state = 'accepted', reason = NULL, wamid = $2, message_status = $3, updated_at = now()
         WHERE job_id = $1 AND state IN ('sending', 'unknown')",
    )
    .bind(job_id)
    .bind(wamid)
    .bind(message_status)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The send ended without acceptance: `failed` (refused for good) or `unknown` (the answer
/// was lost). Only a `sending` row moves.
pub async fn finish_unsent(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    state: SendState,
    reason: &str,
    error_code: Option<i32>,
    error_detail: Option<&str>,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET state = $2, reason = $3, error_code = $4, error_detail = $5, updated_at = now()
         WHERE job_id = $1 AND state = 'sending'",
    )
    .bind(job_id)
    .bind(state.as_str())
    .bind(reason)
    .bind(error_code)
    .bind(error_detail)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// [`record_attempt`] and [`finish_accepted`] in one statement: a crash can never leave the
/// accepted call recorded while the row still says `sending` (a successor would take that for
/// a job between calls and send it again).
pub async fn record_accepted_attempt(
    db: impl PgExecutor<'_>,
    a: &AttemptRecord<'_>,
    wamid: &str,
    message_status: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "WITH attempt AS (
             INSERT INTO send_attempts (job_id, attempt, http_status, error_code, outcome, latency_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE sends SET state = 'accepted', reason = NULL, wamid = $7, message_status = $8, updated_at = now()
         WHERE job_id = $1 AND state IN ('sending', 'unknown')",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.http_status)
    .bind(a.error_code)
    .bind(a.outcome)
    .bind(a.latency_ms)
    .bind(wamid)
    .bind(message_status)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// [`record_attempt`] and [`finish_unsent`] in one statement, for the same reason as
/// [`record_accepted_attempt`]: an `unknown` outcome recorded without its final row would be
/// resent by a successor.
pub async fn record_final_unsent_attempt(
    db: impl PgExecutor<'_>,
    a: &AttemptRecord<'_>,
    state: SendState,
    reason: &str,
    error_detail: Option<&str>,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "WITH attempt AS (
             INSERT INTO send_attempts (job_id, attempt, http_status, error_code, outcome, latency_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE sends SET state = $7, reason = $8, error_code = $4, error_detail = $9, updated_at = now()
         WHERE job_id = $1 AND state = 'sending'",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.http_status)
    .bind(a.error_code)
    .bind(a.outcome)
    .bind(a.latency_ms)
    .bind(state.as_str())
    .bind(reason)
    .bind(error_detail)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}
