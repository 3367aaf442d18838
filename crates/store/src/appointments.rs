//! `appointments`, written by the scheduler.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Appointment {
    pub appointment_id: String,
    pub facility_id: String,
    pub patient_id: String,
    pub version: i64,
    pub generation: i32,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: Option<i32>,
    pub clinician: Option<String>,
    pub department: Option<String>,
    pub instructions: Option<String>,
    pub patient_response: Option<String>,
}

/// Reads an appointment and locks it for the rest of the transaction, so two events for the
/// same appointment are applied one after the other.
pub async fn lock(db: impl PgExecutor<'_>, appointment_id: &str) -> sqlx::Result<Option<Appointment>> {
    sqlx::query_as(
        "SELECT appointment_id, facility_id, patient_id, version, generation, status, starts_at, duration_minutes,
                clinician, department, instructions, patient_response
         FROM appointments WHERE appointment_id = $1 FOR UPDATE",
    )
    .bind(appointment_id)
    .fetch_optional(db)
    .await
}

/// Writes the full row (insert or overwrite).
pub async fn save(db: impl PgExecutor<'_>, a: &Appointment) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, generation, status, starts_at,
                                   duration_minutes, clinician, department, instructions, patient_response)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (appointment_id) DO UPDATE SET
            facility_id = excluded.facility_id, patient_id = excluded.patient_id, version = excluded.version,
            generation = excluded.generation, status = excluded.status, starts_at = excluded.starts_at,
            duration_minutes = excluded.duration_minutes, clinician = excluded.clinician,
            department = excluded.department, instructions = excluded.instructions,
            patient_response = excluded.patient_response, updated_at = now()",
    )
    .bind(&a.appointment_id)
    .bind(&a.facility_id)
    .bind(&a.patient_id)
    .bind(a.version)
    .bind(a.generation)
    .bind(&a.status)
    .bind(a.starts_at)
    .bind(a.duration_minutes)
    .bind(&a.clinician)
    .bind(&a.department)
    .bind(&a.instructions)
    .bind(&a.patient_response)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a patient's answer (`confirmed`, `reschedule_requested`, `cancel_requested`).
/// Returns false when the appointment is unknown.
pub async fn record_response(
    db: impl PgExecutor<'_>,
    appointment_id: &str,
    response: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE appointments SET patient_response = $2, responded_at = $3, updated_at = now()
         WHERE appointment_id = $1 AND (responded_at IS NULL OR responded_at <= $3)",
    )
    .bind(appointment_id)
    .bind(response)
    .bind(at)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}
