//! The native JSON API: what a hospital system sends, how it is checked, and the event it
//! becomes.
//!
//! Request bodies are parsed with every field optional, so a JSON *type* error is a 400 naming
//! the field while a missing or unacceptable *value* is a 422 listing every offending field at
//! once. Ingest keeps no state of its own: a request is either turned into one event and
//! confirmed by the broker (202, with the event id), or refused with nothing written anywhere.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use careline_domain::consent::{ConsentChannel, ConsentPurpose, ConsentRecord, ConsentSource, ConsentState};
use careline_domain::events::{AppointmentStatus, AppointmentUpserted, Event, PatientUpserted};
use careline_domain::facility::NetworkConfig;
use careline_domain::{Phone, PhoneError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::problem::{FieldError, Problem};

/// The longest id (patient, appointment, facility) accepted.
pub const MAX_ID_CHARS: usize = 128;
/// Consent may be dated this far in the future (clock skew between systems), no further.
const CONSENT_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// An appointment longer than a day is a data error.
const MAX_DURATION_MINUTES: i64 = 24 * 60;
const MAX_NAME_CHARS: usize = 100;
const MAX_LABEL_CHARS: usize = 200;
const MAX_INSTRUCTIONS_CHARS: usize = 2000;
const MAX_LANGUAGE_CHARS: usize = 35;

/// `PUT /v1/patients/{patient_id}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    pub facility_id: Option<String>,
    pub first_name: Option<String>,
    pub phone: Option<String>,
    pub language: Option<String>,
    pub consent: Option<ConsentBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    pub state: Option<String>,
    pub recorded_at: Option<String>,
    pub source: Option<String>,
    pub evidence: Option<String>,
    pub wording_version: Option<String>,
    /// `care` (default) or `marketing`.
    pub purpose: Option<String>,
    /// `whatsapp` (default).
    pub channel: Option<String>,
    /// Who at the hospital took the consent: a staff or system id, never a name.
    pub recorded_by: Option<String>,
}

/// `PUT /v1/appointments/{appointment_id}` and `POST /v1/appointments/{appointment_id}/cancel`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentBody {
    pub facility_id: Option<String>,
    pub patient_id: Option<String>,
    pub version: Option<i64>,
    pub status: Option<String>,
    pub starts_at: Option<String>,
    pub duration_minutes: Option<i64>,
    pub clinician: Option<String>,
    pub department: Option<String>,
    pub instructions: Option<String>,
}

/// The answer to an accepted request: the id of the event the broker confirmed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub event_id: Uuid,
}

pub async fn put_patient(
    State(app): State<AppState>,
    caller: Caller,
    Path(patient_id): Path<String>,
    JsonBody(body): JsonBody<PatientBody>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    authorize(&caller, body.facility_id.as_deref())?;
    let event =
        validate_patient(&app.network, &patient_id, body, &caller.source, app.clock.now()).map_err(Problem::Invalid)?;
    accept(&app, Event::PatientUpserted(event)).await
}

pub async fn put_appointment(
    State(app): State<AppState>,
    caller: Caller,
    Path(appointment_id): Path<String>,
    JsonBody(body): JsonBody<AppointmentBody>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    authorize(&caller, body.facility_id.as_deref())?;
    let event =
        validate_appointment(&app.network, &appointment_id, body, &caller.source, None).map_err(Problem::Invalid)?;
    accept(&app, Event::AppointmentUpserted(event)).await
}

pub async fn cancel_appointment(
    State(app): State<AppState>,
    caller: Caller,
    Path(appointment_id): Path<String>,
    JsonBody(body): JsonBody<AppointmentBody>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    authorize(&caller, body.facility_id.as_deref())?;
    let event =
        validate_appointment(&app.network, &appointment_id, body, &caller.source, Some(AppointmentStatus::Cancelled))
            .map_err(Problem::Invalid)?;
    accept(&app, Event::AppointmentUpserted(event)).await
}

pub async fn not_found() -> Problem {
    Problem::NotFound
}

pub async fn method_not_allowed() -> Problem {
    Problem::MethodNotAllowed
}

