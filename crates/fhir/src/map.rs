//! FHIR resources mapped to what Careline needs to know, with where each value was read.
//!
//! | Careline | from |
//! |---|---|
//! | appointment id | `Appointment.id`, else its first `identifier.value` |
//! | status | `Appointment.status`: `booked`, `arrived`, `checked-in` are booked; `proposed`, `pending`, `waitlist` (not booked yet), `cancelled`, `noshow`, `entered-in-error`, `fulfilled` are cancelled (nothing more is sent) |
//! | starts_at | `Appointment.start` (an instant with an offset) |
//! | duration | `end − start` (rounded up to whole minutes), else `minutesDuration` |
//! | patient | the participant whose `actor` is a `Patient` (`Patient/<id>`, an absolute URL, a Bundle `urn:uuid:`, or a logical reference by `identifier`) |
//! | clinician | the `display` of the first participant that is a `Practitioner` or `PractitionerRole` |
//! | department | `serviceType[0]`: its `text`, else its first coding's `display`, else `code` |
//! | instructions | `patientInstruction` |
//! | facility | the [`FACILITY_EXTENSION`] extension when present, else the first `Location` participant that is a configured facility (else the first `Location`, which validation then refuses) |
//! | version | `meta.lastUpdated` in epoch milliseconds, else an integer `meta.versionId`, else the time ingest received it |
//! | patient id | `Patient.id`, else the `identifier` of type `MR`, else the first identifier |
//! | first name | the first `given` of the `usual` name, else the `official`, else any name not `old`/`maiden` |
//! | phone | see [`choose_phone`] |
//! | language | `communication` (`preferred` first): the BCP 47 code of its `language`, else the network's default language |
//! | patient facility | [`FACILITY_EXTENSION`], else `managingOrganization` when it names a configured facility, else (in a Bundle) the facility of an appointment of that patient in the same Bundle |
//!
//! Consent: see [`map_consent`].

use std::collections::HashMap;

use careline_domain::Phone;
use careline_domain::consent::ConsentState;
use careline_domain::events::AppointmentStatus;
use careline_domain::facility::NetworkConfig;
use chrono::{DateTime, Utc};

use crate::outcome::{Issue, IssueCode};
use crate::read::printable;
use crate::resources::{
    Appointment, CodeableConcept, Consent, ContactPoint, Extension, Identifier, Meta, Patient, Reference,
};

/// The extension naming the Careline facility of a resource; its value is a `valueString`,
/// `valueCode`, `valueId` or a `valueReference` to `Location/<facility id>`.
pub const FACILITY_EXTENSION: &str = "https://careline.dev/fhir/StructureDefinition/facility";
/// The code system of Careline's consent category.
pub const CONSENT_CATEGORY_SYSTEM: &str = "https://careline.dev/fhir/CodeSystem/consent-category";
/// The category code (and policy) that marks a Consent as the WhatsApp reminders consent.
pub const WHATSAPP_CONSENT_CODE: &str = "whatsapp-reminders";
/// The policy URI that marks a Consent as the WhatsApp reminders consent.
pub const WHATSAPP_CONSENT_POLICY: &str = "https://careline.dev/fhir/consent-policy/whatsapp-reminders";
/// A `meta.lastUpdated` or consent `dateTime` may be this far in the future (clock skew).
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// Evidence is bounded like the JSON API's.
const MAX_EVIDENCE_CHARS: usize = 200;

/// Careline's field names (as the JSON API names them), for [`Locations`].
pub mod fields {
    pub const PATIENT_ID: &str = "patient_id";
    pub const FACILITY_ID: &str = "facility_id";
    pub const FIRST_NAME: &str = "first_name";
    pub const PHONE: &str = "phone";
    pub const LANGUAGE: &str = "language";
    pub const APPOINTMENT_ID: &str = "appointment_id";
    pub const VERSION: &str = "version";
    pub const STATUS: &str = "status";
    pub const STARTS_AT: &str = "starts_at";
    pub const DURATION_MINUTES: &str = "duration_minutes";
    pub const CLINICIAN: &str = "clinician";
    pub const DEPARTMENT: &str = "department";
    pub const INSTRUCTIONS: &str = "instructions";
}

