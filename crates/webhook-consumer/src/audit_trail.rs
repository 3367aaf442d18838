//! The webhook-consumer's audit records (see [`careline_store::audit`]): patient replies,
//! keyword consent changes, delivery statuses and the answers Careline sent itself. Each is
//! appended in the transaction of what it records, with a dedupe key, so a replayed webhook
//! appends nothing. Bodies hold ids, states and codes; never the number or the text.

use careline_domain::consent::{ConsentPurpose, ConsentState};
use careline_store::audit::{self, AuditRecord};
use careline_store::webhooks;
use careline_whatsapp::webhook::Status;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// The actor named by these records.
const ACTOR: &str = "webhook-consumer";

/// A patient's message: what it meant, never what it said.
pub struct ReplyAudit<'a> {
    pub message_id: &'a str,
    pub action: &'a str,
    pub message_type: &'a str,
    pub phone_number_id: &'a str,
    pub job_id: Option<Uuid>,
    pub appointment_id: Option<&'a str>,
    pub patient_id: Option<&'a str>,
}

pub async fn reply_received(conn: &mut PgConnection, r: &ReplyAudit<'_>) -> sqlx::Result<()> {
    audit::append(
        conn,
        &AuditRecord {
            kind: "reply.received",
            actor: ACTOR,
            patient_id: r.patient_id,
            appointment_id: r.appointment_id,
            job_id: r.job_id,
            inbound_message_id: Some(r.message_id),
            body: json!({ "action": r.action, "message_type": r.message_type, "phone_number_id": r.phone_number_id }),
            dedupe_key: Some(&format!("reply:{}", r.message_id)),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

pub async fn consent_recorded(
    conn: &mut PgConnection,
    entry_id: i64,
    patient_id: Option<&str>,
    purpose: ConsentPurpose,
    state: ConsentState,
    message_id: &str,
) -> sqlx::Result<()> {
    audit::append(
        conn,
        &AuditRecord {
            kind: "consent.recorded",
            actor: ACTOR,
            patient_id,
            inbound_message_id: Some(message_id),
            body: json!({
                "entry_id": entry_id,
                "channel": "whatsapp",
                "purpose": purpose.as_str(),
                "state": state.as_str(),
                "source": "whatsapp_keyword",
                // A number-wide entry (no patient id) is about the number, not one patient.
                "scope": if patient_id.is_some() { "patient" } else { "number" },
            }),
            dedupe_key: Some(&format!("consent:{entry_id}")),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// A delivery status as Meta reported it (once per message and status).
pub async fn status_received(conn: &mut PgConnection, status: &Status) -> sqlx::Result<()> {
    let (Some(wamid), Some(state)) = (status.id.as_deref(), status.status.as_deref()) else {
        return Ok(());
    };
    let job_id = match status.biz_opaque_callback_data.as_deref().and_then(|d| Uuid::parse_str(d.trim()).ok()) {
        Some(job_id) => Some(job_id),
        None => webhooks::job_id_for_wamid(&mut *conn, wamid).await?,
    };
    let error_code = status.errors.first().and_then(|e| e.code);
    let state: String = state.chars().take(32).collect();
    audit::append(
        conn,
        &AuditRecord {
            kind: "message.status",
            actor: ACTOR,
            job_id,
            wamid: Some(wamid),
            body: json!({ "status": state, "error_code": error_code, "timestamp": status.timestamp_secs() }),
            dedupe_key: Some(&format!("status:{wamid}:{state}")),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// How an answer Careline sent itself (STOP/START acknowledgement, HELP) ended.
pub async fn service_reply_settled(
    conn: &mut PgConnection,
    reply_id: Uuid,
    inbound_message_id: &str,
    kind: &str,
    state: &str,
    wamid: Option<&str>,
    error_code: Option<i32>,
) -> sqlx::Result<()> {
    audit::append(
        conn,
        &AuditRecord {
            kind: "service_reply.settled",
            actor: ACTOR,
            wamid,
            inbound_message_id: Some(inbound_message_id),
            body: json!({ "reply_id": reply_id.to_string(), "reply_kind": kind, "state": state, "error_code": error_code }),
            dedupe_key: Some(&format!("service_reply:{reply_id}:{state}")),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}
