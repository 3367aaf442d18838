//! The append-only consent log. Entries are never updated or deleted; the current state for a
//! channel and purpose is the latest entry (by `recorded_at`, then insertion order) that
//! concerns the patient or the patient's phone number.
//!
//! Each entry keeps its provenance: how consent was obtained (`source`), which component or
//! API client recorded it (`recorded_by`), who at the hospital took it (`actor`, an id), the
//! evidence and the wording version. Erasure (see [`crate::privacy`]) blanks the phone number
//! and evidence of an entry but keeps the entry itself.

use careline_domain::consent::{ConsentChannel, ConsentPurpose, ConsentSource, ConsentState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

/// One consent statement to append.
#[derive(Debug, Clone)]
pub struct NewConsentEntry<'a> {
    pub patient_id: Option<&'a str>,
    pub phone_e164: Option<&'a str>,
    pub channel: ConsentChannel,
    pub purpose: ConsentPurpose,
    pub state: ConsentState,
    pub recorded_at: DateTime<Utc>,
    pub source: ConsentSource,
    pub evidence: Option<&'a str>,
    pub wording_version: Option<&'a str>,
    /// Which component or API source recorded it.
    pub recorded_by: &'a str,
    /// Who at the hospital took it (a staff or system id), when the hospital says.
    pub actor: Option<&'a str>,
    /// Makes the append idempotent (an event id, an inbound message id).
    pub dedupe_key: &'a str,
}

/// A stored consent entry, as the export and the operator CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConsentEntry {
    pub entry_id: i64,
    pub patient_id: Option<String>,
    pub phone_e164: Option<String>,
    pub channel: String,
    pub purpose: String,
    pub state: String,
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub evidence: Option<String>,
    pub wording_version: Option<String>,
    pub recorded_by: String,
    pub actor: Option<String>,
    pub inserted_at: DateTime<Utc>,
}

/// Appends an entry; a second append with the same `dedupe_key` does nothing.
/// Returns the new entry's id, or `None` when it was a replay.
pub async fn append(db: impl PgExecutor<'_>, e: &NewConsentEntry<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO consent_log (patient_id, phone_e164, channel, purpose, state, recorded_at, source, evidence,
                                  wording_version, recorded_by, actor, dedupe_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING entry_id",
    )
    .bind(e.patient_id)
    .bind(e.phone_e164)
    .bind(e.channel.as_str())
    .bind(e.purpose.as_str())
    .bind(e.state.as_str())
    .bind(e.recorded_at)
    .bind(e.source.as_str())
    .bind(e.evidence)
    .bind(e.wording_version)
    .bind(e.recorded_by)
    .bind(e.actor)
    .bind(e.dedupe_key)
    .fetch_optional(db)
    .await
}

/// The WhatsApp `care` consent in force for a patient reached at `phone` (what the sender
/// checks right before every reminder or notice), or `None` if nothing was ever recorded
/// (which means: do not send).
pub async fn current(
    db: impl PgExecutor<'_>,
    patient_id: &str,
    phone_e164: &str,
) -> sqlx::Result<Option<ConsentState>> {
    current_for(db, patient_id, phone_e164, ConsentChannel::Whatsapp, ConsentPurpose::Care).await
}

/// The consent in force for one channel and purpose; `None` if nothing was ever recorded.
pub async fn current_for(
    db: impl PgExecutor<'_>,
    patient_id: &str,
    phone_e164: &str,
    channel: ConsentChannel,
    purpose: ConsentPurpose,
) -> sqlx::Result<Option<ConsentState>> {
    let subjects = [(patient_id.to_owned(), phone_e164.to_owned())];
    Ok(current_for_many(db, &subjects, channel, purpose).await?.pop().flatten())
}

/// [`current`] for many `(patient_id, phone_e164)` pairs in one query, in the same order.
pub async fn current_many(
    db: impl PgExecutor<'_>,
    subjects: &[(String, String)],
) -> sqlx::Result<Vec<Option<ConsentState>>> {
    current_for_many(db, subjects, ConsentChannel::Whatsapp, ConsentPurpose::Care).await
}

/// [`current_for`] for many `(patient_id, phone_e164)` pairs in one query, in the same order:
/// the latest entry for the patient or the phone number decides.
pub async fn current_for_many(
    db: impl PgExecutor<'_>,
    subjects: &[(String, String)],
    channel: ConsentChannel,
    purpose: ConsentPurpose,
) -> sqlx::Result<Vec<Option<ConsentState>>> {
    let patients: Vec<&str> = subjects.iter().map(|(p, _)| p.as_str()).collect();
    let phones: Vec<&str> = subjects.iter().map(|(_, phone)| phone.as_str()).collect();
    let states: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT (SELECT c.state FROM consent_log c
                 WHERE c.channel = $3 AND c.purpose = $4
                   AND (c.patient_id = i.patient_id OR c.phone_e164 = i.phone_e164)
                 ORDER BY c.recorded_at DESC, c.entry_id DESC
                 LIMIT 1)
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(patient_id, phone_e164, n)
         ORDER BY i.n",
    )
    .bind(&patients)
    .bind(&phones)
    .bind(channel.as_str())
    .bind(purpose.as_str())
    .fetch_all(db)
    .await?;
    Ok(states.into_iter().map(|s| s.as_deref().and_then(ConsentState::parse)).collect())
}

/// Every entry that concerns a patient: the patient's own and those recorded for the
/// patient's current phone number, oldest first.
pub async fn history(db: impl PgExecutor<'_>, patient_id: &str) -> sqlx::Result<Vec<ConsentEntry>> {
    sqlx::query_as(
        "SELECT entry_id, patient_id, phone_e164, channel, purpose, state, recorded_at, source, evidence,
                wording_version, recorded_by, actor, inserted_at
         FROM consent_log
         WHERE patient_id = $1
            OR (patient_id IS NULL AND phone_e164 = (SELECT phone_e164 FROM patients WHERE patient_id = $1))
         ORDER BY recorded_at, entry_id",
    )
    .bind(patient_id)
    .fetch_all(db)
    .await
}