/// Where each Careline field was read (or would have been), relative to the resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations(Vec<(&'static str, String)>);

impl Locations {
    fn set(&mut self, field: &'static str, at: impl Into<String>) {
        self.0.retain(|(f, _)| *f != field);
        self.0.push((field, at.into()));
    }

    /// The element a Careline field came from, e.g. `participant[0].actor.reference`.
    pub fn of(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, at)| at.as_str())
    }
}

/// What a reference inside a Bundle points to: `fullUrl` → (resource type, Careline id).
#[derive(Debug, Clone, Default)]
pub struct References(HashMap<String, (String, String)>);

impl References {
    pub fn insert(&mut self, full_url: &str, resource_type: &str, id: &str) {
        self.0.insert(full_url.to_owned(), (resource_type.to_owned(), id.to_owned()));
    }
}

/// What the mapping needs besides the resource.
pub struct Context<'a> {
    pub network: &'a NetworkConfig,
    pub now: DateTime<Utc>,
    pub references: &'a References,
}

/// Where a reference leads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A resource of a known (or unstated, `""`) type and id.
    Found { resource_type: String, id: String },
    /// A `urn:` or `#contained` reference that names nothing Careline can see.
    Unresolved { resource_type: String },
    /// Only a display, or nothing.
    Nothing,
}

fn target(reference: &Reference, references: &References) -> Target {
    let stated = reference.kind.clone().unwrap_or_default();
    if let Some(r) = reference.reference.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        if let Some((resource_type, id)) = references.0.get(r) {
            return Target::Found { resource_type: resource_type.clone(), id: id.clone() };
        }
        if r.starts_with("urn:") || r.starts_with('#') {
            return Target::Unresolved { resource_type: stated };
        }
        let mut segments: Vec<&str> = r.split('/').filter(|s| !s.is_empty()).collect();
        if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
            segments.truncate(segments.len() - 2);
        }
        return match segments.as_slice() {
            [.., resource_type, id] => {
                Target::Found { resource_type: (*resource_type).to_owned(), id: (*id).to_owned() }
            }
            [id] => Target::Found { resource_type: stated, id: (*id).to_owned() },
            [] => Target::Nothing,
        };
    }
    match reference.identifier.as_ref().and_then(|i| i.value.as_deref()) {
        Some(value) if !value.trim().is_empty() => Target::Found { resource_type: stated, id: value.trim().to_owned() },
        _ => Target::Nothing,
    }
}

/// The element of a reference that named its target.
fn reference_element(reference: &Reference) -> &'static str {
    if reference.reference.is_some() { "reference" } else { "identifier.value" }
}

/// An id given by an extension `valueString`/`valueCode`/`valueId`/`valueReference`.
fn extension_value(extension: &Extension, references: &References) -> Option<(String, &'static str)> {
    if let Some(v) = &extension.value_string {
        return Some((v.clone(), "valueString"));
    }
    if let Some(v) = &extension.value_code {
        return Some((v.clone(), "valueCode"));
    }
    if let Some(v) = &extension.value_id {
        return Some((v.clone(), "valueId"));
    }
    match extension.value_reference.as_ref().map(|r| target(r, references)) {
        Some(Target::Found { id, .. }) => Some((id, "valueReference")),
        _ => None,
    }
}

/// The facility named by [`FACILITY_EXTENSION`], with its location.
fn facility_extension(extensions: &[Extension], references: &References) -> Option<(String, String)> {
    extensions.iter().enumerate().find(|(_, e)| e.url.as_deref() == Some(FACILITY_EXTENSION)).and_then(|(i, e)| {
        extension_value(e, references).map(|(value, element)| (value, format!("extension[{i}].{element}")))
    })
}

