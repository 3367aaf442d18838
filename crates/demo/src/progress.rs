//! Counts of what the fleet did, read from PostgreSQL (read-only; never a name, number or text).
//!
//! Each number comes from the table its writer owns: jobs (scheduler), sends (sender),
//! message_delivery and consent_log (webhook-consumer), appointments (scheduler).

use sqlx::{FromRow, PgPool};

/// One reading of the fleet's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct Counts {
    /// Jobs the scheduler planned (every state).
    pub planned: i64,
    pub skipped_too_late: i64,
    pub skipped_quiet_hours: i64,
    /// Skipped for any reason.
    pub skipped: i64,
    /// Jobs made stale by a reschedule or a cancellation.
    pub revoked: i64,
    /// Jobs due (due_at <= now) the scheduler has not handed to the sender yet.
    pub due_waiting: i64,
    /// Jobs handed to the sender without an outcome yet.
    pub in_flight: i64,
    /// Sends WhatsApp accepted.
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub confirmed: i64,
    pub reschedule_requested: i64,
    pub cancel_requested: i64,
    pub cancelled_by_hospital: i64,
    /// Numbers or patients with an opt-out on record.
    pub opted_out: i64,
    /// Held back by the sender: no consent on record.
    pub suppressed_no_consent: i64,
    /// Held back by the sender: the number opted out (after a STOP).
    pub suppressed_opted_out: i64,
    /// Held back by the sender for another reason (stale after a move or cancellation, ...).
    pub suppressed_other: i64,
    /// Refused by WhatsApp, or accepted and then reported failed.
    pub failed: i64,
    /// Sends whose outcome the sender could not learn.
    pub unknown: i64,
}

/// One round trip, scalar subqueries. Suppression reasons are the sender's (`no_consent`,
/// `opted_out`, `stale`, `revoked`, ...).
const COUNTS_SQL: &str = "SELECT
            (SELECT count(*) FROM jobs) AS planned,
            (SELECT count(*) FROM jobs WHERE state = 'skipped' AND reason ILIKE '%late%') AS skipped_too_late,
            (SELECT count(*) FROM jobs WHERE state = 'skipped' AND reason ILIKE '%quiet%') AS skipped_quiet_hours,
            (SELECT count(*) FROM jobs WHERE state = 'skipped') AS skipped,
            (SELECT count(*) FROM jobs WHERE state = 'revoked') AS revoked,
            (SELECT count(*) FROM jobs WHERE state IN ('planned', 'claimed') AND due_at <= now()) AS due_waiting,
            (SELECT count(*) FROM jobs j WHERE j.state = 'enqueued' AND NOT EXISTS
                (SELECT 1 FROM sends s WHERE s.job_id = j.job_id AND s.state <> 'sending')) AS in_flight,
            (SELECT count(*) FROM sends WHERE state = 'accepted') AS sent,
            (SELECT count(*) FROM message_delivery WHERE status IN ('delivered', 'read')) AS delivered,
            (SELECT count(*) FROM message_delivery WHERE status = 'read') AS read,
            (SELECT count(*) FROM appointments WHERE patient_response = 'confirmed') AS confirmed,
            (SELECT count(*) FROM appointments WHERE patient_response = 'reschedule_requested') AS reschedule_requested,
            (SELECT count(*) FROM appointments WHERE patient_response = 'cancel_requested') AS cancel_requested,
            (SELECT count(*) FROM appointments WHERE status = 'cancelled') AS cancelled_by_hospital,
            (SELECT count(DISTINCT coalesce(phone_e164, patient_id)) FROM consent_log WHERE state = 'opted_out') AS opted_out,
            (SELECT count(*) FROM sends WHERE state = 'suppressed' AND reason = 'no_consent') AS suppressed_no_consent,
            (SELECT count(*) FROM sends WHERE state = 'suppressed' AND reason = 'opted_out') AS suppressed_opted_out,
            (SELECT count(*) FROM sends WHERE state = 'suppressed'
                AND coalesce(reason, '') NOT IN ('no_consent', 'opted_out')) AS suppressed_other,
            (SELECT count(*) FROM sends WHERE state = 'failed')
              + (SELECT count(*) FROM message_delivery WHERE status = 'failed') AS failed,
            (SELECT count(*) FROM sends WHERE state = 'unknown') AS unknown";

pub async fn read_counts(pool: &PgPool) -> Result<Counts, sqlx::Error> {
    sqlx::query_as::<_, Counts>(COUNTS_SQL).fetch_one(pool).await
}

impl Counts {
    /// The live progress line.
    pub fn progress_line(&self, elapsed_s: u64) -> String {
        format!(
            "[t+{elapsed_s:>3}s] planned {} | sent {} | delivered {} | read {} | confirmed {} | opted out {} | suppressed (no consent) {}",
            self.planned,
            self.sent,
            self.delivered,
            self.read,
            self.confirmed,
            self.opted_out,
            self.suppressed_no_consent
        )
    }

    /// Whether every job that is due has an outcome.
    pub fn all_due_handled(&self) -> bool {
        self.due_waiting == 0 && self.in_flight == 0
    }
}
