//! Owned by the sender: `sends`, `send_attempts` and the limit tables (`number_budget`,
//! `recipient_pacing`, `business_numbers`, `portfolio_recipients`), plus the read-only view of
//! jobs, appointments and patients the sender needs right before it sends.
//!
//! Every statement here takes a whole batch of jobs (arrays through `unnest`): the sender's
//! bookkeeping costs a few statements per batch, not per message.
//!
//! The idempotency protocol (see the sender crate's docs):
//! - a job is **claimed** by one statement that, for a recipient whose pair interval has
//!   passed at the claimed send slot, raises `sends.attempts` to `n`, and sets `owner` and
//!   `lease_until`. It is committed before call `n` goes on the wire. A claim succeeds only on
//!   a row that is free (no live lease) and has no call whose answer is missing;
//! - the **outcome** of call `n` is written with its `send_attempts` row and the new state in
//!   one statement, which raises `recorded_attempts` to `n` and ends the lease. So
//!   `attempts > recorded_attempts` means a call was on the wire when its owner stopped: its
//!   outcome is unknown and the job is never resent blindly;
//! - a row whose lease is live belongs to a sender that is alive; a lease that ran out belongs
//!   to one that stopped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Where a job stands in the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Taken on; a WhatsApp call may be under way, or a retry is waiting.
    Sending,
    /// Meta accepted the message (wamid known).
    Accepted,
    /// Meta refused it for good, it could not be built, or its retries ran out.
    Failed,
    /// Not sent on purpose (no consent, stale job, too late, …).
    Suppressed,
    /// A call may have been accepted but the answer was lost: waiting for a status webhook
    /// carrying the job id, then resent at most the configured number of times.
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

    /// Accepted, failed and suppressed are final; `sending` and `unknown` are not.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Accepted | Self::Failed | Self::Suppressed)
    }
}

/// A `sends` row as the sender sees it before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRow {
    pub state: SendState,
    pub reason: Option<String>,
    /// Calls started.
    pub attempts: i32,
    /// Calls whose answer (or loss) is recorded.
    pub recorded_attempts: i32,
    /// A live sender owns the row right now.
    pub leased: bool,
    pub unknown_since: Option<DateTime<Utc>>,
    /// Times the job was sent again after an unknown outcome.
    pub resends: i32,
    /// Recorded calls Meta answered with 131056 (pair rate limit).
    pub pair_limit_hits: i32,
}

impl SendRow {
    /// Whether a call was on the wire when the row's owner stopped.
    pub fn call_in_flight(&self) -> bool {
        self.attempts > self.recorded_attempts
    }
}

/// The contact facts a template may use, and what limits know of the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientContact {
    pub first_name: Option<String>,
    pub phone_e164: String,
    pub language: String,
    /// SHA-256 of the E.164 number (hex): the key of the recipient limits.
    pub recipient_key: String,
    /// Meta said the number cannot receive WhatsApp messages (131026).
    pub unreachable: bool,
    /// Several patients are reached at this number: address none of them by name.
    pub shared_number: bool,
}

/// Everything the sender reads about a job right before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendContext {
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

/// One job of a batch: its context (`None` for an unknown job), its `sends` row, and the
/// recipient's standing with the shared limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub job_id: Uuid,
    pub context: Option<SendContext>,
    pub send: Option<SendRow>,
    /// Slot time of the last message to this recipient, from any replica.
    pub pair_last_at: Option<DateTime<Utc>>,
    /// Portfolios that messaged this recipient in the last 24 h (no new tier slot needed).
    pub tier_portfolios: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    job_id: Uuid,
    job_state: Option<String>,
    job_generation: Option<i32>,
    kind: Option<String>,
    due_at: Option<DateTime<Utc>>,
    appointment_id: Option<String>,
    appointment_status: Option<String>,
    appointment_generation: Option<i32>,
    starts_at: Option<DateTime<Utc>>,
    clinician: Option<String>,
    facility_id: Option<String>,
    patient_id: Option<String>,
    first_name: Option<String>,
    phone_e164: Option<String>,
    language: Option<String>,
    recipient_key: Option<String>,
    unreachable: Option<bool>,
    shared_number: Option<bool>,
    send_state: Option<String>,
    send_reason: Option<String>,
    attempts: Option<i32>,
    recorded_attempts: Option<i32>,
    leased: Option<bool>,
    unknown_since: Option<DateTime<Utc>>,
    resends: Option<i32>,
    pair_limit_hits: Option<i64>,
    pair_last_at: Option<DateTime<Utc>>,
    tier_portfolios: Option<Vec<String>>,
}