/// Among candidate (id, location) pairs, the first that is a configured facility, else the first.
fn choose_facility(candidates: Vec<(String, String)>, network: &NetworkConfig) -> Option<(String, String)> {
    candidates.iter().find(|(id, _)| network.facility(id).is_some()).cloned().or_else(|| candidates.into_iter().next())
}

/// The Careline version of a resource and, when it has one, the instant of `meta.lastUpdated`.
fn version_of(
    meta: Option<&Meta>,
    now: DateTime<Utc>,
    issues: &mut Vec<Issue>,
) -> (Option<i64>, Option<DateTime<Utc>>, &'static str) {
    let meta = meta.cloned().unwrap_or_default();
    if let Some(text) = meta.last_updated.as_deref() {
        return match instant(text) {
            Some(at) if at > now + CLOCK_SKEW => {
                issues.push(Issue::error(
                    IssueCode::Value,
                    Some("meta.lastUpdated"),
                    "must not be in the future: a future version would hide every later update",
                ));
                (None, None, "meta.lastUpdated")
            }
            Some(at) => (Some(at.timestamp_millis()), Some(at), "meta.lastUpdated"),
            None => {
                issues.push(Issue::error(
                    IssueCode::Value,
                    Some("meta.lastUpdated"),
                    "must be an instant with a UTC offset, e.g. 2026-03-01T09:30:00+05:30",
                ));
                (None, None, "meta.lastUpdated")
            }
        };
    }
    if let Some(version) = meta.version_id.as_deref().and_then(|v| v.trim().parse::<i64>().ok()) {
        return (Some(version), None, "meta.versionId");
    }
    (Some(now.timestamp_millis()), None, "meta")
}

/// An instant: date, time and offset (FHIR `instant`, or a `dateTime` with a time).
fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|at| at.with_timezone(&Utc))
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The id of a resource: its `id`, else the identifier of type `MR` (patients), else the first
/// identifier with a value.
fn id_of(id: Option<&str>, identifiers: &[Identifier], prefer_mrn: bool) -> (Option<String>, String) {
    if let Some(id) = id {
        return (Some(id.to_owned()), "id".to_owned());
    }
    let with_value = || identifiers.iter().enumerate().filter(|(_, i)| non_empty(i.value.as_deref()).is_some());
    let mrn = with_value().find(|(_, i)| {
        prefer_mrn && i.kind.as_ref().is_some_and(|k| k.coding.iter().any(|c| c.code.as_deref() == Some("MR")))
    });
    match mrn.or_else(|| with_value().next()) {
        Some((n, i)) => (non_empty(i.value.as_deref()), format!("identifier[{n}].value")),
        None => (None, "id".to_owned()),
    }
}

/// The Careline id an entry's resource will have, for resolving Bundle references to it.
pub fn careline_id(resource: &crate::Resource) -> Option<String> {
    match resource {
        crate::Resource::Patient(p) => id_of(p.id.as_deref(), &p.identifier, true).0,
        crate::Resource::Appointment(a) => id_of(a.id.as_deref(), &a.identifier, false).0,
        crate::Resource::Consent(c) => id_of(c.id.as_deref(), &c.identifier, false).0,
        crate::Resource::Bundle(_) => None,
    }
}

/// An appointment as the resource describes it.
#[derive(Debug, Clone, Default)]
pub struct AppointmentReport {
    pub appointment_id: Option<String>,
    pub facility_id: Option<String>,
    pub patient_id: Option<String>,
    pub version: Option<i64>,
    pub status: Option<AppointmentStatus>,
    pub starts_at: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i64>,
    pub clinician: Option<String>,
    pub department: Option<String>,
    pub instructions: Option<String>,
    /// Set when the resource is acknowledged without anything to record (a proposal with no
    /// start yet): why.
    pub not_recorded: Option<String>,
    /// What the reading found: errors mean the resource cannot be applied as sent.
    pub issues: Vec<Issue>,
    pub locations: Locations,
}

