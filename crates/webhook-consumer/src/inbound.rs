//! What a patient's inbound message does, inside the inbox row's transaction.
//!
//! 1. Classify: a quick-reply button by its payload (`ACTION:<job id>`), typed text by the
//!    keyword lists in the patient's language ([`careline_domain::keywords`]); anything else
//!    is `other`.
//! 2. Record the message once (Meta's id) and open or extend the 24 h customer-service window
//!    of that (business number, patient number).
//! 3. STOP / START: append a consent entry with its provenance (source `whatsapp_keyword`, the
//!    inbound message id as evidence) for the number and every patient reached at it. STOP
//!    withdraws every purpose (care and marketing); START restores `care` only — marketing
//!    needs an explicit opt-in from the hospital. The sender re-reads consent right before each
//!    send, so the committed opt-out is what stops jobs already queued.
//! 4. STOP, START and HELP queue one free-form answer ([`careline_store::service_replies`]),
//!    sent after commit by [`crate::service_replies`] only while the window is open.
//! 5. Free text or media that is neither a keyword nor a button publishes `needs_human`
//!    (ids only) for the hospital's own inbox.
//! 6. Every message publishes `patient.replied`; events go through the outbox.
//!
//! Logs carry ids and the action, never the text or the number.

use std::sync::Arc;

use careline_domain::consent::{ConsentChannel, ConsentPurpose, ConsentSource, ConsentState};
use careline_domain::events::{ConsentChanged, Envelope, Event, NeedsHuman, PatientReplied};
use careline_domain::facility::NetworkConfig;
use careline_domain::keywords::{KeywordMatch, Keywords};
use careline_domain::phone::Phone;
use careline_domain::reply::{ReplyAction, parse_button_payload};
use careline_domain::service_reply::ServiceReplyKind;
use careline_store::consent::{self, NewConsentEntry};
use careline_store::service_replies::{self, NewServiceReply};
use careline_store::webhooks::{self, InboxRow, NewInboundMessage};
use careline_whatsapp::webhook::{InboundContent, InboundMessage};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit_trail::{self, ReplyAudit};

/// Who the consent log names as the recorder of keyword opt-outs and opt-ins.
const RECORDED_BY: &str = "webhook-consumer";
/// The actor of a keyword consent: the patient, on WhatsApp.
const KEYWORD_ACTOR: &str = "patient";

/// What inbound handling needs besides the database: keyword lists and facilities.
#[derive(Debug, Clone, Default)]
pub struct InboundContext {
    pub keywords: Keywords,
    /// The network configuration, to name the facility of a business number.
    pub network: Option<Arc<NetworkConfig>>,
}

impl InboundContext {
    pub fn new(network: Option<Arc<NetworkConfig>>) -> Self {
        let keywords = network.as_ref().map_or_else(Keywords::built_in, |n| Keywords::with_config(&n.keywords));
        Self { keywords, network }
    }

    fn facility_for_number(&self, phone_number_id: &str) -> Option<String> {
        self.network.as_ref()?.facility_by_number(phone_number_id).map(|f| f.id.clone())
    }

    /// What a message means, the job its button names (if any) and the keyword's language.
    pub fn classify(&self, message: &InboundMessage) -> (ReplyAction, Option<Uuid>, Option<&'static str>) {
        match message.content() {
            InboundContent::Text(body) => match self.keywords.classify(body) {
                Some(KeywordMatch { action, language }) => (action, None, language),
                None => (ReplyAction::Other, None, None),
            },
            InboundContent::QuickReply { payload, text } => self.classify_button(payload, text),
            InboundContent::ButtonReply { id, title } => self.classify_button(id, title),
            InboundContent::ListReply { .. } | InboundContent::Other(_) => (ReplyAction::Other, None, None),
        }
    }