/// Loads the [`JobView`] of every job in `job_ids` in one query, in the same order.
pub async fn load_views(db: impl PgExecutor<'_>, job_ids: &[Uuid]) -> sqlx::Result<Vec<JobView>> {
    let rows: Vec<ViewRow> = sqlx::query_as(
        "SELECT i.job_id, j.state AS job_state, j.generation AS job_generation, j.kind, j.due_at,
                a.appointment_id, a.status AS appointment_status, a.generation AS appointment_generation,
                a.starts_at, a.clinician, a.facility_id, a.patient_id,
                p.first_name, p.phone_e164, p.language, p.recipient_key,
                p.whatsapp_unreachable_at IS NOT NULL AS unreachable,
                (SELECT count(*) > 1 FROM patients other WHERE other.phone_e164 = p.phone_e164) AS shared_number,
                s.state AS send_state, s.reason AS send_reason, s.attempts, s.recorded_attempts,
                s.lease_until > clock_timestamp() AS leased, s.unknown_since, s.resends,
                (SELECT count(*) FROM send_attempts sa WHERE sa.job_id = i.job_id AND sa.error_code = 131056)
                    AS pair_limit_hits,
                rp.last_at AS pair_last_at,
                (SELECT array_agg(pr.portfolio) FROM portfolio_recipients pr
                  WHERE pr.recipient_key = p.recipient_key AND pr.last_at > now() - interval '24 hours')
                    AS tier_portfolios
         FROM unnest($1::uuid[]) WITH ORDINALITY AS i(job_id, n)
         LEFT JOIN jobs j ON j.job_id = i.job_id
         LEFT JOIN appointments a ON a.appointment_id = j.appointment_id
         LEFT JOIN patients p ON p.patient_id = a.patient_id
         LEFT JOIN sends s ON s.job_id = i.job_id
         LEFT JOIN recipient_pacing rp ON rp.recipient_key = p.recipient_key
         ORDER BY i.n",
    )
    .bind(job_ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(ViewRow::into_view).collect())
}

impl ViewRow {
    fn into_view(self) -> JobView {
        let send = self.send_state.as_deref().map(|state| SendRow {
            // The CHECK constraint admits only the five states.
            state: SendState::parse(state).unwrap_or(SendState::Unknown),
            reason: self.send_reason.clone(),
            attempts: self.attempts.unwrap_or(0),
            recorded_attempts: self.recorded_attempts.unwrap_or(0),
            leased: self.leased.unwrap_or(false),
            unknown_since: self.unknown_since,
            resends: self.resends.unwrap_or(0),
            pair_limit_hits: i32::try_from(self.pair_limit_hits.unwrap_or(0)).unwrap_or(i32::MAX),
        });
        let patient = match (self.phone_e164, self.language, self.recipient_key) {
            (Some(phone_e164), Some(language), Some(recipient_key)) => Some(PatientContact {
                first_name: self.first_name,
                phone_e164,
                language,
                recipient_key,
                unreachable: self.unreachable.unwrap_or(false),
                shared_number: self.shared_number.unwrap_or(false),
            }),
            _ => None,
        };
        let context = match (
            self.job_state,
            self.job_generation,
            self.kind,
            self.due_at,
            self.appointment_id,
            self.appointment_status,
            self.appointment_generation,
            self.starts_at,
            self.facility_id,
            self.patient_id,
        ) {
            (
                Some(job_state),
                Some(job_generation),
                Some(kind),
                Some(due_at),
                Some(appointment_id),
                Some(appointment_status),
                Some(appointment_generation),
                Some(starts_at),
                Some(facility_id),
                Some(patient_id),
            ) => Some(SendContext {
                job_state,
                job_generation,
                kind,
                due_at,
                appointment_id,
                appointment_status,
                appointment_generation,
                starts_at,
                clinician: self.clinician,
                facility_id,
                patient_id,
                patient,
            }),
            _ => None,
        };
        JobView {
            job_id: self.job_id,
            context,
            send,
            pair_last_at: self.pair_last_at,
            tier_portfolios: self.tier_portfolios.unwrap_or_default(),
        }
    }
}