/// FHIR `Appointment.status` in Careline's lifecycle (`None`: not an R4 status).
pub fn lifecycle_of(status: &str) -> Option<AppointmentStatus> {
    match status {
        "booked" | "arrived" | "checked-in" => Some(AppointmentStatus::Booked),
        "proposed" | "pending" | "waitlist" | "cancelled" | "noshow" | "entered-in-error" | "fulfilled" => {
            Some(AppointmentStatus::Cancelled)
        }
        _ => None,
    }
}

pub fn map_appointment(a: &Appointment, ctx: &Context<'_>) -> AppointmentReport {
    let mut r = AppointmentReport::default();
    let (id, at) = id_of(a.id.as_deref(), &a.identifier, false);
    r.appointment_id = id;
    r.locations.set(fields::APPOINTMENT_ID, at);

    let (version, _, at) = version_of(a.meta.as_ref(), ctx.now, &mut r.issues);
    r.version = version;
    r.locations.set(fields::VERSION, at);

    r.locations.set(fields::STATUS, "status");
    let status = a.status.as_deref().map(str::trim);
    match status {
        None | Some("") => r.issues.push(Issue::error(IssueCode::Required, Some("status"), "status is required")),
        Some(s) => {
            r.status = lifecycle_of(s);
            if r.status.is_none() {
                r.issues.push(Issue::error(
                    IssueCode::CodeInvalid,
                    Some("status"),
                    format!(
                        "'{}' is not an R4 appointment status (proposed, pending, booked, arrived, fulfilled, \
                         cancelled, noshow, entered-in-error, checked-in, waitlist)",
                        printable(s)
                    ),
                ));
            }
        }
    }

    r.locations.set(fields::STARTS_AT, "start");
    r.starts_at = a.start.as_deref().and_then(|text| {
        let at = instant(text);
        if at.is_none() {
            r.issues.push(Issue::error(
                IssueCode::Value,
                Some("start"),
                "must be an instant with a UTC offset, e.g. 2026-03-01T09:30:00+05:30",
            ));
        }
        at
    });
    if a.start.is_none() && matches!(status, Some("proposed" | "pending" | "waitlist")) {
        r.not_recorded = Some(format!(
            "a {} appointment without a start has nothing to remind of; it was not recorded",
            status.unwrap_or_default()
        ));
    }

    r.locations.set(fields::DURATION_MINUTES, "minutesDuration");
    let end = a.end.as_deref().map(|text| {
        r.locations.set(fields::DURATION_MINUTES, "end");
        let at = instant(text);
        if at.is_none() {
            r.issues.push(Issue::error(IssueCode::Value, Some("end"), "must be an instant with a UTC offset"));
        }
        at
    });
    r.duration_minutes = match (r.starts_at, end) {
        (Some(start), Some(Some(end))) if end < start => {
            r.issues.push(Issue::error(IssueCode::Value, Some("end"), "must not be before start"));
            None
        }
        (Some(start), Some(Some(end))) => {
            let seconds = (end - start).num_seconds();
            let minutes = seconds.div_euclid(60) + i64::from(seconds.rem_euclid(60) > 0);
            (minutes > 0).then_some(minutes)
        }
        (_, Some(_)) => None,
        (_, None) => a.minutes_duration,
    };

    let mut locations = Vec::new();
    let mut patients: Vec<(String, String)> = Vec::new();
    for (i, participant) in a.participant.iter().enumerate() {
        let Some(actor) = &participant.actor else { continue };
        let element = format!("participant[{i}].actor.{}", reference_element(actor));
        match target(actor, ctx.references) {
            Target::Found { resource_type, id } => match resource_type.as_str() {
                "Patient" if !patients.iter().any(|(p, _)| *p == id) => patients.push((id, element)),
                "Patient" => {}
                "Location" => locations.push((id, element)),
                "Practitioner" | "PractitionerRole" if r.clinician.is_none() => {
                    r.clinician = non_empty(actor.display.as_deref());
                    r.locations.set(fields::CLINICIAN, format!("participant[{i}].actor.display"));
                }
                _ => {}
            },
            Target::Unresolved { resource_type } if matches!(resource_type.as_str(), "" | "Patient" | "Location") => {
                r.issues.push(Issue::error(
                    IssueCode::NotFound,
                    Some(&element),
                    "the reference names no entry of this Bundle and no resource id Careline can use",
                ));
            }
            Target::Unresolved { .. } | Target::Nothing => {
                if matches!(actor.kind.as_deref(), Some("Practitioner" | "PractitionerRole")) && r.clinician.is_none() {
                    r.clinician = non_empty(actor.display.as_deref());
                    r.locations.set(fields::CLINICIAN, format!("participant[{i}].actor.display"));
                }
            }
        }
    }
    r.locations.set(fields::PATIENT_ID, "participant");
    match patients.as_slice() {
        [] => {}
        [(id, at)] => {
            r.patient_id = Some(id.clone());
            r.locations.set(fields::PATIENT_ID, at.clone());
        }
        [..] => r.issues.push(Issue::error(
            IssueCode::NotSupported,
            Some("participant"),
            "several patients take part; Careline accepts one patient per appointment",
        )),
    }
    r.locations.set(fields::FACILITY_ID, "participant");
    if let Some((id, at)) =
        facility_extension(&a.extension, ctx.references).or_else(|| choose_facility(locations, ctx.network))
    {
        r.facility_id = Some(id);
        r.locations.set(fields::FACILITY_ID, at);
    }

    if let Some(service) = a.service_type.first() {
        r.department = concept_text(service);
        r.locations.set(fields::DEPARTMENT, "serviceType[0]");
    }
    r.instructions = a.patient_instruction.clone();
    r.locations.set(fields::INSTRUCTIONS, "patientInstruction");
    r
}

