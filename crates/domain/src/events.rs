//! The events that travel over RabbitMQ.
//!
//! Every message is an [`Envelope`]: a `message_id` for dedupe, a schema version, and one
//! [`Event`] tagged by `type`. Events name things by id; consumers reload what they need.
//! The exception is what ingest accepts from a hospital (a patient profile, an appointment),
//! which has no other way to reach the scheduler.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::consent::{ConsentRecord, ConsentSource, ConsentState};
use crate::reply::ReplyAction;

/// The schema version this build writes; consumers accept it and every older one they know.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_id: Uuid,
    pub schema: u16,
    pub occurred_at: DateTime<Utc>,
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event, occurred_at: DateTime<Utc>) -> Self {
        Self { message_id: Uuid::now_v7(), schema: SCHEMA_VERSION, occurred_at, event }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    PatientUpserted(PatientUpserted),
    AppointmentUpserted(AppointmentUpserted),
    JobDue(JobDue),
    PatientReplied(PatientReplied),
    ConsentChanged(ConsentChanged),
    NeedsHuman(NeedsHuman),
}

impl Event {
    /// The routing key the event is published with on the events exchange.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Self::PatientUpserted(_) => "patient.upserted",
            Self::AppointmentUpserted(_) => "appointment.upserted",
            Self::JobDue(job) if job.is_urgent() => "job.due.urgent",
            Self::JobDue(_) => "job.due",
            Self::PatientReplied(_) => "patient.replied",
            Self::ConsentChanged(_) => "consent.changed",
            Self::NeedsHuman(_) => "patient.needs_human",
        }
    }
}

/// A hospital created or updated a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientUpserted {
    pub patient_id: String,
    pub facility_id: String,
    pub first_name: Option<String>,
    /// E.164, validated by ingest.
    pub phone: String,
    /// BCP 47 language tag, e.g. `en`, `hi`, `pt-BR`.
    pub language: String,
    pub consent: Option<ConsentRecord>,
    /// The API token source that reported it.
    pub reported_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
}

impl AppointmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A hospital created, moved, changed or cancelled an appointment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentUpserted {
    pub appointment_id: String,
    pub facility_id: String,
    pub patient_id: String,
    /// The hospital's version; a higher version wins, a lower or equal one is ignored.
    pub version: i64,
    pub status: AppointmentStatus,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: Option<i32>,
    pub clinician: Option<String>,
    pub department: Option<String>,
    pub instructions: Option<String>,
    pub reported_by: String,
}

/// A planned message fell due; the sender takes it from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDue {
    pub job_id: Uuid,
    pub appointment_id: String,
    pub generation: i32,
    pub kind: String,
    pub due_at: DateTime<Utc>,
}

impl JobDue {
    /// Whether the job travels in the sender's urgent lane (`job.due.urgent`), ahead of bulk
    /// reminders when a number is saturated: see [`crate::plan::is_urgent_kind`].
    pub fn is_urgent(&self) -> bool {
        crate::plan::is_urgent_kind(&self.kind)
    }
}

/// A patient answered on WhatsApp (a button or a keyword). Carries no message text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientReplied {
    /// Meta's id of the inbound message.
    pub inbound_message_id: String,
    pub action: ReplyAction,
    pub appointment_id: Option<String>,
    pub job_id: Option<Uuid>,
    pub facility_id: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Consent changed on Careline's side (a STOP or START keyword).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChanged {
    pub patient_ids: Vec<String>,
    pub state: ConsentState,
    pub source: ConsentSource,
    pub recorded_at: DateTime<Utc>,
    /// The inbound message id that carried the keyword.
    pub evidence: Option<String>,
}

/// A patient wrote something that is neither a keyword nor a button: a person at the hospital
/// should read it in the hospital's own inbox. Carries ids only, never the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedsHuman {
    /// Meta's id of the inbound message (the hospital's inbox fetches the content from Meta).
    pub inbound_message_id: String,
    /// The facility whose business number received it, when known.
    pub facility_id: Option<String>,
    /// The appointment the message answers (a reply to a reminder), when known.
    pub appointment_id: Option<String>,
    /// The business number that received it.
    pub phone_number_id: String,
    /// `text`, `image`, `audio`, …
    pub kind: String,
    pub received_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_a_type_tag() {
        let env = Envelope::new(
            Event::JobDue(JobDue {
                job_id: Uuid::nil(),
                appointment_id: "A1".into(),
                generation: 2,
                kind: "reminder_2h".into(),
                due_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            }),
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        );
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["event"]["type"], "job_due");
        assert_eq!(json["schema"], 1);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.event.routing_key(), "job.due.urgent", "a 2 h reminder travels in the urgent lane");
    }
}
