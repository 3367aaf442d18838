//! `careline jobs timeline|resend`: one message job, read from PostgreSQL, and re-sending a job
//! whose send failed.
//!
//! **`jobs resend JOB_ID`** is for a job the sender settled as `failed` (Meta refused it for
//! good, retries ran out, or it could not be built) once the cause is fixed — a template
//! approved again, a number re-registered. It **may contact the patient again**: the sender
//! will call WhatsApp for this job once more. Exactly what it does:
//!
//! 1. in one transaction, locks the job's `jobs` and `sends` rows (the sender's statements on
//!    the job wait meanwhile);
//! 2. checks the job is `enqueued` (dispatched) and its `sends` row is `failed`, and refuses
//!    otherwise: `accepted` (Meta took it: a resend would message the patient twice),
//!    `unknown` (Meta may have taken it), `suppressed` (not sent on purpose: consent,
//!    cancelled, stale), `sending` (in progress), no row and no earlier resend (never taken
//!    on), or a job that was revoked, skipped or not yet due;
//! 3. copies the `sends` row and all its `send_attempts` into `send_resets` (the audit keeps
//!    what was tried), deletes them, so the sender sees the job as never taken on, and commits;
//! 4. publishes a new `job.due` (publisher confirm), in the trace the job was planned in. It
//!    publishes after the commit so the sender never reads the old `failed` row for it; if the
//!    broker refuses, the job is left without a row and running the resend again publishes it
//!    (a job without a row that was reset before may always be published again: the sender
//!    sends a job once).
//!
//! The sender then re-checks everything as for any job — consent, opt-out, cancellation,
//! generation, appointment already started — so a resend never goes out where a first send
//! would not. Attempts start again from 1 (`SENDER_MAX_ATTEMPTS` apply afresh).

use std::io::Write;

use careline_bus::Publisher;
use careline_domain::events::{Envelope, Event, JobDue};
use careline_store::PgPool;
use careline_store::sends::SendState;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Context;

/// `careline jobs …`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Everything that happened to one job: plan, dispatch, send attempts, statuses, replies.
    Timeline {
        /// The job's id (`jobs.job_id`, also the message's `biz_opaque_callback_data`).
        job_id: Uuid,
    },
    /// Re-sends a job whose send failed (may contact the patient again; see `--help`).
    #[command(long_about = "Re-sends a job whose send failed, after its cause is fixed. \
        MAY CONTACT THE PATIENT AGAIN. Refuses unless the job was dispatched and the sender \
        settled it as `failed`. Moves the failed send and its attempts to `send_resets`, then \
        publishes a new job.due; the sender re-checks consent and validity before sending.")]
    Resend {
        /// The job's id.
        job_id: Uuid,
        /// Who asks, for the audit (default: $USER).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

/// Runs one `jobs` command, printing to `out`.
pub async fn run(command: Command, context: &Context, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = context.pool()?;
    match command {
        Command::Timeline { job_id } => {
            let timeline = timeline(&pool, job_id).await?;
            let j = &timeline.job;
            writeln!(
                out,
                "job {} ({}, generation {}) of appointment {}",
                j.job_id, j.kind, j.generation, j.appointment_id
            )?;
            writeln!(out, "state {}, due {}", j.state, j.due_at.to_rfc3339())?;
            for entry in &timeline.entries {
                writeln!(out, "{}  {:<10} {}", entry.at.to_rfc3339(), entry.source, entry.what)?;
            }
        }
        Command::Resend { job_id, by } => {
            let resent = resend(&pool, context, job_id, &by).await?;
            writeln!(
                out,
                "job {job_id}: failed send ({}, {} attempt(s)) moved to send_resets; job.due {} published. \
                 The sender will re-check and may message the patient again.",
                resent.previous_reason.as_deref().unwrap_or("no reason"),
                resent.previous_attempts,
                resent.message_id
            )?;
        }
    }
    Ok(())
}

/// The `jobs` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: Uuid,
    pub appointment_id: String,
    pub generation: i32,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub state: String,
    pub reason: Option<String>,
    pub claims: i32,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub planned_traceparent: Option<String>,
}

/// One thing that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// Which table says so: `scheduler`, `sender`, `webhook`, `operator`.
    pub source: &'static str,
    /// What happened, with ids, states and codes only.
    pub what: String,
}

/// A job and its history, oldest first.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub job: JobRow,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("no job {0}")]
    UnknownJob(Uuid),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

const JOB_COLUMNS: &str = "job_id, appointment_id, generation, kind, due_at, state, reason, claims, enqueued_at, \
                           created_at, updated_at, planned_traceparent";