fn concept_text(concept: &CodeableConcept) -> Option<String> {
    non_empty(concept.text.as_deref())
        .or_else(|| concept.coding.iter().find_map(|c| non_empty(c.display.as_deref())))
        .or_else(|| concept.coding.iter().find_map(|c| non_empty(c.code.as_deref())))
}

/// A patient as the resource describes it.
#[derive(Debug, Clone, Default)]
pub struct PatientReport {
    pub patient_id: Option<String>,
    pub facility_id: Option<String>,
    pub first_name: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub language: Option<String>,
    /// `meta.lastUpdated`: a profile older than the one Careline holds does not replace it.
    pub reported_at: Option<DateTime<Utc>>,
    pub issues: Vec<Issue>,
    pub locations: Locations,
}

impl PatientReport {
    /// No number Careline could message: the profile cannot be recorded (a warning says so).
    pub fn has_no_phone(&self) -> bool {
        self.phone.is_none() && !self.issues.iter().any(Issue::is_error)
    }
}

pub fn map_patient(p: &Patient, ctx: &Context<'_>) -> PatientReport {
    let mut r = PatientReport::default();
    let (id, at) = id_of(p.id.as_deref(), &p.identifier, true);
    r.patient_id = id;
    r.locations.set(fields::PATIENT_ID, at);
    let (_, reported_at, _) = version_of(p.meta.as_ref(), ctx.now, &mut r.issues);
    r.reported_at = reported_at;

    r.locations.set(fields::FACILITY_ID, "managingOrganization");
    let organization = p.managing_organization.as_ref().and_then(|o| match target(o, ctx.references) {
        Target::Found { id, .. } if ctx.network.facility(&id).is_some() => {
            Some((id, format!("managingOrganization.{}", reference_element(o))))
        }
        _ => None,
    });
    if let Some((id, at)) = facility_extension(&p.extension, ctx.references).or(organization) {
        r.facility_id = Some(id);
        r.locations.set(fields::FACILITY_ID, at);
    }

    r.locations.set(fields::FIRST_NAME, "name");
    let rank = |use_: Option<&str>| match use_ {
        Some("usual") => 0,
        Some("official") => 1,
        _ => 2,
    };
    let mut names: Vec<(usize, &crate::resources::HumanName)> =
        p.name.iter().enumerate().filter(|(_, n)| !matches!(n.use_.as_deref(), Some("old" | "maiden"))).collect();
    names.sort_by_key(|(i, n)| (rank(n.use_.as_deref()), *i));
    if let Some((i, given)) =
        names.iter().find_map(|(i, n)| non_empty(n.given.first().map(String::as_str)).map(|g| (i, g)))
    {
        r.first_name = Some(given);
        r.locations.set(fields::FIRST_NAME, format!("name[{i}].given[0]"));
    }

    r.locations.set(fields::PHONE, "telecom");
    match choose_phone(&p.telecom, ctx.now) {
        PhoneChoice::Chosen { phone, index } => {
            r.phone = Some(phone.e164().to_owned());
            r.locations.set(fields::PHONE, format!("telecom[{index}].value"));
        }
        PhoneChoice::Unusable { index, reason } => {
            let at = format!("telecom[{index}].value");
            r.issues.push(Issue::error(IssueCode::Value, Some(&at), reason));
            r.locations.set(fields::PHONE, at);
        }
        PhoneChoice::None => r.issues.push(Issue::warning(
            IssueCode::Incomplete,
            Some("telecom"),
            "no mobile phone number (telecom with system=phone and use=mobile, in international form); \
             Careline cannot message this patient, so the profile was not recorded",
        )),
    }

    let mut spoken: Vec<(usize, &crate::resources::PatientCommunication)> =
        p.communication.iter().enumerate().collect();
    spoken.sort_by_key(|(i, c)| (c.preferred != Some(true), *i));
    let language = spoken.iter().find_map(|(i, c)| {
        let concept = c.language.as_ref()?;
        let bcp47 = concept.coding.iter().enumerate().find(|(_, c)| c.system.as_deref() == Some("urn:ietf:bcp:47"));
        let (j, coding) = bcp47.or_else(|| concept.coding.iter().enumerate().find(|(_, c)| c.code.is_some()))?;
        Some((non_empty(coding.code.as_deref())?, format!("communication[{i}].language.coding[{j}].code")))
    });
    match language {
        Some((tag, at)) => {
            r.language = Some(tag);
            r.locations.set(fields::LANGUAGE, at);
        }
        None => {
            r.language = Some(ctx.network.default_language.clone());
            r.locations.set(fields::LANGUAGE, "communication");
        }
    }
    r
}

