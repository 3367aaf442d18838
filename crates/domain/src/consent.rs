//! WhatsApp consent: the state, and where it came from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    OptedIn,
    OptedOut,
}

impl ConsentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedIn => "opted_in",
            Self::OptedOut => "opted_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "opted_in" => Some(Self::OptedIn),
            "opted_out" => Some(Self::OptedOut),
            _ => None,
        }
    }
}

/// How the consent was obtained or withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    BookingForm,
    FrontDesk,
    HospitalSystem,
    PatientPortal,
    WhatsappKeyword,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookingForm => "booking_form",
            Self::FrontDesk => "front_desk",
            Self::HospitalSystem => "hospital_system",
            Self::PatientPortal => "patient_portal",
            Self::WhatsappKeyword => "whatsapp_keyword",
        }
    }
}

/// A consent statement as a hospital system reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub state: ConsentState,
    /// When the patient gave or withdrew consent (not when Careline heard of it).
    pub recorded_at: DateTime<Utc>,
    pub source: ConsentSource,
    /// A reference to the evidence kept by the hospital (form id, signed document id).
    #[serde(default)]
    pub evidence: Option<String>,
    /// The version of the consent wording the patient saw.
    #[serde(default)]
    pub wording_version: Option<String>,
}