/// A job that ends without a call (or without a further call): `suppressed` or `failed`.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub job_id: Uuid,
    pub state: SendState,
    pub reason: String,
    pub error_code: Option<i32>,
    pub error_detail: Option<String>,
}

/// Writes final rows for jobs settled without a call in flight. Only a row that is free (no
/// live lease) and not final moves. Returns the job ids written.
pub async fn settle_without_call(db: impl PgExecutor<'_>, settlements: &[Settlement]) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = settlements.iter().map(|s| s.job_id).collect();
    let states: Vec<&str> = settlements.iter().map(|s| s.state.as_str()).collect();
    let reasons: Vec<&str> = settlements.iter().map(|s| s.reason.as_str()).collect();
    let codes: Vec<Option<i32>> = settlements.iter().map(|s| s.error_code).collect();
    let details: Vec<Option<&str>> = settlements.iter().map(|s| s.error_detail.as_deref()).collect();
    sqlx::query_scalar(
        "INSERT INTO sends AS s (job_id, state, reason, error_code, error_detail)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[])
         ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
             error_code = EXCLUDED.error_code, error_detail = EXCLUDED.error_detail,
             owner = NULL, lease_until = NULL, updated_at = now()
         WHERE s.state IN ('sending', 'unknown') AND s.attempts = s.recorded_attempts
           AND (s.lease_until IS NULL OR s.lease_until < clock_timestamp())
         RETURNING s.job_id",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&reasons)
    .bind(&codes)
    .bind(&details)
    .fetch_all(db)
    .await
}

/// A job about to be sent at a leased slot.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: Uuid,
    pub phone_number_id: String,
    pub template_name: String,
    pub language: String,
    pub recipient_key: String,
    pub portfolio: String,
    pub lane: &'static str,
    /// When the call goes out (PostgreSQL's clock, from the number's budget lease).
    pub slot_at: DateTime<Utc>,
    /// `sends.attempts` as the view saw it (0 when there was no row).
    pub seen_attempts: i32,
    /// Whether the view saw an `unknown` row (this claim is a resend).
    pub resend: bool,
}

/// What became of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimResult {
    /// The job is ours until the lease ends: call number `attempt` may go.
    Claimed { attempt: i32 },
    /// Another message to this recipient is less than the pair interval from this slot.
    RecipientBusy,
    /// The row moved since it was read (another sender, a status webhook): read it again.
    Lost,
}