/// The number chosen from `Patient.telecom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneChoice {
    Chosen {
        phone: Phone,
        index: usize,
    },
    /// The only mobile numbers given cannot be used as written: the first, and why.
    Unusable {
        index: usize,
        reason: String,
    },
    None,
}

/// Chooses the number to message from `telecom`:
///
/// 1. only `system` `phone` or `sms`, not `use=old`, not past its `period.end`;
/// 2. the entries with `use=mobile` whose value is a valid international number (`+91…` or
///    `0091…`), the lowest `rank` first, then document order;
/// 3. else, when a `use=mobile` entry was given but none is usable, an error naming the first;
/// 4. else any other entry whose number is a mobile number by its country's numbering plan
///    (a home or unspecified number may be a mobile), lowest `rank` first;
/// 5. else none: the patient cannot be messaged.
pub fn choose_phone(telecom: &[ContactPoint], now: DateTime<Utc>) -> PhoneChoice {
    let current = |c: &ContactPoint| {
        matches!(c.system.as_deref(), Some("phone" | "sms"))
            && c.use_.as_deref() != Some("old")
            && c.period.as_ref().and_then(|p| p.end.as_deref()).and_then(instant).is_none_or(|end| end >= now)
    };
    let mut candidates: Vec<(usize, &ContactPoint)> = telecom.iter().enumerate().filter(|(_, c)| current(c)).collect();
    candidates.sort_by_key(|(i, c)| (c.rank.unwrap_or(i64::MAX), *i));
    let parsed = |c: &ContactPoint| -> Result<Phone, String> {
        let value = c.value.as_deref().unwrap_or("").trim();
        let international = match value.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => value.to_owned(),
        };
        Phone::parse(&international).map_err(|e| format!("{e} (write it with its country code, e.g. +919812345678)"))
    };
    let mut first_unusable = None;
    for (i, c) in candidates.iter().filter(|(_, c)| c.use_.as_deref() == Some("mobile")) {
        match parsed(c) {
            Ok(phone) => return PhoneChoice::Chosen { phone, index: *i },
            Err(reason) => {
                first_unusable.get_or_insert((*i, reason));
            }
        }
    }
    if let Some((index, reason)) = first_unusable {
        return PhoneChoice::Unusable { index, reason };
    }
    candidates
        .iter()
        .filter(|(_, c)| c.use_.as_deref() != Some("mobile"))
        .find_map(|(i, c)| parsed(c).ok().filter(is_mobile).map(|phone| PhoneChoice::Chosen { phone, index: *i }))
        .unwrap_or(PhoneChoice::None)
}

