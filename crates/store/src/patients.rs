//! `patients`, written by the scheduler: the profile as last reported by the hospital.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

pub struct PatientProfile<'a> {
    pub patient_id: &'a str,
    pub facility_id: &'a str,
    pub first_name: Option<&'a str>,
    pub phone_e164: &'a str,
    pub language: &'a str,
    /// When the hospital reported this profile; an older report never overwrites a newer one.
    pub reported_at: DateTime<Utc>,
}

/// Inserts or updates a patient; returns whether the row changed (false for a stale report).
pub async fn upsert(db: impl PgExecutor<'_>, p: &PatientProfile<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (patient_id) DO UPDATE SET
            facility_id = excluded.facility_id, first_name = excluded.first_name,
            phone_e164 = excluded.phone_e164, language = excluded.language,
            reported_at = excluded.reported_at, updated_at = now()
         WHERE patients.reported_at <= excluded.reported_at",
    )
    .bind(p.patient_id)
    .bind(p.facility_id)
    .bind(p.first_name)
    .bind(p.phone_e164)
    .bind(p.language)
    .bind(p.reported_at)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// How many patients (not erased) are reached at a number.
pub async fn count_at_phone(db: impl PgExecutor<'_>, phone_e164: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM patients WHERE phone_e164 = $1 AND erased_at IS NULL AND phone_e164 <> ''")
        .bind(phone_e164)
        .fetch_one(db)
        .await
}

/// Whom a message to this number may address: a number shared by several patients gets
/// neutral wording (no first name), see [`careline_domain::template::Addressee`].
pub async fn addressee(
    db: impl PgExecutor<'_>,
    phone_e164: &str,
) -> sqlx::Result<careline_domain::template::Addressee> {
    Ok(if count_at_phone(db, phone_e164).await? > 1 {
        careline_domain::template::Addressee::SharedNumber
    } else {
        careline_domain::template::Addressee::Named
    })
}
