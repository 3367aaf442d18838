//! The FHIR R4 elements Careline reads. Every element is optional here (the mapping decides
//! what is required, so it can say so with the element's path) and unknown elements are
//! ignored. A value of the wrong JSON type is an error naming its path.

use serde::Deserialize;
use serde_json::Value;

/// `Meta`: the source server's version of the resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Coding {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CodeableConcept {
    #[serde(default)]
    pub coding: Vec<Coding>,
    pub text: Option<String>,
}

impl CodeableConcept {
    /// Whether any coding has this system and code.
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.coding.iter().any(|c| c.system.as_deref() == Some(system) && c.code.as_deref() == Some(code))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Identifier {
    #[serde(rename = "use")]
    pub use_: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<CodeableConcept>,
    pub system: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reference {
    pub reference: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub identifier: Option<Identifier>,
    pub display: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Period {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// An extension with the value types Careline reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    pub url: Option<String>,
    pub value_string: Option<String>,
    pub value_code: Option<String>,
    pub value_id: Option<String>,
    pub value_reference: Option<Reference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContactPoint {
    pub system: Option<String>,
    pub value: Option<String>,
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub rank: Option<i64>,
    pub period: Option<Period>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HumanName {
    #[serde(rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub given: Vec<String>,
    pub family: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PatientCommunication {
    pub language: Option<CodeableConcept>,
    pub preferred: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    pub id: Option<String>,
    pub meta: Option<Meta>,
    #[serde(default)]
    pub extension: Vec<Extension>,
    #[serde(default)]
    pub identifier: Vec<Identifier>,
    #[serde(default)]
    pub name: Vec<HumanName>,
    #[serde(default)]
    pub telecom: Vec<ContactPoint>,
    #[serde(default)]
    pub communication: Vec<PatientCommunication>,
    pub managing_organization: Option<Reference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppointmentParticipant {
    #[serde(rename = "type", default)]
    pub kind: Vec<CodeableConcept>,
    pub actor: Option<Reference>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: Option<String>,
    pub meta: Option<Meta>,
    #[serde(default)]
    pub extension: Vec<Extension>,
    #[serde(default)]
    pub identifier: Vec<Identifier>,
    pub status: Option<String>,
    #[serde(default)]
    pub service_type: Vec<CodeableConcept>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub minutes_duration: Option<i64>,
    pub patient_instruction: Option<String>,
    #[serde(default)]
    pub participant: Vec<AppointmentParticipant>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsentPolicy {
    pub authority: Option<String>,
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Attachment {
    pub url: Option<String>,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsentProvision {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub period: Option<Period>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    pub id: Option<String>,
    pub meta: Option<Meta>,
    #[serde(default)]
    pub extension: Vec<Extension>,
    #[serde(default)]
    pub identifier: Vec<Identifier>,
    pub status: Option<String>,
    pub scope: Option<CodeableConcept>,
    #[serde(default)]
    pub category: Vec<CodeableConcept>,
    pub patient: Option<Reference>,
    pub date_time: Option<String>,
    #[serde(default)]
    pub performer: Vec<Reference>,
    #[serde(default)]
    pub organization: Vec<Reference>,
    pub source_attachment: Option<Attachment>,
    pub source_reference: Option<Reference>,
    #[serde(default)]
    pub policy: Vec<ConsentPolicy>,
    pub policy_rule: Option<CodeableConcept>,
    pub provision: Option<ConsentProvision>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BundleRequest {
    pub method: Option<String>,
    pub url: Option<String>,
}

/// An entry; its resource is read on its own so an error can name the entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    pub full_url: Option<String>,
    pub resource: Option<Value>,
    pub request: Option<BundleRequest>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Bundle {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub entry: Vec<BundleEntry>,
}