/// Reads the job, its send, attempts, resets, statuses and replies.
pub async fn timeline(pool: &PgPool, job_id: Uuid) -> Result<Timeline, TimelineError> {
    let job: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1")))
        .bind(job_id)
        .fetch_optional(pool)
        .await?
        .ok_or(TimelineError::UnknownJob(job_id))?;
    let mut entries = Vec::new();
    let mut add = |at: DateTime<Utc>, source: &'static str, what: String| entries.push(Entry { at, source, what });

    match job.state.as_str() {
        "skipped" => add(job.created_at, "scheduler", format!("skipped: {}", job.reason.as_deref().unwrap_or("-"))),
        _ => add(job.created_at, "scheduler", format!("planned, due {}", job.due_at.to_rfc3339())),
    }
    if let Some(at) = job.enqueued_at {
        add(at, "scheduler", format!("dispatched (job.due published; claimed {} time(s))", job.claims));
    }
    if job.state == "revoked" {
        add(job.updated_at, "scheduler", format!("revoked: {}", job.reason.as_deref().unwrap_or("-")));
    }

    type ResetRow = (DateTime<Utc>, String, Option<String>, Option<String>, Uuid);
    let resets: Vec<ResetRow> = sqlx::query_as(
        "SELECT reset_at, reset_by, previous_send->>'state', previous_send->>'reason', message_id
         FROM send_resets WHERE job_id = $1 ORDER BY reset_id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    for (at, by, state, reason, message_id) in resets {
        add(
            at,
            "operator",
            format!(
                "resend by {by}: previous send {} ({}) archived, job.due {message_id} published",
                state.as_deref().unwrap_or("-"),
                reason.as_deref().unwrap_or("-")
            ),
        );
    }

    type SendRow = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i32>,
        i32,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let send: Option<SendRow> = sqlx::query_as(
        "SELECT state, reason, phone_number_id, template_name, language, wamid, error_code, attempts, created_at, updated_at
         FROM sends WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let wamid = send.as_ref().and_then(|s| s.5.clone());
    if let Some((state, reason, number, template, language, wamid, code, attempts, created, updated)) = send {
        add(
            created,
            "sender",
            format!(
                "taken on: template {} ({}) from number {}",
                template.as_deref().unwrap_or("-"),
                language.as_deref().unwrap_or("-"),
                number.as_deref().unwrap_or("-")
            ),
        );
        let outcome = match state.as_str() {
            "accepted" => format!("accepted by Meta, wamid {}", wamid.as_deref().unwrap_or("-")),
            "sending" => format!("still sending ({attempts} call(s) started)"),
            other => format!(
                "{other}: {}{}",
                reason.as_deref().unwrap_or("-"),
                code.map(|c| format!(" (Meta error {c})")).unwrap_or_default()
            ),
        };
        add(updated, "sender", outcome);
    }

    type AttemptRow = (i32, DateTime<Utc>, Option<i32>, Option<i32>, String, Option<i32>);
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, attempted_at, http_status, error_code, outcome, latency_ms
         FROM send_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    for (attempt, at, http, code, outcome, latency) in attempts {
        let mut what = format!("call {attempt}: {outcome}");
        if let Some(http) = http {
            what.push_str(&format!(", HTTP {http}"));
        }
        if let Some(code) = code {
            what.push_str(&format!(", Meta error {code}"));
        }
        if let Some(ms) = latency {
            what.push_str(&format!(", {ms} ms"));
        }
        add(at, "sender", what);
    }

    type StatusRow = (String, String, DateTime<Utc>, Option<i32>, Option<String>);
    let statuses: Vec<StatusRow> = sqlx::query_as(
        "SELECT wamid, status, occurred_at, error_code, error_title FROM message_status_events
         WHERE job_id = $1 OR wamid = $2 ORDER BY occurred_at, status",
    )
    .bind(job_id)
    .bind(wamid)
    .fetch_all(pool)
    .await?;
    for (wamid, status, at, code, title) in statuses {
        let mut what = format!("status {status} (wamid {wamid})");
        if let Some(code) = code {
            what.push_str(&format!(": error {code} {}", title.as_deref().unwrap_or("")));
        }
        add(at, "webhook", what);
    }

    let replies: Vec<(String, DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT message_id, received_at, kind, action FROM inbound_messages WHERE job_id = $1 ORDER BY received_at",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    for (message_id, at, kind, action) in replies {
        add(at, "webhook", format!("patient replied: {action} ({kind} message {message_id})"));
    }

    // Stable: entries of one instant keep the order they were added in.
    entries.sort_by_key(|e| e.at);
    Ok(Timeline { job, entries })
}

/// Why a job cannot be re-sent.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no job {0}")]
    UnknownJob(Uuid),
    #[error("job {job_id} is {state}: only a dispatched job whose send failed can be re-sent{detail}")]
    JobNotSent { job_id: Uuid, state: String, detail: String },
    #[error("job {0} has no send: the sender has not taken it on (yet); nothing to re-send")]
    NeverSent(Uuid),
    #[error("job {0} was accepted by Meta (wamid {1}); re-sending would message the patient twice")]
    Accepted(Uuid, String),
    #[error(
        "job {0}'s outcome is unknown: Meta may have accepted it; re-sending could message the patient twice \
         (check its statuses with `careline jobs timeline`)"
    )]
    OutcomeUnknown(Uuid),
    #[error("job {0} was suppressed on purpose ({1}); it must not be re-sent")]
    Suppressed(Uuid, String),
    #[error("job {0} is being sent right now; try again when it has settled")]
    InProgress(Uuid),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}; nothing was changed")]
    Publish(#[from] careline_bus::PublishError),
}