/// 403 when the token does not cover the facility. A missing facility is left to validation.
fn authorize(caller: &Caller, facility_id: Option<&str>) -> Result<(), Problem> {
    match facility_id {
        Some(facility) if !caller.covers(facility) => {
            tracing::info!(token_id = %caller.token_id, "token does not cover the facility");
            Err(Problem::Forbidden(format!("this API token may not write for facility '{facility}'")))
        }
        _ => Ok(()),
    }
}

async fn accept(app: &AppState, event: Event) -> Result<(StatusCode, Json<Accepted>), Problem> {
    let event_id = app.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { event_id })))
}

/// Collects every field error of one request.
#[derive(Default)]
struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.fail(field, "is required");
        }
        value
    }

    /// An identifier: non-empty, at most [`MAX_ID_CHARS`], printable, no surrounding spaces.
    fn id(&mut self, field: &str, value: &str) -> Option<String> {
        if value.is_empty() {
            self.fail(field, "must not be empty");
        } else if value.chars().count() > MAX_ID_CHARS {
            self.fail(field, format!("must be at most {MAX_ID_CHARS} characters"));
        } else if value.chars().any(char::is_control) {
            self.fail(field, "must contain only printable characters");
        } else if value.trim() != value {
            self.fail(field, "must not start or end with whitespace");
        } else {
            return Some(value.to_owned());
        }
        None
    }

    fn facility(&mut self, network: &NetworkConfig, value: Option<String>) -> Option<String> {
        let id = self.required("facility_id", value)?;
        let id = self.id("facility_id", &id)?;
        if network.facility(&id).is_none() {
            self.fail("facility_id", "is not a facility Careline is configured for");
            return None;
        }
        Some(id)
    }

    /// Optional free text: trimmed, empty means absent, bounded, no control characters except
    /// line breaks where `multiline`.
    fn text(&mut self, field: &str, value: Option<String>, max: usize, multiline: bool) -> Option<String> {
        let value = value?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        if value.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
            return None;
        }
        if value.chars().any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t'))) {
            self.fail(field, "must not contain control characters");
            return None;
        }
        Some(value.to_owned())
    }

    fn timestamp(&mut self, field: &str, value: &str) -> Option<DateTime<Utc>> {
        match DateTime::parse_from_rfc3339(value.trim()) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(_) => {
                self.fail(field, "must be an RFC 3339 timestamp with a UTC offset, e.g. 2026-03-01T09:30:00+05:30");
                None
            }
        }
    }

    fn into_result<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}

/// An identifier as the JSON API accepts it (see [`MAX_ID_CHARS`]), or why not.
pub fn check_id(field: &str, value: &str) -> Result<String, FieldError> {
    let mut c = Checks::default();
    match c.id(field, value) {
        Some(id) => Ok(id),
        None => Err(c.errors.pop().unwrap_or_else(|| FieldError::new(field, "is not a valid identifier"))),
    }
}