/// Claims a batch of jobs (see the module doc). Recipients must be distinct within one call.
/// The pair check, the claim, and the recipient's place in its portfolio's 24 h window are one
/// statement, committed before any of the calls.
pub async fn claim(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    lease: Duration,
    pair_interval: Duration,
    claims: &[Claim],
) -> sqlx::Result<Vec<ClaimResult>> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
    let numbers: Vec<&str> = claims.iter().map(|c| c.phone_number_id.as_str()).collect();
    let templates: Vec<&str> = claims.iter().map(|c| c.template_name.as_str()).collect();
    let languages: Vec<&str> = claims.iter().map(|c| c.language.as_str()).collect();
    let recipients: Vec<&str> = claims.iter().map(|c| c.recipient_key.as_str()).collect();
    let portfolios: Vec<&str> = claims.iter().map(|c| c.portfolio.as_str()).collect();
    let lanes: Vec<&str> = claims.iter().map(|c| c.lane).collect();
    let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| c.slot_at).collect();
    let seen: Vec<i32> = claims.iter().map(|c| c.seen_attempts).collect();
    let resend: Vec<bool> = claims.iter().map(|c| c.resend).collect();
    let rows: Vec<(Uuid, bool, Option<i32>)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::timestamptz[], $9::int[], $10::bool[])
                 AS t(job_id, phone_number_id, template_name, language, recipient_key, portfolio,
                      lane, slot_at, seen_attempts, resend)
         ),
         paced AS (
             INSERT INTO recipient_pacing AS rp (recipient_key, last_at)
             SELECT recipient_key, slot_at FROM input
             ON CONFLICT (recipient_key) DO UPDATE SET last_at = EXCLUDED.last_at
             WHERE rp.last_at <= EXCLUDED.last_at - $11 * interval '1 microsecond'
             RETURNING recipient_key
         ),
         claimed AS (
             INSERT INTO sends AS s (job_id, state, phone_number_id, template_name, language, recipient_key,
                                     lane, attempts, owner, lease_until)
             SELECT i.job_id, 'sending', i.phone_number_id, i.template_name, i.language, i.recipient_key,
                    i.lane, 1, $12, clock_timestamp() + $13 * interval '1 microsecond'
             FROM input i JOIN paced USING (recipient_key)
             ON CONFLICT (job_id) DO UPDATE SET
                 state = 'sending', attempts = s.attempts + 1, owner = EXCLUDED.owner,
                 lease_until = EXCLUDED.lease_until, phone_number_id = EXCLUDED.phone_number_id,
                 template_name = EXCLUDED.template_name, language = EXCLUDED.language,
                 recipient_key = EXCLUDED.recipient_key, lane = EXCLUDED.lane,
                 resends = s.resends + CASE WHEN s.state = 'unknown' THEN 1 ELSE 0 END,
                 updated_at = now()
             WHERE s.attempts = s.recorded_attempts
               AND (s.state = 'sending' OR s.state = 'unknown')
               AND (s.lease_until IS NULL OR s.lease_until < clock_timestamp())
             RETURNING s.job_id, s.attempts
         ),
         windowed AS (
             INSERT INTO portfolio_recipients AS pr (portfolio, recipient_key, last_at)
             SELECT i.portfolio, i.recipient_key, i.slot_at FROM input i JOIN claimed c USING (job_id)
             ON CONFLICT (portfolio, recipient_key) DO UPDATE SET last_at = greatest(pr.last_at, EXCLUDED.last_at)
         )
         SELECT i.job_id, p.recipient_key IS NOT NULL, c.attempts
         FROM input i
         LEFT JOIN paced p USING (recipient_key)
         LEFT JOIN claimed c USING (job_id)",
    )
    .bind(&ids)
    .bind(&numbers)
    .bind(&templates)
    .bind(&languages)
    .bind(&recipients)
    .bind(&portfolios)
    .bind(&lanes)
    .bind(&slots)
    .bind(&seen)
    .bind(&resend)
    .bind(micros(pair_interval))
    .bind(owner)
    .bind(micros(lease))
    .fetch_all(db)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, ClaimResult> = rows
        .into_iter()
        .map(|(id, paced, attempt)| {
            let result = match (paced, attempt) {
                (_, Some(attempt)) => ClaimResult::Claimed { attempt },
                (false, None) => ClaimResult::RecipientBusy,
                (true, None) => ClaimResult::Lost,
            };
            (id, result)
        })
        .collect();
    Ok(claims.iter().map(|c| by_id.remove(&c.job_id).unwrap_or(ClaimResult::Lost)).collect())
}

/// Gives back a claim whose call never left (the sender is stopping): the attempt is taken
/// back and the lease ended, so the next sender takes the job over at once instead of treating
/// it as interrupted. Returns whether the row was still the claim's.
pub async fn release_claim(db: impl PgExecutor<'_>, job_id: Uuid, owner: Uuid, attempt: i32) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET attempts = attempts - 1, owner = NULL, lease_until = NULL, updated_at = now()
         WHERE job_id = $1 AND owner = $2 AND attempts = $3 AND state = 'sending'",
    )
    .bind(job_id)
    .bind(owner)
    .bind(attempt)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A claimed job moved to a later slot: the recipient's pacing follows, so the next message's
