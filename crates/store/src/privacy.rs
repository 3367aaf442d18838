//! Subject access, erasure and retention.
//!
//! - [`export_patient`]: everything Careline holds about one patient, as JSON: profile,
//!   consent history, appointments, jobs, sends, send attempts, statuses, replies, the answers
//!   Careline sent, and the audit rows that name the patient.
//! - [`erase_patient`]: removes the patient's contact data (phone number, first name) and
//!   message parameters (clinician, department, instructions; error details; raw webhook
//!   bodies from the number) and appends an opt-out for every purpose, so nothing can ever be
//!   sent again. The audit trail is not touched: its rows hold ids, states and codes only
//!   (hash over non-identifying fields), so the chain stays verifiable and still answers
//!   "what was sent, when, on what consent" without saying to which number.
//! - [`purge`]: the same removal for everything older than the retention period.
//!
//! A number shared with other patients keeps its number-wide consent entries and its
//! customer-service window: they belong to the other patients too.

use careline_domain::consent::{ConsentChannel, ConsentPurpose, ConsentSource, ConsentState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::audit::{self, AuditRecord};
use crate::consent::{self, NewConsentEntry};

/// Why a privacy operation could not run.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("no patient '{0}'")]
    UnknownPatient(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Rows of a query as JSON objects (`to_jsonb` of each row), in the query's order.
async fn json_rows(conn: &mut PgConnection, sql: &'static str, patient_id: &str) -> sqlx::Result<Vec<Value>> {
    let wrapped = format!("SELECT to_jsonb(t) FROM ({sql}) t");
    sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped)).bind(patient_id).fetch_all(conn).await
}

const PATIENT_JOBS: &str =
    "SELECT j.job_id FROM jobs j JOIN appointments a USING (appointment_id) WHERE a.patient_id = $1";

/// The patient's full history, for a subject-access request.
pub async fn export_patient(conn: &mut PgConnection, patient_id: &str) -> Result<Value, PrivacyError> {
    let profile = json_rows(
        conn,
        "SELECT patient_id, facility_id, first_name, phone_e164, language, reported_at, updated_at, erased_at
         FROM patients WHERE patient_id = $1",
        patient_id,
    )
    .await?;
    let Some(profile) = profile.into_iter().next() else {
        return Err(PrivacyError::UnknownPatient(patient_id.to_owned()));
    };
    let consent = consent::history(&mut *conn, patient_id).await?;
    let appointments = json_rows(
        conn,
        "SELECT * FROM appointments WHERE patient_id = $1 ORDER BY starts_at, appointment_id",
        patient_id,
    )
    .await?;
    let jobs = json_rows(
        conn,
        "SELECT j.* FROM jobs j JOIN appointments a USING (appointment_id) WHERE a.patient_id = $1
         ORDER BY j.due_at, j.job_id",
        patient_id,
    )
    .await?;
    let sends = json_rows(
        conn,
        "SELECT * FROM sends WHERE job_id IN (SELECT j.job_id FROM jobs j JOIN appointments a USING (appointment_id)
                                              WHERE a.patient_id = $1) ORDER BY created_at",
        patient_id,
    )
    .await?;
    let attempts = json_rows(
        conn,
        "SELECT * FROM send_attempts WHERE job_id IN (SELECT j.job_id FROM jobs j JOIN appointments a
                                                      USING (appointment_id) WHERE a.patient_id = $1)
         ORDER BY job_id, attempt",
        patient_id,
    )
    .await?;
    let statuses = json_rows(
        conn,
        "SELECT * FROM message_status_events WHERE job_id IN (SELECT j.job_id FROM jobs j JOIN appointments a
                                                              USING (appointment_id) WHERE a.patient_id = $1)
         ORDER BY occurred_at, status",
        patient_id,
    )
    .await?;
    let replies = json_rows(
        conn,
        "SELECT * FROM inbound_messages
         WHERE appointment_id IN (SELECT appointment_id FROM appointments WHERE patient_id = $1)
            OR (from_e164 <> '' AND from_e164 = (SELECT phone_e164 FROM patients WHERE patient_id = $1))
         ORDER BY received_at, message_id",
        patient_id,
    )
    .await?;
    let service_replies = json_rows(
        conn,
        "SELECT reply_id, inbound_message_id, kind, phone_number_id, to_e164, facility_id, language, state, attempts,
                wamid, error_code, created_at, updated_at
         FROM service_replies
         WHERE inbound_message_id IN (
             SELECT message_id FROM inbound_messages
             WHERE appointment_id IN (SELECT appointment_id FROM appointments WHERE patient_id = $1)
                OR (from_e164 <> '' AND from_e164 = (SELECT phone_e164 FROM patients WHERE patient_id = $1)))
         ORDER BY created_at",
        patient_id,
    )
    .await?;
    let audit_rows = audit::for_patient(&mut *conn, patient_id).await?;
    Ok(json!({
        "patient_id": patient_id,
        "exported_at": Utc::now(),
        "profile": profile,
        "consent": consent,
        "appointments": appointments,
        "jobs": jobs,
        "sends": sends,
        "send_attempts": attempts,
        "statuses": statuses,
        "replies": replies,
        "service_replies": service_replies,
        "audit": audit_rows,
    }))
}

