//! WhatsApp consent: the state, what it is for, and where it came from.
//!
//! Consent is kept per channel (only WhatsApp today) and per purpose: `care` covers
//! appointment confirmations, reminders and notices; `marketing` covers campaigns. One never
//! implies the other. Every statement carries its provenance: how it was obtained
//! ([`ConsentSource`]), who recorded it, when the patient gave it, the evidence and the version
//! of the wording the patient saw.

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
    pub const ALL: [Self; 5] =
        [Self::BookingForm, Self::FrontDesk, Self::HospitalSystem, Self::PatientPortal, Self::WhatsappKeyword];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookingForm => "booking_form",
            Self::FrontDesk => "front_desk",
            Self::HospitalSystem => "hospital_system",
            Self::PatientPortal => "patient_portal",
            Self::WhatsappKeyword => "whatsapp_keyword",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the consent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPurpose {
    /// Appointment confirmations, reminders and notices (the sender's messages).
    #[default]
    Care,
    /// Campaigns; never implied by `care`.
    Marketing,
}

impl ConsentPurpose {
    pub const ALL: [Self; 2] = [Self::Care, Self::Marketing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Care => "care",
            Self::Marketing => "marketing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where the consent applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChannel {
    #[default]
    Whatsapp,
}

impl ConsentChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "whatsapp").then_some(Self::Whatsapp)
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
    /// What the consent is for (`care` when absent).
    #[serde(default)]
    pub purpose: ConsentPurpose,
    /// Where it applies (`whatsapp` when absent).
    #[serde(default)]
    pub channel: ConsentChannel,
    /// Who recorded it at the hospital: a staff or system id (never a name).
    #[serde(default)]
    pub recorded_by: Option<String>,
}