/// A BCP 47-shaped tag: a 2–3 letter primary language, then alphanumeric subtags of 1–8
/// characters separated by `-` (`_` is tolerated, as many hospital systems write `pt_BR`).
pub fn is_language_tag(tag: &str) -> bool {
    if tag.is_empty() || tag.len() > MAX_LANGUAGE_CHARS {
        return false;
    }
    let mut subtags = tag.split(['-', '_']);
    let primary = subtags.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags.all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Checks a patient report and builds its event.
pub fn validate_patient(
    network: &NetworkConfig,
    patient_id: &str,
    body: PatientBody,
    reported_by: &str,
    now: DateTime<Utc>,
) -> Result<PatientUpserted, Vec<FieldError>> {
    let mut c = Checks::default();
    let patient_id = c.id("patient_id", patient_id);
    let facility_id = c.facility(network, body.facility_id);
    let first_name = c.text("first_name", body.first_name, MAX_NAME_CHARS, false);
    let phone = c.required("phone", body.phone).and_then(|p| match Phone::parse(&p) {
        Ok(phone) => Some(phone),
        Err(PhoneError::NotE164) => {
            c.fail("phone", "must be in E.164 form: '+', the country code, then the number (e.g. +919812345678)");
            None
        }
        Err(PhoneError::Invalid) => {
            c.fail("phone", "is not a valid phone number for its country");
            None
        }
    });
    let language = c.required("language", body.language).and_then(|l| {
        let l = l.trim().to_owned();
        if is_language_tag(&l) {
            Some(l)
        } else {
            c.fail("language", "must be a BCP 47 language tag such as 'en', 'hi' or 'pt-BR'");
            None
        }
    });
    let consent = match body.consent {
        None => Some(None),
        Some(consent) => validate_consent(&mut c, consent, now).map(Some),
    };
    let event = (|| {
        Some(PatientUpserted {
            patient_id: patient_id?,
            facility_id: facility_id?,
            first_name,
            phone: phone?.e164().to_owned(),
            language: language?,
            consent: consent?,
            reported_by: reported_by.to_owned(),
        })
    })();
    c.into_result(event)
}

fn validate_consent(c: &mut Checks, body: ConsentBody, now: DateTime<Utc>) -> Option<ConsentRecord> {
    let state = c.required("consent.state", body.state).and_then(|s| {
        let state = ConsentState::parse(&s);
        if state.is_none() {
            c.fail("consent.state", "must be 'opted_in' or 'opted_out'");
        }
        state
    });
    let recorded_at = c.required("consent.recorded_at", body.recorded_at).and_then(|t| {
        let at = c.timestamp("consent.recorded_at", &t)?;
        if at > now + CONSENT_CLOCK_SKEW {
            c.fail("consent.recorded_at", "must not be in the future");
            return None;
        }
        Some(at)
    });
    let source = c.required("consent.source", body.source).and_then(|s| {
        let source = match s.as_str() {
            "booking_form" => Some(ConsentSource::BookingForm),
            "front_desk" => Some(ConsentSource::FrontDesk),
            "hospital_system" => Some(ConsentSource::HospitalSystem),
            "patient_portal" => Some(ConsentSource::PatientPortal),
            _ => None,
        };
        if source.is_none() {
            c.fail("consent.source", "must be one of booking_form, front_desk, hospital_system, patient_portal");
        }
        source
    });
    let evidence = c.text("consent.evidence", body.evidence, MAX_LABEL_CHARS, false);
    let wording_version = c.text("consent.wording_version", body.wording_version, MAX_LABEL_CHARS, false);
    let recorded_by = c.text("consent.recorded_by", body.recorded_by, MAX_LABEL_CHARS, false);
    let purpose = match body.purpose.as_deref().map(str::trim) {
        None | Some("") => Some(ConsentPurpose::Care),
        Some(p) => ConsentPurpose::parse(p).or_else(|| {
            c.fail("consent.purpose", "must be 'care' or 'marketing'");
            None
        }),
    };
    let channel = match body.channel.as_deref().map(str::trim) {
        None | Some("") => Some(ConsentChannel::Whatsapp),
        Some(ch) => ConsentChannel::parse(ch).or_else(|| {
            c.fail("consent.channel", "must be 'whatsapp'");
            None
        }),
    };
    Some(ConsentRecord {
        state: state?,
        recorded_at: recorded_at?,
        source: source?,
        evidence,
        wording_version,
        purpose: purpose?,
        channel: channel?,
        recorded_by,
    })
}

/// Checks an appointment report and builds its event. `forced_status` is the cancel
/// endpoint's: the body may then omit `status` or say `cancelled`, nothing else.
pub fn validate_appointment(
    network: &NetworkConfig,
    appointment_id: &str,
    body: AppointmentBody,
    reported_by: &str,
    forced_status: Option<AppointmentStatus>,
) -> Result<AppointmentUpserted, Vec<FieldError>> {
    let mut c = Checks::default();
    let appointment_id = c.id("appointment_id", appointment_id);
    let facility_id = c.facility(network, body.facility_id);
    let patient_id = c.required("patient_id", body.patient_id).and_then(|p| c.id("patient_id", &p));
    let version = c.required("version", body.version).and_then(|v| {
        if v < 0 {
            c.fail("version", "must be 0 or more");
            return None;
        }
        Some(v)
    });
    let status = match (body.status.as_deref(), forced_status) {
        (None, Some(forced)) => Some(forced),
        (None, None) | (Some("booked"), None) => Some(AppointmentStatus::Booked),
        (Some("cancelled"), _) => Some(AppointmentStatus::Cancelled),
        (Some(_), Some(_)) => {
            c.fail("status", "must be 'cancelled' (or absent) when cancelling");
            None
        }
        (Some(_), None) => {
            c.fail("status", "must be 'booked' or 'cancelled'");
            None
        }
    };
    let starts_at = c.required("starts_at", body.starts_at).and_then(|t| c.timestamp("starts_at", &t));
    let duration_minutes = match body.duration_minutes {
        None => Some(None),
        Some(m) if (1..=MAX_DURATION_MINUTES).contains(&m) => i32::try_from(m).ok().map(Some),
        Some(_) => {
            c.fail("duration_minutes", format!("must be between 1 and {MAX_DURATION_MINUTES}"));
            None
        }
    };
    let clinician = c.text("clinician", body.clinician, MAX_LABEL_CHARS, false);
    let department = c.text("department", body.department, MAX_LABEL_CHARS, false);
    let instructions = c.text("instructions", body.instructions, MAX_INSTRUCTIONS_CHARS, true);
    let event = (|| {
        Some(AppointmentUpserted {
            appointment_id: appointment_id?,
            facility_id: facility_id?,
            patient_id: patient_id?,
            version: version?,
            status: status?,
            starts_at: starts_at?,
            duration_minutes: duration_minutes?,
            clinician,
            department,
            instructions,
            reported_by: reported_by.to_owned(),
        })
    })();
    c.into_result(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &str = r#"
        [templates.booking_confirmation]
        name = "appointment_booked"
        languages = { en = "en" }
        body = ["first_name", "date_time", "facility"]
        [templates.reminder]
        name = "appointment_reminder"
        languages = { en = "en" }
        body = ["first_name", "date_time", "facility"]
        [[facility]]
        id = "city"
        name = "City General"
        time_zone = "Asia/Kolkata"
        phone_number_id = "1001"
        reminder_offsets = ["48h", "2h"]
    "#;

    fn network() -> NetworkConfig {
        NetworkConfig::from_toml(NETWORK).unwrap()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn appointment(json: serde_json::Value) -> AppointmentBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn language_tags_are_checked_for_shape() {
        for ok in ["en", "hi", "pt-BR", "pt_BR", "zh-Hant-TW", "es-419"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "e", "english", "en-", "en--US", "12", "en US", "en-toolongsubtag"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn a_patient_is_normalised_into_an_event() {
        let body: PatientBody = serde_json::from_value(serde_json::json!({
            "facility_id": "city", "first_name": "  Asha ", "phone": "+91 98123 45678", "language": "hi",
            "consent": {"state": "opted_in", "recorded_at": "2026-01-01T10:00:00+05:30", "source": "front_desk"}
        }))
        .unwrap();
        let event = validate_patient(&network(), "P1", body, "his", Utc::now()).unwrap();
        assert_eq!(event.phone, "+919812345678");
        assert_eq!(event.first_name.as_deref(), Some("Asha"));
        let consent = event.consent.unwrap();
        assert_eq!(consent.state, ConsentState::OptedIn);
        assert_eq!(consent.recorded_at, "2026-01-01T04:30:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn every_bad_patient_field_is_reported_at_once() {
        let body: PatientBody = serde_json::from_value(serde_json::json!({
            "facility_id": "nowhere", "phone": "98123", "language": "english",
            "consent": {"state": "maybe", "recorded_at": "yesterday", "source": "whatsapp_keyword"}
        }))
        .unwrap();
        let errors = validate_patient(&network(), "", body, "his", Utc::now()).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "patient_id",
                "facility_id",
                "phone",
                "language",
                "consent.state",
                "consent.recorded_at",
                "consent.source"
            ]
        );
    }

    #[test]
    fn consent_names_a_known_purpose_and_channel_and_keeps_who_took_it() {
        let body: PatientBody = serde_json::from_value(serde_json::json!({
            "facility_id": "city", "phone": "+919812345678", "language": "en",
            "consent": {"state": "opted_in", "recorded_at": "2026-01-01T10:00:00Z", "source": "front_desk",
                        "purpose": "newsletters", "channel": "sms"}
        }))
        .unwrap();
        let errors = validate_patient(&network(), "P1", body, "his", Utc::now()).unwrap_err();
        assert_eq!(fields(&errors), ["consent.purpose", "consent.channel"]);

        let body: PatientBody = serde_json::from_value(serde_json::json!({
            "facility_id": "city", "phone": "+919812345678", "language": "en",
            "consent": {"state": "opted_in", "recorded_at": "2026-01-01T10:00:00Z", "source": "front_desk",
                        "purpose": "marketing", "recorded_by": "desk-7", "wording_version": "v3"}
        }))
        .unwrap();
        let consent = validate_patient(&network(), "P1", body, "his", Utc::now()).unwrap().consent.unwrap();
        assert_eq!(consent.purpose, ConsentPurpose::Marketing);
        assert_eq!(consent.channel, ConsentChannel::Whatsapp);
        assert_eq!(consent.recorded_by.as_deref(), Some("desk-7"));
    }

    #[test]
    fn consent_dated_in_the_future_is_refused() {
        let body: PatientBody = serde_json::from_value(serde_json::json!({
            "facility_id": "city", "phone": "+919812345678", "language": "en",
            "consent": {"state": "opted_in", "recorded_at": "2999-01-01T00:00:00Z", "source": "front_desk"}
        }))
        .unwrap();
        let errors = validate_patient(&network(), "P1", body, "his", Utc::now()).unwrap_err();
        assert_eq!(fields(&errors), ["consent.recorded_at"]);
    }

    #[test]
    fn an_appointment_defaults_to_booked_and_needs_an_offset_on_its_start() {
        let ok = appointment(serde_json::json!({
            "facility_id": "city", "patient_id": "P1", "version": 0, "starts_at": "2026-03-01T09:30:00+05:30"
        }));
        let event = validate_appointment(&network(), "A1", ok, "his", None).unwrap();
        assert_eq!(event.status, AppointmentStatus::Booked);
        assert_eq!(event.starts_at, "2026-03-01T04:00:00Z".parse::<DateTime<Utc>>().unwrap());

        let naive = appointment(serde_json::json!({
            "facility_id": "city", "patient_id": "P1", "version": -1, "starts_at": "2026-03-01T09:30:00",
            "status": "moved", "duration_minutes": 0
        }));
        let errors = validate_appointment(&network(), "A1", naive, "his", None).unwrap_err();
        assert_eq!(fields(&errors), ["version", "status", "starts_at", "duration_minutes"]);
    }

    #[test]
    fn cancelling_forces_the_cancelled_status() {
        let body = || {
            appointment(serde_json::json!({
                "facility_id": "city", "patient_id": "P1", "version": 3, "starts_at": "2026-03-01T09:30:00Z"
            }))
        };
        let event = validate_appointment(&network(), "A1", body(), "his", Some(AppointmentStatus::Cancelled)).unwrap();
        assert_eq!(event.status, AppointmentStatus::Cancelled);
        let mut booked = body();
        booked.status = Some("booked".into());
        let errors =
            validate_appointment(&network(), "A1", booked, "his", Some(AppointmentStatus::Cancelled)).unwrap_err();
        assert_eq!(fields(&errors), ["status"]);
    }

    #[test]
    fn ids_must_be_printable_and_bounded() {
        let long = "x".repeat(MAX_ID_CHARS + 1);
        for bad in ["", " P1", "P\u{7}1", long.as_str()] {
            let mut c = Checks::default();
            assert!(c.id("patient_id", bad).is_none(), "{bad:?}");
        }
        let mut c = Checks::default();
        assert_eq!(c.id("patient_id", "MRN/2026-001").as_deref(), Some("MRN/2026-001"));
    }
}