/// What an erasure or a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub patients: u64,
    pub consent_entries: u64,
    pub appointments: u64,
    pub sends: u64,
    pub inbound_messages: u64,
    pub service_replies: u64,
    pub windows: u64,
    pub webhook_bodies: u64,
}

/// Erases one patient's contact data and message parameters (see the module doc), in one
/// transaction of the caller's. `operator` names who asked (an id), for the audit trail.
pub async fn erase_patient(conn: &mut PgConnection, patient_id: &str, operator: &str) -> Result<Removed, PrivacyError> {
    let phone: Option<String> = sqlx::query_scalar("SELECT phone_e164 FROM patients WHERE patient_id = $1 FOR UPDATE")
        .bind(patient_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(phone) = phone else {
        return Err(PrivacyError::UnknownPatient(patient_id.to_owned()));
    };
    let now = Utc::now();
    // Nothing may be sent any more, whatever else the hospital reports later for this id.
    for purpose in ConsentPurpose::ALL {
        let dedupe_key = format!("erasure:{patient_id}:{}:{}", purpose.as_str(), now.timestamp_micros());
        let entry_id = consent::append(
            &mut *conn,
            &NewConsentEntry {
                patient_id: Some(patient_id),
                phone_e164: None,
                channel: ConsentChannel::Whatsapp,
                purpose,
                state: ConsentState::OptedOut,
                recorded_at: now,
                source: ConsentSource::HospitalSystem,
                evidence: Some("erasure"),
                wording_version: None,
                recorded_by: "careline-cli",
                actor: Some(operator),
                dedupe_key: &dedupe_key,
            },
        )
        .await?;
        audit::append(
            &mut *conn,
            &AuditRecord {
                kind: "consent.recorded",
                actor: operator,
                patient_id: Some(patient_id),
                body: json!({
                    "entry_id": entry_id,
                    "channel": "whatsapp",
                    "purpose": purpose.as_str(),
                    "state": "opted_out",
                    "source": "hospital_system",
                    "reason": "erasure",
                }),
                ..Default::default()
            },
        )
        .await?;
    }
    let shared: bool = !phone.is_empty()
        && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patients WHERE phone_e164 = $1 AND patient_id <> $2)")
            .bind(&phone)
            .bind(patient_id)
            .fetch_one(&mut *conn)
            .await?;
    let mut removed = Removed::default();
    let exec = |sql: &'static str| sqlx::query(sql);
    removed.patients = exec(
        "UPDATE patients SET first_name = NULL, phone_e164 = '', erased_at = now(), updated_at = now()
         WHERE patient_id = $1",
    )
    .bind(patient_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.consent_entries =
        exec("UPDATE consent_log SET phone_e164 = NULL WHERE patient_id = $1 AND phone_e164 IS NOT NULL")
            .bind(patient_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    removed.appointments = exec(
        "UPDATE appointments SET clinician = NULL, department = NULL, instructions = NULL, updated_at = now()
         WHERE patient_id = $1 AND (clinician IS NOT NULL OR department IS NOT NULL OR instructions IS NOT NULL)",
    )
    .bind(patient_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.sends = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sends SET error_detail = NULL WHERE error_detail IS NOT NULL AND job_id IN ({PATIENT_JOBS})"
    )))
    .bind(patient_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if !phone.is_empty() {
        removed.inbound_messages = exec("UPDATE inbound_messages SET from_e164 = '' WHERE from_e164 = $1")
            .bind(&phone)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        removed.service_replies = exec("UPDATE service_replies SET to_e164 = NULL WHERE to_e164 = $1")
            .bind(&phone)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        // Raw bodies from or to the number: processed ones are emptied (pending ones are left
        // to be processed first; the next erasure or purge empties them).
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        removed.webhook_bodies = exec(
            "UPDATE webhook_inbox SET body = '\\x'::bytea
             WHERE processed_at IS NOT NULL AND length(body) > 0 AND position(convert_to($1, 'UTF8') in body) > 0",
        )
        .bind(&digits)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if !shared {
            removed.consent_entries += exec(
                "UPDATE consent_log SET phone_e164 = NULL, patient_id = $2
                                              WHERE patient_id IS NULL AND phone_e164 = $1",
            )
            .bind(&phone)
            .bind(patient_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            removed.windows = exec("DELETE FROM customer_service_windows WHERE phone_e164 = $1")
                .bind(&phone)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
    }
    audit::append(
        conn,
        &AuditRecord {
            kind: "patient.erased",
            actor: operator,
            patient_id: Some(patient_id),
            body: serde_json::to_value(&removed).unwrap_or(Value::Null),
            ..Default::default()
        },
    )
    .await?;
    Ok(removed)
}

/// Removes contact data and message parameters older than `cutoff` (see the module doc):
/// processed raw webhook bodies, senders' numbers of inbound messages, recipients of service
/// answers, closed windows, appointment parameters of appointments that started before it, and
/// the contact data of patients with no report and no appointment since.
pub async fn purge(conn: &mut PgConnection, cutoff: DateTime<Utc>, operator: &str) -> Result<Removed, PrivacyError> {
    let mut removed = Removed::default();
    let run = |sql: &'static str| sqlx::query(sql).bind(cutoff);
    removed.webhook_bodies = run(
        "UPDATE webhook_inbox SET body = '\\x'::bytea WHERE processed_at IS NOT NULL AND processed_at < $1 AND length(body) > 0",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.inbound_messages =
        run("UPDATE inbound_messages SET from_e164 = '' WHERE received_at < $1 AND from_e164 <> ''")
            .execute(&mut *conn)
            .await?
            .rows_affected();
    removed.service_replies =
        run("UPDATE service_replies SET to_e164 = NULL WHERE created_at < $1 AND to_e164 IS NOT NULL")
            .execute(&mut *conn)
            .await?
            .rows_affected();
    removed.windows = run("DELETE FROM customer_service_windows WHERE last_inbound_at < $1")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    removed.appointments =
        run("UPDATE appointments SET clinician = NULL, department = NULL, instructions = NULL, updated_at = now()
         WHERE starts_at < $1 AND (clinician IS NOT NULL OR department IS NOT NULL OR instructions IS NOT NULL)")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    removed.sends = run("UPDATE sends SET error_detail = NULL WHERE updated_at < $1 AND error_detail IS NOT NULL")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    removed.patients =
        run("UPDATE patients p SET first_name = NULL, phone_e164 = '', erased_at = now(), updated_at = now()
         WHERE p.updated_at < $1 AND p.erased_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.patient_id = p.patient_id AND a.starts_at >= $1)")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    audit::append(
        conn,
        &AuditRecord {
            kind: "retention.purged",
            actor: operator,
            body: json!({ "cutoff": cutoff.to_rfc3339(), "removed": removed }),
            ..Default::default()
        },
    )
    .await?;
    Ok(removed)
}