/// claim measures the pair interval from when this one really leaves.
pub async fn repace(db: impl PgExecutor<'_>, recipient_key: &str, slot_at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query("UPDATE recipient_pacing SET last_at = greatest(last_at, $2) WHERE recipient_key = $1")
        .bind(recipient_key)
        .bind(slot_at)
        .execute(db)
        .await?;
    Ok(())
}

/// What came of call `attempt` of a job.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub job_id: Uuid,
    /// The owner id of the claim that made the call.
    pub owner: Uuid,
    pub attempt: i32,
    pub http_status: Option<i32>,
    pub error_code: Option<i32>,
    /// `accepted`, or the error class (`retry`, `permanent`, `outcome_unknown`, …).
    pub outcome: String,
    pub latency_ms: i32,
    /// The row's new state; `Sending` keeps the job open for a later retry.
    pub state: SendState,
    pub wamid: Option<String>,
    pub message_status: Option<String>,
    pub reason: Option<String>,
    pub error_detail: Option<String>,
}

/// Records the calls of a batch: each `send_attempts` row and its `sends` update in one
/// statement, ending the claim's lease. Returns the job ids whose row was still the claim's.
pub async fn record_outcomes(db: impl PgExecutor<'_>, outcomes: &[CallOutcome]) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.job_id).collect();
    let owners: Vec<Uuid> = outcomes.iter().map(|o| o.owner).collect();
    let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
    let statuses: Vec<Option<i32>> = outcomes.iter().map(|o| o.http_status).collect();
    let codes: Vec<Option<i32>> = outcomes.iter().map(|o| o.error_code).collect();
    let kinds: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    let latencies: Vec<i32> = outcomes.iter().map(|o| o.latency_ms).collect();
    let states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    let wamids: Vec<Option<&str>> = outcomes.iter().map(|o| o.wamid.as_deref()).collect();
    let message_statuses: Vec<Option<&str>> = outcomes.iter().map(|o| o.message_status.as_deref()).collect();
    let reasons: Vec<Option<&str>> = outcomes.iter().map(|o| o.reason.as_deref()).collect();
    let details: Vec<Option<&str>> = outcomes.iter().map(|o| o.error_detail.as_deref()).collect();
    sqlx::query_scalar(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::text[], $6::int[], $7::text[],
                                  $8::text[], $9::text[], $10::text[], $11::text[], $12::uuid[])
                 AS t(job_id, attempt, http_status, error_code, outcome, latency_ms, state, wamid,
                      message_status, reason, error_detail, owner)
         ),
         attempt_rows AS (
             INSERT INTO send_attempts (job_id, attempt, http_status, error_code, outcome, latency_ms)
             SELECT job_id, attempt, http_status, error_code, outcome, latency_ms FROM input
             ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE sends s SET
             -- An unknown outcome whose status webhook came while the call was in flight is an
             -- acceptance: the webhook named the message.
             state = CASE WHEN i.state = 'unknown' AND s.observed_wamid IS NOT NULL THEN 'accepted' ELSE i.state END,
             recorded_attempts = i.attempt,
             wamid = CASE WHEN i.state = 'unknown' AND s.observed_wamid IS NOT NULL THEN s.observed_wamid
                          ELSE coalesce(i.wamid, s.wamid) END,
             message_status = coalesce(i.message_status, s.message_status),
             reason = CASE WHEN i.state = 'unknown' AND s.observed_wamid IS NOT NULL
                           THEN 'reconciled from a status webhook' ELSE i.reason END,
             duplicates = s.duplicates + CASE WHEN i.state = 'accepted' AND s.observed_wamid IS NOT NULL
                                               AND s.observed_wamid <> i.wamid THEN 1 ELSE 0 END,
             error_code = i.error_code,
             error_detail = i.error_detail,
             unknown_since = CASE WHEN i.state = 'unknown' AND s.observed_wamid IS NULL THEN clock_timestamp()
                                  ELSE s.unknown_since END,
             owner = NULL,
             lease_until = NULL,
             updated_at = now()
         FROM input i
         WHERE s.job_id = i.job_id AND s.owner = i.owner AND s.attempts = i.attempt AND s.state = 'sending'
         RETURNING s.job_id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&statuses)
    .bind(&codes)
    .bind(&kinds)
    .bind(&latencies)
    .bind(&states)
    .bind(&wamids)
    .bind(&message_statuses)
    .bind(&reasons)
    .bind(&details)
    .bind(&owners)
    .fetch_all(db)
    .await
}

