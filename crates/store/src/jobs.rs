//! `jobs`, written by the scheduler: planned messages, their lease and their dispatch.
//!
//! Dispatch protocol: `claim_due` moves due jobs (and jobs whose lease ran out) to `claimed`
//! with a lease, in one statement with `FOR UPDATE SKIP LOCKED`, committed at once, so several
//! replicas never claim the same job; the claimer publishes them with confirms, then
//! `mark_enqueued`. A replica that dies between claim and mark leaves the lease to expire and
//! the job is claimed again (the sender's idempotency makes the second publish harmless).

use chrono::{DateTime, Duration, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

pub struct NewJob<'a> {
    pub job_id: Uuid,
    pub appointment_id: &'a str,
    pub generation: i32,
    pub kind: &'a str,
    pub due_at: DateTime<Utc>,
    /// `planned`, or `skipped` with a reason.
    pub state: &'a str,
    pub reason: Option<&'a str>,
    /// W3C `traceparent` of the span planning the job; the dispatch continues that trace.
    pub traceparent: Option<&'a str>,
}

/// Inserts a planned job; a job already planned for this appointment, generation and kind is
/// kept as it is (replayed events plan nothing twice). Returns whether a row was written.
pub async fn insert(db: impl PgExecutor<'_>, job: &NewJob<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state, reason, planned_traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (appointment_id, generation, kind) DO NOTHING",
    )
    .bind(job.job_id)
    .bind(job.appointment_id)
    .bind(job.generation)
    .bind(job.kind)
    .bind(job.due_at)
    .bind(job.state)
    .bind(job.reason)
    .bind(job.traceparent)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Revokes every job of the appointment not yet handed to the sender for good — planned,
/// claimed, and enqueued too (the sender re-checks the job state before sending). Returns how
/// many were revoked. `kinds_like` limits it (e.g. `reminder_%`); `%` for all.
pub async fn revoke_pending(
    db: impl PgExecutor<'_>,
    appointment_id: &str,
    kinds_like: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'revoked', reason = $3, locked_by = NULL, locked_until = NULL, updated_at = now()
         WHERE appointment_id = $1 AND kind LIKE $2 AND state IN ('planned', 'claimed', 'enqueued')",
    )
    .bind(appointment_id)
    .bind(kinds_like)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub job_id: Uuid,
    pub appointment_id: String,
    pub generation: i32,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    /// Where the job was planned in a trace (see [`NewJob::traceparent`]).
    pub planned_traceparent: Option<String>,
}

/// Claims up to `limit` jobs due at `now` for `worker`, leased for `lease`.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> sqlx::Result<Vec<ClaimedJob>> {
    sqlx::query_as(
        "WITH due AS (
            SELECT job_id FROM jobs
            WHERE (state = 'planned' AND due_at <= $1) OR (state = 'claimed' AND locked_until < $1)
            ORDER BY due_at
            LIMIT $4
            FOR UPDATE SKIP LOCKED
         )
         UPDATE jobs j SET state = 'claimed', locked_by = $2, locked_until = $1 + $3, claims = j.claims + 1,
                           updated_at = now()
         FROM due WHERE j.job_id = due.job_id
         RETURNING j.job_id, j.appointment_id, j.generation, j.kind, j.due_at, j.planned_traceparent",
    )
    .bind(now)
    .bind(worker)
    .bind(lease)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks claimed jobs as handed to the broker. Jobs revoked meanwhile stay revoked.
/// `dispatched_traceparents` (same order as `job_ids`, or empty) are the `job.due` publish
/// spans; statuses of the message are traced under them.
pub async fn mark_enqueued(
    db: impl PgExecutor<'_>,
    job_ids: &[Uuid],
    dispatched_traceparents: &[Option<String>],
    worker: &str,
) -> sqlx::Result<u64> {
    let traceparents: Vec<Option<String>> =
        (0..job_ids.len()).map(|i| dispatched_traceparents.get(i).cloned().flatten()).collect();
    let result = sqlx::query(
        "UPDATE jobs j SET state = 'enqueued', enqueued_at = now(), locked_by = NULL, locked_until = NULL,
                           dispatched_traceparent = t.traceparent, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[]) AS t(job_id, traceparent)
         WHERE j.job_id = t.job_id AND j.state = 'claimed' AND j.locked_by = $3",
    )
    .bind(job_ids)
    .bind(&traceparents)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Where the message of a job was dispatched in a trace, if tracing was on.
pub async fn dispatched_traceparent(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT dispatched_traceparent FROM jobs WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

/// Returns claimed jobs to `planned` (publishing failed), so any replica may retry them now.
pub async fn release(db: impl PgExecutor<'_>, job_ids: &[Uuid], worker: &str) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'planned', locked_by = NULL, locked_until = NULL, updated_at = now()
         WHERE job_id = ANY($1) AND state = 'claimed' AND locked_by = $2",
    )
    .bind(job_ids)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