/// What a resend did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resent {
    /// The reason the failed send gave.
    pub previous_reason: Option<String>,
    /// Calls recorded for the failed send (now in `send_resets`).
    pub previous_attempts: i64,
    /// The new `job.due` message.
    pub message_id: Uuid,
}

/// Re-sends a failed job; see the module doc for every step and refusal.
pub async fn resend(pool: &PgPool, context: &Context, job_id: Uuid, by: &str) -> Result<Resent, ResendError> {
    let mut tx = pool.begin().await?;
    let job: JobRow =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1 FOR UPDATE")))
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ResendError::UnknownJob(job_id))?;
    if job.state != "enqueued" {
        let detail = job.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        return Err(ResendError::JobNotSent { job_id, state: job.state, detail });
    }
    // The row lock keeps the sender's statements on this job waiting until the reset commits.
    let send: Option<(String, Option<String>, Option<String>, i32)> =
        sqlx::query_as("SELECT state, reason, wamid, recorded_attempts FROM sends WHERE job_id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
    // No row after an earlier resend: that resend's publish failed, or the sender has not
    // taken the job on yet. Publishing `job.due` again is harmless then (the sender sends a job
    // once). No row and no earlier resend: the sender never took the job on.
    let (previous_reason, previous_attempts) = match send {
        None => {
            let reset_before: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM send_resets WHERE job_id = $1)")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
            if !reset_before {
                return Err(ResendError::NeverSent(job_id));
            }
            (None, 0)
        }
        Some((state, reason, wamid, recorded)) => {
            match SendState::parse(&state) {
                Some(SendState::Failed) => {}
                Some(SendState::Accepted) => return Err(ResendError::Accepted(job_id, wamid.unwrap_or_default())),
                Some(SendState::Unknown) => return Err(ResendError::OutcomeUnknown(job_id)),
                Some(SendState::Suppressed) => return Err(ResendError::Suppressed(job_id, reason.unwrap_or_default())),
                Some(SendState::Sending) | None => return Err(ResendError::InProgress(job_id)),
            }
            (reason, i64::from(recorded))
        }
    };

    let envelope = Envelope::new(
        Event::JobDue(JobDue {
            job_id,
            appointment_id: job.appointment_id.clone(),
            generation: job.generation,
            kind: job.kind.clone(),
            due_at: job.due_at,
        }),
        Utc::now(),
    );
    sqlx::query(
        "INSERT INTO send_resets (job_id, reset_by, previous_send, previous_attempts, message_id)
         SELECT s.job_id, $2, to_jsonb(s),
                COALESCE((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.attempt) FROM send_attempts a WHERE a.job_id = s.job_id),
                         '[]'::jsonb),
                $3
         FROM sends s WHERE s.job_id = $1",
    )
    .bind(job_id)
    .bind(by)
    .bind(envelope.message_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM send_attempts WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM sends WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
    tx.commit().await?;

    // Published after the commit, so the sender never reads the failed row for this message. If
    // the broker refuses, the job is left without a row: running the resend again publishes it.
    let publisher = Publisher::new(context.bus.clone(), "careline-cli");
    publisher.publish_traced(&[(&envelope, job.planned_traceparent.as_deref())]).await?;
    tracing::info!(%job_id, message_id = %envelope.message_id, by, "failed job re-sent");
    Ok(Resent { previous_reason, previous_attempts, message_id: envelope.message_id })
}