    /// A button's payload (`ACTION:<job id>`) decides; a button Careline did not label (for
    /// example a "Stop reminders" quick reply of a template) still counts by its keyword label.
    fn classify_button(
        &self,
        payload: Option<&str>,
        label: Option<&str>,
    ) -> (ReplyAction, Option<Uuid>, Option<&'static str>) {
        let (action, job_id) = payload.map_or((ReplyAction::Other, None), parse_button_payload);
        if action == ReplyAction::Other
            && let Some(keyword) = payload.into_iter().chain(label).find_map(|t| self.keywords.classify(t))
        {
            return (keyword.action, None, keyword.language);
        }
        (action, job_id, None)
    }
}

/// Whether a message is something a person should read: typed text, media, a location or a
/// contact card — not a button, a reaction or a message WhatsApp could not deliver to us.
fn is_free_form(message: &InboundMessage) -> bool {
    match message.content() {
        InboundContent::Text(_) => true,
        InboundContent::Other(kind) => {
            !matches!(kind, Some("reaction" | "unsupported" | "system" | "request_welcome" | "ephemeral") | None)
        }
        _ => false,
    }
}

/// The sender's number in E.164. A number libphonenumber does not know yet is still kept as
/// `+digits`: an opt-out must be honoured even then.
pub fn sender_e164(from: Option<&str>) -> Option<String> {
    let from = from?.trim();
    match Phone::from_wa_id(from) {
        Ok(phone) => Some(phone.e164().to_owned()),
        Err(_) => {
            let digits: String = from.chars().filter(char::is_ascii_digit).collect();
            (!digits.is_empty()).then(|| format!("+{digits}"))
        }
    }
}

fn unix_time(secs: Option<i64>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0)).unwrap_or(fallback)
}