/// A job whose owner stopped with call `attempts` on the wire: recorded as an `interrupted`
/// attempt, the job is `unknown` (Meta may have the message). Only a row whose lease ran out
/// moves. Returns whether it did.
pub async fn mark_interrupted(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "WITH stale AS (
             SELECT job_id, attempts FROM sends
             WHERE job_id = $1 AND state = 'sending' AND attempts > recorded_attempts
               AND (lease_until IS NULL OR lease_until < clock_timestamp())
             FOR UPDATE
         ),
         attempt_row AS (
             INSERT INTO send_attempts (job_id, attempt, outcome)
             SELECT job_id, attempts, 'interrupted' FROM stale
             ON CONFLICT (job_id, attempt) DO NOTHING
         )
         UPDATE sends s SET state = 'unknown', reason = 'owner stopped while a call was in flight',
             recorded_attempts = s.attempts, unknown_since = clock_timestamp(), owner = NULL,
             lease_until = NULL, updated_at = now()
         FROM stale WHERE s.job_id = stale.job_id",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Unknown outcomes whose wait for a status webhook is over: `(job_id, resends)`, oldest first.
pub async fn unknown_outcomes_due(
    db: impl PgExecutor<'_>,
    window: Duration,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String, i32, String, DateTime<Utc>, i32)>> {
    sqlx::query_as(
        "SELECT s.job_id, j.appointment_id, j.generation, j.kind, j.due_at, s.resends
         FROM sends s JOIN jobs j ON j.job_id = s.job_id
         WHERE s.state = 'unknown' AND s.unknown_since < clock_timestamp() - $1 * interval '1 microsecond'
         ORDER BY s.unknown_since
         LIMIT $2",
    )
    .bind(micros(window))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A status webhook proved that Meta accepted the job's message: an `unknown` row becomes
/// `accepted` with that wamid. Returns whether it did.
pub async fn reconcile_accepted(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    wamid: &str,
    status: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET state = 'accepted', reason = 'reconciled from a status webhook', wamid = $2,
             message_status = $3, unknown_since = NULL, updated_at = now()
         WHERE job_id = $1 AND state = 'unknown' AND owner IS NULL
           AND NOT EXISTS (SELECT 1 FROM sends other WHERE other.wamid = $2)",
    )
    .bind(job_id)
    .bind(wamid)
    .bind(status)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A status webhook names a job whose call is still in flight (or waiting for a retry) with a
/// wamid the row does not hold yet: the wamid is kept (the first one wins) so the call's
/// outcome can be settled by it. Returns whether it was kept.
pub async fn observe_wamid(db: impl PgExecutor<'_>, job_id: Uuid, wamid: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET observed_wamid = $2, updated_at = now()
         WHERE job_id = $1 AND state = 'sending' AND observed_wamid IS NULL AND wamid IS DISTINCT FROM $2",
    )
    .bind(job_id)
    .bind(wamid)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A status webhook names a job through `biz_opaque_callback_data` but carries another wamid
/// than the one recorded for it: Meta holds two messages for one job (only possible after a
/// resend that followed an unknown outcome). Counted once per wamid on the job's row.
pub async fn count_duplicate(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE sends SET duplicates = duplicates + 1, updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// What a status webhook needs to know of a job's send.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SendSummary {
    pub wamid: Option<String>,
    pub state: String,
    pub phone_number_id: Option<String>,
    pub appointment_id: String,
    pub generation: i32,
    pub kind: String,
    pub due_at: DateTime<Utc>,
}

/// The job's send row and the fields of its `job.due`, if it has a row.
pub async fn summary(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Option<SendSummary>> {
    sqlx::query_as(
        "SELECT s.wamid, s.state, s.phone_number_id, j.appointment_id, j.generation, j.kind, j.due_at
         FROM sends s JOIN jobs j ON j.job_id = s.job_id WHERE s.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await
}

/// A message that Meta accepted then reported `failed` asynchronously, with a code the sender
/// may retry: the row goes back to `sending` with no lease, so the next `job.due` takes it on.
/// Returns whether it did.
pub async fn reopen_after_async_failure(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    error_code: Option<i32>,
    detail: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET state = 'sending', reason = 'failed asynchronously; retrying', error_code = $2,
             error_detail = $3, wamid = NULL, owner = NULL, lease_until = NULL, updated_at = now()
         WHERE job_id = $1 AND state IN ('accepted', 'unknown') AND attempts = recorded_attempts",
    )
    .bind(job_id)
    .bind(error_code)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// An accepted message that Meta reported `failed` for good: the row becomes `failed` with the
/// code's class as reason.
pub async fn fail_after_async_failure(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    reason: &str,
    error_code: Option<i32>,
    detail: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sends SET state = 'failed', reason = $2, error_code = $3, error_detail = $4, updated_at = now()
         WHERE job_id = $1 AND state IN ('accepted', 'unknown')",
    )
    .bind(job_id)
    .bind(reason)
    .bind(error_code)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Leased send slots of one business number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLease {
    /// The first slot (PostgreSQL's clock).
    pub first: DateTime<Utc>,
    /// Time between slots (doubled while the number is slowed down).
    pub period: Duration,
    /// PostgreSQL's clock when the lease was taken.
    pub db_now: DateTime<Utc>,
}

/// Leases the next `n` send slots of a number whose ceiling gives one slot per `period`. The
/// first is at least `lead` from now. Slots never overlap those leased by anyone else.
pub async fn lease_slots(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    n: u32,
    period: Duration,
    lead: Duration,
) -> sqlx::Result<SlotLease> {
    let (next, factor, db_now): (DateTime<Utc>, i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO number_budget AS b (phone_number_id, next_slot)
         VALUES ($1, clock_timestamp() + $4 * interval '1 microsecond' + $2 * $3 * interval '1 microsecond')
         ON CONFLICT (phone_number_id) DO UPDATE SET next_slot =
             greatest(b.next_slot, clock_timestamp() + $4 * interval '1 microsecond')
             + $2 * $3 * CASE WHEN b.slow_until > clock_timestamp() THEN 2 ELSE 1 END * interval '1 microsecond'
         RETURNING next_slot, CASE WHEN slow_until > clock_timestamp() THEN 2 ELSE 1 END, clock_timestamp()",
    )
    .bind(phone_number_id)
    .bind(i64::from(n))
    .bind(micros(period))
    .bind(micros(lead))
    .fetch_one(db)
    .await?;
    let period = period * u32::try_from(factor).unwrap_or(1);
    let span = chrono::Duration::from_std(period * n).unwrap_or_default();
    Ok(SlotLease { first: next - span, period, db_now })
}

/// Halves a number's slot rate for `for_how_long` (Meta answered 130429), for every replica.
pub async fn slow_down_number(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    for_how_long: Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO number_budget AS b (phone_number_id, next_slot, slow_until)
         VALUES ($1, clock_timestamp(), clock_timestamp() + $2 * interval '1 microsecond')
         ON CONFLICT (phone_number_id) DO UPDATE
         SET slow_until = greatest(b.slow_until, clock_timestamp() + $2 * interval '1 microsecond')",
    )
    .bind(phone_number_id)
    .bind(micros(for_how_long))
    .execute(db)
    .await?;
    Ok(())
}

/// Pauses a business number (Meta answered a code every further send would get too).
pub async fn pause_number(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    code: Option<i32>,
    reason: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO business_numbers AS b (phone_number_id, paused_at, paused_code, paused_reason)
         VALUES ($1, now(), $2, $3)
         ON CONFLICT (phone_number_id) DO UPDATE SET paused_at = now(), paused_code = $2, paused_reason = $3,
             updated_at = now()
         WHERE b.paused_at IS NULL",
    )
    .bind(phone_number_id)
    .bind(code)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Resumes a paused business number. Returns whether it was paused.
pub async fn resume_number(db: impl PgExecutor<'_>, phone_number_id: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE business_numbers SET paused_at = NULL, resumed_at = now(), updated_at = now()
         WHERE phone_number_id = $1 AND paused_at IS NOT NULL",
    )
    .bind(phone_number_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A paused number: id, since when, Meta's code and the reason.
pub type PausedNumber = (String, DateTime<Utc>, Option<i32>, Option<String>);

/// Every paused business number.
pub async fn paused_numbers(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<PausedNumber>> {
    sqlx::query_as(
        "SELECT phone_number_id, paused_at, paused_code, paused_reason FROM business_numbers
         WHERE paused_at IS NOT NULL ORDER BY phone_number_id",
    )
    .fetch_all(db)
    .await
}

/// Marks a patient's number as unable to receive WhatsApp messages (131026).
pub async fn mark_unreachable(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE patients p SET whatsapp_unreachable_at = now()
         FROM jobs j JOIN appointments a ON a.appointment_id = j.appointment_id
         WHERE j.job_id = $1 AND p.patient_id = a.patient_id AND p.whatsapp_unreachable_at IS NULL",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Unique recipients per portfolio in the last 24 h (Meta's messaging tier).
pub async fn tier_usage(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT portfolio, count(*) FROM portfolio_recipients WHERE last_at > now() - interval '24 hours'
         GROUP BY portfolio",
    )
    .fetch_all(db)
    .await
}

/// Forgets pacing and tier rows too old to matter (the pair interval, and 24 h).
pub async fn forget_old_limits(db: impl PgExecutor<'_> + Copy, pair_interval: Duration) -> sqlx::Result<u64> {
    let paced =
        sqlx::query("DELETE FROM recipient_pacing WHERE last_at < clock_timestamp() - $1 * interval '1 microsecond'")
            .bind(micros(pair_interval * 2))
            .execute(db)
            .await?
            .rows_affected();
    let windowed = sqlx::query("DELETE FROM portfolio_recipients WHERE last_at < now() - interval '25 hours'")
        .execute(db)
        .await?
        .rows_affected();
    Ok(paced + windowed)
}

/// How far inside Meta's limits Careline stays by default (1.5 %): see the sender's `limits`.
pub const DEFAULT_HEADROOM: f64 = 0.015;

/// The slot period of a number whose ceiling is `mps`, `headroom` (a fraction) inside it.
pub fn slot_period(mps: u32, headroom: f64) -> Duration {
    Duration::from_secs(1).div_f64(f64::from(mps.max(1)) * (1.0 - headroom)).max(Duration::from_nanos(1000))
}

/// Takes the recipient's turn at `slot_at` if the previous message to it (from any sender) is
/// at least `pair_interval` earlier: the same check as [`claim`], for messages that are not
/// jobs (the webhook-consumer's STOP / START / HELP answers). Returns whether it was free.
pub async fn take_recipient_turn(
    db: impl PgExecutor<'_>,
    recipient_key: &str,
    slot_at: DateTime<Utc>,
    pair_interval: Duration,
) -> sqlx::Result<bool> {
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO recipient_pacing AS rp (recipient_key, last_at) VALUES ($1, $2)
         ON CONFLICT (recipient_key) DO UPDATE SET last_at = EXCLUDED.last_at
         WHERE rp.last_at <= EXCLUDED.last_at - $3 * interval '1 microsecond'
         RETURNING recipient_key",
    )
    .bind(recipient_key)
    .bind(slot_at)
    .bind(micros(pair_interval))
    .fetch_optional(db)
    .await?;
    Ok(taken.is_some())
}

/// The key of a recipient in the limit tables: the hex SHA-256 of its E.164 number, as
/// `patients.recipient_key` computes it.
pub fn recipient_key(phone_e164: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(phone_e164.as_bytes()))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