fn is_mobile(phone: &Phone) -> bool {
    use phonenumber::Type;
    phonenumber::parse(None, phone.e164()).is_ok_and(|n| {
        matches!(n.number_type(&phonenumber::metadata::DATABASE), Type::Mobile | Type::FixedLineOrMobile)
    })
}

/// A WhatsApp consent statement as the resource describes it.
#[derive(Debug, Clone, Default)]
pub struct ConsentReport {
    pub patient_id: Option<String>,
    pub facility_id: Option<String>,
    pub state: Option<ConsentState>,
    pub recorded_at: Option<DateTime<Utc>>,
    /// Where the hospital keeps the evidence (`sourceReference`, the Consent's own id) and who
    /// gave it (`performer`).
    pub evidence: Option<String>,
    pub issues: Vec<Issue>,
    pub locations: Locations,
}

/// A `Consent` for WhatsApp reminders:
///
/// * it must be marked as one: a `category` coding [`CONSENT_CATEGORY_SYSTEM`]`|`[`WHATSAPP_CONSENT_CODE`],
///   or a `policy.uri` (or `policyRule` coding code) [`WHATSAPP_CONSENT_POLICY`]/[`WHATSAPP_CONSENT_CODE`];
/// * `status` `active` is opted in (opted out when `provision.type` is `deny`); `inactive` and
///   `rejected` are opted out; `draft`, `proposed` and `entered-in-error` are refused (the
///   consent log is append-only: a mistaken entry is corrected by a newer Consent);
/// * `patient` is the patient, `dateTime` when the patient decided (required, with a time and
///   an offset, not in the future);
/// * the facility is [`FACILITY_EXTENSION`], else the first `organization` that is a
///   configured facility;
/// * the evidence kept is `sourceReference` (else `sourceAttachment` url/title, else
///   `Consent/<id>`), followed by the `performer` references.
pub fn map_consent(c: &Consent, ctx: &Context<'_>) -> ConsentReport {
    let mut r = ConsentReport::default();
    let marked = c.category.iter().any(|k| k.has(CONSENT_CATEGORY_SYSTEM, WHATSAPP_CONSENT_CODE))
        || c.policy.iter().any(|p| p.uri.as_deref() == Some(WHATSAPP_CONSENT_POLICY))
        || c.policy_rule.as_ref().is_some_and(|rule| {
            rule.coding.iter().any(|k| {
                k.code.as_deref() == Some(WHATSAPP_CONSENT_CODE) || k.system.as_deref() == Some(WHATSAPP_CONSENT_POLICY)
            })
        });
    if !marked {
        r.issues.push(Issue::error(
            IssueCode::NotSupported,
            Some("category"),
            format!(
                "Careline records only the WhatsApp reminders consent: add the category \
                 {CONSENT_CATEGORY_SYSTEM}|{WHATSAPP_CONSENT_CODE} or the policy uri {WHATSAPP_CONSENT_POLICY}"
            ),
        ));
    }

    let deny = c.provision.as_ref().and_then(|p| p.kind.as_deref()) == Some("deny");
    match c.status.as_deref().map(str::trim) {
        Some("active") => r.state = Some(if deny { ConsentState::OptedOut } else { ConsentState::OptedIn }),
        Some("inactive" | "rejected") => r.state = Some(ConsentState::OptedOut),
        Some(s @ ("draft" | "proposed")) => r.issues.push(Issue::error(
            IssueCode::BusinessRule,
            Some("status"),
            format!("a {s} consent is not a decision yet; send it once it is active (or rejected)"),
        )),
        Some("entered-in-error") => r.issues.push(Issue::error(
            IssueCode::NotSupported,
            Some("status"),
            "the consent log is append-only: correct a mistaken consent by sending the patient's current one",
        )),
        Some(s) if !s.is_empty() => r.issues.push(Issue::error(
            IssueCode::CodeInvalid,
            Some("status"),
            format!("'{}' is not an R4 consent status", printable(s)),
        )),
        _ => r.issues.push(Issue::error(IssueCode::Required, Some("status"), "status is required")),
    }

    match c.patient.as_ref().map(|p| (p, target(p, ctx.references))) {
        Some((p, Target::Found { resource_type, id })) if matches!(resource_type.as_str(), "" | "Patient") => {
            r.patient_id = Some(id);
            r.locations.set(fields::PATIENT_ID, format!("patient.{}", reference_element(p)));
        }
        Some((p, _)) => {
            let at = format!("patient.{}", reference_element(p));
            r.issues.push(Issue::error(IssueCode::Value, Some(&at), "must reference the Patient (Patient/<id>)"));
        }
        None => r.issues.push(Issue::error(IssueCode::Required, Some("patient"), "patient is required")),
    }

    match c.date_time.as_deref().map(instant) {
        Some(Some(at)) if at > ctx.now + CLOCK_SKEW => {
            r.issues.push(Issue::error(IssueCode::Value, Some("dateTime"), "must not be in the future"));
        }
        Some(Some(at)) => r.recorded_at = Some(at),
        Some(None) => r.issues.push(Issue::error(
            IssueCode::Value,
            Some("dateTime"),
            "must be a date and time with a UTC offset, e.g. 2026-01-05T10:00:00+05:30",
        )),
        None => r.issues.push(Issue::error(
            IssueCode::Required,
            Some("dateTime"),
            "dateTime (when the patient decided) is required: the latest decision wins",
        )),
    }

    r.locations.set(fields::FACILITY_ID, "organization");
    let organizations = c
        .organization
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match target(o, ctx.references) {
            Target::Found { id, .. } => Some((id, format!("organization[{i}].{}", reference_element(o)))),
            _ => None,
        })
        .collect();
    if let Some((id, at)) =
        facility_extension(&c.extension, ctx.references).or_else(|| choose_facility(organizations, ctx.network))
    {
        r.facility_id = Some(id);
        r.locations.set(fields::FACILITY_ID, at);
    }

    let source = c
        .source_reference
        .as_ref()
        .and_then(|s| non_empty(s.reference.as_deref()))
        .or_else(|| {
            c.source_attachment
                .as_ref()
                .and_then(|a| non_empty(a.url.as_deref()).or_else(|| non_empty(a.title.as_deref())))
        })
        .or_else(|| c.id.as_deref().map(|id| format!("Consent/{id}")));
    let performers: Vec<String> = c.performer.iter().filter_map(|p| non_empty(p.reference.as_deref())).collect();
    let mut evidence = source.unwrap_or_default();
    if !performers.is_empty() {
        if !evidence.is_empty() {
            evidence.push_str("; ");
        }
        evidence.push_str("performer ");
        evidence.push_str(&performers.join(", "));
    }
    let evidence: String = evidence.chars().filter(|c| !c.is_control()).take(MAX_EVIDENCE_CHARS).collect();
    r.evidence = (!evidence.is_empty()).then_some(evidence);
    r
}

#[cfg(test)]
mod tests;
