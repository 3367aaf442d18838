//! The append-only consent log. Entries are never updated or deleted; the current state is the
//! latest entry (by `recorded_at`, then insertion order) that concerns the patient or the
//! patient's phone number.

use careline_domain::consent::ConsentState;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// One consent statement to append.
#[derive(Debug, Clone)]
pub struct NewConsentEntry<'a> {
    pub patient_id: Option<&'a str>,
    pub phone_e164: Option<&'a str>,
    pub state: ConsentState,
    pub recorded_at: DateTime<Utc>,
    pub source: &'a str,
    pub evidence: Option<&'a str>,
    pub wording_version: Option<&'a str>,
    /// Which component or API source recorded it.
    pub recorded_by: &'a str,
    /// Makes the append idempotent (an event id, an inbound message id).
    pub dedupe_key: &'a str,
}

/// Appends an entry; a second append with the same `dedupe_key` does nothing.
/// Returns whether a row was written.
pub async fn append(db: impl PgExecutor<'_>, e: &NewConsentEntry<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO consent_log (patient_id, phone_e164, state, recorded_at, source, evidence, wording_version, recorded_by, dedupe_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(e.patient_id)
    .bind(e.phone_e164)
    .bind(e.state.as_str())
    .bind(e.recorded_at)
    .bind(e.source)
    .bind(e.evidence)
    .bind(e.wording_version)
    .bind(e.recorded_by)
    .bind(e.dedupe_key)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The consent in force for a patient reached at `phone`, or `None` if nothing was ever
/// recorded (which means: do not send).
pub async fn current(
    db: impl PgExecutor<'_>,
    patient_id: &str,
    phone_e164: &str,
) -> sqlx::Result<Option<ConsentState>> {
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM consent_log
         WHERE channel = 'whatsapp' AND purpose = 'care' AND (patient_id = $1 OR phone_e164 = $2)
         ORDER BY recorded_at DESC, entry_id DESC
         LIMIT 1",
    )
    .bind(patient_id)
    .bind(phone_e164)
    .fetch_optional(db)
    .await?;
    Ok(state.as_deref().and_then(ConsentState::parse))
}

/// [`current`] for many `(patient_id, phone_e164)` pairs in one query, in the same order.
pub async fn current_many(
    db: impl PgExecutor<'_>,
    subjects: &[(String, String)],
) -> sqlx::Result<Vec<Option<ConsentState>>> {
    let patients: Vec<&str> = subjects.iter().map(|(p, _)| p.as_str()).collect();
    let phones: Vec<&str> = subjects.iter().map(|(_, phone)| phone.as_str()).collect();
    let states: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT (SELECT c.state FROM consent_log c
                 WHERE c.channel = 'whatsapp' AND c.purpose = 'care'
                   AND (c.patient_id = i.patient_id OR c.phone_e164 = i.phone_e164)
                 ORDER BY c.recorded_at DESC, c.entry_id DESC
                 LIMIT 1)
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(patient_id, phone_e164, n)
         ORDER BY i.n",
    )
    .bind(&patients)
    .bind(&phones)
    .fetch_all(db)
    .await?;
    Ok(states.into_iter().map(|s| s.as_deref().and_then(ConsentState::parse)).collect())
}