/// Records one inbound message and queues its effects. `None` if it was seen before.
pub async fn record_inbound(
    conn: &mut PgConnection,
    row: &InboxRow,
    phone_number_id: &str,
    message: &InboundMessage,
    ctx: &InboundContext,
) -> sqlx::Result<Option<ReplyAction>> {
    let Some(message_id) = message.id.as_deref().filter(|id| !id.is_empty()) else {
        tracing::warn!(inbox_id = row.inbox_id, "inbound message without an id ignored");
        return Ok(None);
    };
    let from = sender_e164(message.from.as_deref());
    let received_at = unix_time(message.timestamp_secs(), row.received_at);
    let (action, button_job, keyword_language) = ctx.classify(message);
    let context_wamid = message.context_id();
    let job_id = match (button_job, context_wamid) {
        (Some(job_id), _) => Some(job_id),
        (None, Some(wamid)) => webhooks::job_id_for_wamid(&mut *conn, wamid).await?,
        (None, None) => None,
    };
    let job_context = match job_id {
        Some(job_id) => webhooks::job_context(&mut *conn, job_id).await?,
        None => None,
    };
    let kind: String = message.message_type.as_deref().unwrap_or("unknown").chars().take(32).collect();
    let inserted = webhooks::insert_inbound_message(
        &mut *conn,
        &NewInboundMessage {
            message_id,
            phone_number_id,
            from_e164: from.as_deref().unwrap_or(""),
            received_at,
            kind: &kind,
            action: action.as_str(),
            context_wamid,
            job_id,
            appointment_id: job_context.as_ref().map(|c| c.appointment_id.as_str()),
            inbox_id: row.inbox_id,
        },
    )
    .await?;
    if !inserted {
        tracing::debug!(inbox_id = row.inbox_id, "inbound message seen before; no side effects");
        return Ok(None);
    }
    let facility_id =
        job_context.as_ref().map(|c| c.facility_id.clone()).or_else(|| ctx.facility_for_number(phone_number_id));
    tracing::info!(
        inbox_id = row.inbox_id,
        action = action.as_str(),
        job_id = job_id.map(tracing::field::display),
        appointment_id = job_context.as_ref().map(|c| c.appointment_id.as_str()),
        facility_id = facility_id.as_deref(),
        "patient reply recorded"
    );
    let patients_at_number = match &from {
        Some(phone) => webhooks::patient_ids_by_phone(&mut *conn, phone).await?,
        None => Vec::new(),
    };
    if patients_at_number.len() > 1 {
        metrics::counter!("careline_webhook_shared_number_replies_total").increment(1);
    }
    // On a shared number the reply is the number's, not one patient's.
    let patient_id = match patients_at_number.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    audit_trail::reply_received(
        conn,
        &ReplyAudit {
            message_id,
            action: action.as_str(),
            message_type: &kind,
            phone_number_id,
            job_id,
            appointment_id: job_context.as_ref().map(|c| c.appointment_id.as_str()),
            patient_id,
        },
    )
    .await?;
    if let Some(phone) = &from
        && !phone_number_id.is_empty()
    {
        service_replies::touch_window(&mut *conn, phone_number_id, phone, received_at).await?;
    }

    let consent_state = match action {
        ReplyAction::Stop => Some(ConsentState::OptedOut),
        ReplyAction::Start => Some(ConsentState::OptedIn),
        _ => None,
    };
    if let Some(state) = consent_state {
        let patient_ids = match &from {
            Some(phone) => record_keyword_consent(conn, message_id, phone, state, received_at).await?,
            None => {
                tracing::warn!(
                    inbox_id = row.inbox_id,
                    "keyword from a sender without a phone number; no consent entry"
                );
                Vec::new()
            }
        };
        let changed = ConsentChanged {
            patient_ids,
            state,
            source: ConsentSource::WhatsappKeyword,
            recorded_at: received_at,
            evidence: Some(message_id.to_owned()),
        };
        webhooks::enqueue_outbox(&mut *conn, &Envelope::new(Event::ConsentChanged(changed), received_at)).await?;
    }

    let answer = match action {
        ReplyAction::Stop => Some(ServiceReplyKind::StopAck),
        ReplyAction::Start => Some(ServiceReplyKind::StartAck),
        ReplyAction::Help => Some(ServiceReplyKind::Help),
        _ => None,
    };
    if let (Some(answer), Some(phone)) = (answer, &from)
        && !phone_number_id.is_empty()
    {
        // The patient's language when Careline knows the number, else the keyword's.
        let language = match service_replies::language_for_phone(&mut *conn, phone).await? {
            Some(language) => language,
            None => keyword_language.unwrap_or("en").to_owned(),
        };
        service_replies::enqueue(
            &mut *conn,
            &NewServiceReply {
                inbound_message_id: message_id,
                kind: answer.as_str(),
                phone_number_id,
                to_e164: phone,
                facility_id: facility_id.as_deref(),
                language: &language,
            },
        )
        .await?;
    }

    if action == ReplyAction::Other && is_free_form(message) {
        let needs_human = NeedsHuman {
            inbound_message_id: message_id.to_owned(),
            facility_id: facility_id.clone(),
            appointment_id: job_context.as_ref().map(|c| c.appointment_id.clone()),
            phone_number_id: phone_number_id.to_owned(),
            kind: kind.clone(),
            received_at,
        };
        webhooks::enqueue_outbox(&mut *conn, &Envelope::new(Event::NeedsHuman(needs_human), received_at)).await?;
        metrics::counter!("careline_webhook_needs_human_total").increment(1);
    }

    let replied = PatientReplied {
        inbound_message_id: message_id.to_owned(),
        action,
        appointment_id: job_context.as_ref().map(|c| c.appointment_id.clone()),
        job_id,
        facility_id,
        received_at,
    };
    webhooks::enqueue_outbox(&mut *conn, &Envelope::new(Event::PatientReplied(replied), received_at)).await?;
    Ok(Some(action))
}

/// Appends the keyword's consent for the number and for every patient reached at it, for
/// every purpose STOP withdraws or START restores. Returns those patients' ids.
async fn record_keyword_consent(
    conn: &mut PgConnection,
    message_id: &str,
    phone: &str,
    state: ConsentState,
    recorded_at: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    let patient_ids = webhooks::patient_ids_by_phone(&mut *conn, phone).await?;
    let purposes: &[ConsentPurpose] = match state {
        ConsentState::OptedOut => &ConsentPurpose::ALL,
        ConsentState::OptedIn => &[ConsentPurpose::Care],
    };
    for purpose in purposes {
        // The first purpose keeps the historical dedupe key, so replays of rows written before
        // purposes existed stay idempotent.
        let suffix = if *purpose == ConsentPurpose::Care { String::new() } else { format!(":{}", purpose.as_str()) };
        let subjects = std::iter::once(None).chain(patient_ids.iter().map(|p| Some(p.as_str())));
        for patient_id in subjects {
            let dedupe_key = format!("{message_id}:{}{suffix}", patient_id.unwrap_or(phone));
            let entry_id = consent::append(
                &mut *conn,
                &NewConsentEntry {
                    patient_id,
                    phone_e164: Some(phone),
                    channel: ConsentChannel::Whatsapp,
                    purpose: *purpose,
                    state,
                    recorded_at,
                    source: ConsentSource::WhatsappKeyword,
                    evidence: Some(message_id),
                    wording_version: None,
                    recorded_by: RECORDED_BY,
                    actor: Some(KEYWORD_ACTOR),
                    dedupe_key: &dedupe_key,
                },
            )
            .await?;
            if let Some(entry_id) = entry_id {
                audit_trail::consent_recorded(conn, entry_id, patient_id, *purpose, state, message_id).await?;
            }
        }
    }
    Ok(patient_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_classify_by_payload_then_by_keyword_label() {
        let ctx = InboundContext::default();
        let job = Uuid::now_v7();
        let payload = format!("CONFIRM:{job}");
        assert_eq!(ctx.classify_button(Some(&payload), Some("Confirm")).0, ReplyAction::Confirm);
        assert_eq!(ctx.classify_button(Some(&payload), Some("Confirm")).1, Some(job));
        assert_eq!(ctx.classify_button(Some("Stop"), Some("Stop")).0, ReplyAction::Stop);
        assert_eq!(ctx.classify_button(Some("x"), Some("Stop reminders")).0, ReplyAction::Stop);
        assert_eq!(ctx.classify_button(None, Some("Later")).0, ReplyAction::Other);
        let stop = careline_domain::reply::button_payload(ReplyAction::Stop, job);
        assert_eq!(ctx.classify_button(Some(&stop), Some("Stop reminders")), (ReplyAction::Stop, Some(job), None));
    }

    #[test]
    fn text_and_media_need_a_person_but_reactions_and_buttons_do_not() {
        let message = |json: serde_json::Value| -> InboundMessage { serde_json::from_value(json).unwrap() };
        let text = message(serde_json::json!({"id": "1", "type": "text", "text": {"body": "hi"}}));
        let image = message(serde_json::json!({"id": "2", "type": "image", "image": {"id": "m1"}}));
        let reaction = message(serde_json::json!({"id": "3", "type": "reaction", "reaction": {"emoji": "👍"}}));
        let button = message(serde_json::json!({"id": "4", "type": "button", "button": {"payload": "x", "text": "x"}}));
        assert!(is_free_form(&text) && is_free_form(&image));
        assert!(!is_free_form(&reaction) && !is_free_form(&button));
    }

    #[test]
    fn senders_are_kept_in_e164_even_when_unknown_to_the_numbering_plan() {
        assert_eq!(sender_e164(Some("919812345678")).as_deref(), Some("+919812345678"));
        assert_eq!(sender_e164(Some("999")).as_deref(), Some("+999"));
        assert_eq!(sender_e164(Some("")), None);
        assert_eq!(sender_e164(None), None);
    }
}
