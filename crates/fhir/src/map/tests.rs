use super::*;
use crate::read::{Resource, read_resource};
use serde_json::json;

const NETWORK: &str = r#"
    default_language = "en"
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
"#;

fn network() -> NetworkConfig {
    NetworkConfig::from_toml(NETWORK).unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-02-01T00:00:00Z".parse().unwrap()
}

fn appointment(value: serde_json::Value) -> AppointmentReport {
    let Ok(Resource::Appointment(a)) = read_resource(value.to_string().as_bytes()) else {
        panic!("not an Appointment")
    };
    let network = network();
    map_appointment(&a, &Context { network: &network, now: now(), references: &References::default() })
}

fn patient(value: serde_json::Value) -> PatientReport {
    let Ok(Resource::Patient(p)) = read_resource(value.to_string().as_bytes()) else { panic!("not a Patient") };
    let network = network();
    map_patient(&p, &Context { network: &network, now: now(), references: &References::default() })
}

fn consent(value: serde_json::Value) -> ConsentReport {
    let Ok(Resource::Consent(c)) = read_resource(value.to_string().as_bytes()) else { panic!("not a Consent") };
    let network = network();
    map_consent(&c, &Context { network: &network, now: now(), references: &References::default() })
}

fn booked() -> serde_json::Value {
    json!({
        "resourceType": "Appointment",
        "id": "A-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-20T10:00:00.123+05:30"},
        "status": "booked",
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"}]}],
        "start": "2026-03-01T09:30:00+05:30",
        "end": "2026-03-01T09:50:30+05:30",
        "minutesDuration": 15,
        "patientInstruction": "Fasting from midnight",
        "participant": [
            {"actor": {"reference": "https://ehr.example/fhir/Patient/P-1/_history/2", "display": "Asha Sharma"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/D-9", "display": "Dr Priya Rao"}, "status": "accepted"},
            {"actor": {"reference": "Location/ward-4"}, "status": "accepted"},
            {"actor": {"reference": "Location/city", "display": "City General"}, "status": "accepted"}
        ]
    })
}

#[test]
fn a_booked_appointment_maps_every_field_and_its_version_is_last_updated() {
    let r = appointment(booked());
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(r.appointment_id.as_deref(), Some("A-1"));
    assert_eq!(r.patient_id.as_deref(), Some("P-1"));
    assert_eq!(r.facility_id.as_deref(), Some("city"));
    assert_eq!(r.locations.of(fields::FACILITY_ID), Some("participant[3].actor.reference"));
    assert_eq!(r.status, Some(AppointmentStatus::Booked));
    assert_eq!(r.starts_at, Some("2026-03-01T04:00:00Z".parse().unwrap()));
    assert_eq!(r.duration_minutes, Some(21), "end − start, rounded up, wins over minutesDuration");
    assert_eq!(r.clinician.as_deref(), Some("Dr Priya Rao"));
    assert_eq!(r.department.as_deref(), Some("Cardiology"));
    assert_eq!(r.instructions.as_deref(), Some("Fasting from midnight"));
    let last_updated: DateTime<Utc> = "2026-01-20T04:30:00.123Z".parse().unwrap();
    assert_eq!(r.version, Some(last_updated.timestamp_millis()));
}

#[test]
fn every_r4_status_has_a_place_in_careline_lifecycle() {
    for s in ["booked", "arrived", "checked-in"] {
        assert_eq!(lifecycle_of(s), Some(AppointmentStatus::Booked), "{s}");
    }
    for s in ["proposed", "pending", "waitlist", "cancelled", "noshow", "entered-in-error", "fulfilled"] {
        assert_eq!(lifecycle_of(s), Some(AppointmentStatus::Cancelled), "{s}");
    }
    let mut bad = booked();
    bad["status"] = json!("moved");
    let r = appointment(bad);
    assert_eq!(r.issues[0].code, IssueCode::CodeInvalid);
    assert_eq!(r.issues[0].expression.as_deref(), Some("status"));
}

#[test]
fn version_falls_back_to_version_id_then_to_arrival() {
    let mut a = booked();
    a["meta"] = json!({"versionId": "7"});
    assert_eq!(appointment(a.clone()).version, Some(7));
    a["meta"] = json!({"versionId": "W/abc"});
    assert_eq!(appointment(a.clone()).version, Some(now().timestamp_millis()));
    a["meta"] = json!({"lastUpdated": "2999-01-01T00:00:00Z"});
    assert_eq!(appointment(a).issues[0].expression.as_deref(), Some("meta.lastUpdated"));
}

#[test]
fn the_facility_extension_wins_over_locations_and_duration_falls_back_to_minutes() {
    let mut a = booked();
    a["extension"] = json!([{"url": FACILITY_EXTENSION, "valueString": "north"}]);
    a.as_object_mut().unwrap().remove("end");
    let r = appointment(a);
    assert_eq!(r.facility_id.as_deref(), Some("north"));
    assert_eq!(r.locations.of(fields::FACILITY_ID), Some("extension[0].valueString"));
    assert_eq!(r.duration_minutes, Some(15));
}

#[test]
fn a_proposal_without_start_is_not_recorded_and_an_end_before_start_is_an_error() {
    let r = appointment(json!({"resourceType": "Appointment", "id": "A-2", "status": "proposed"}));
    assert!(r.not_recorded.is_some());
    let mut a = booked();
    a["end"] = json!("2026-03-01T09:00:00+05:30");
    assert_eq!(appointment(a).issues[0].expression.as_deref(), Some("end"));
}

#[test]
fn two_patients_or_an_unresolved_urn_are_errors() {
    let mut a = booked();
    a["participant"][2]["actor"] = json!({"reference": "Patient/P-2"});
    assert_eq!(appointment(a).issues[0].code, IssueCode::NotSupported);
    let mut a = booked();
    a["participant"][0]["actor"] =
        json!({"reference": "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", "type": "Patient"});
    let r = appointment(a);
    assert_eq!(r.issues[0].expression.as_deref(), Some("participant[0].actor.reference"));
}

fn asha() -> serde_json::Value {
    json!({
        "resourceType": "Patient",
        "id": "P-1",
        "meta": {"lastUpdated": "2026-01-20T10:00:00+05:30"},
        "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-77"}],
        "managingOrganization": {"reference": "Organization/city"},
        "name": [
            {"use": "maiden", "given": ["Old"]},
            {"use": "official", "family": "Sharma", "given": ["Asha", "K"]}
        ],
        "telecom": [
            {"system": "email", "value": "asha@example.com"},
            {"system": "phone", "use": "home", "value": "+91 80 4123 4567"},
            {"system": "phone", "use": "mobile", "value": "+91 98123 00000", "rank": 2},
            {"system": "phone", "use": "mobile", "value": "+91 98123 45678", "rank": 1},
            {"system": "phone", "use": "mobile", "value": "+91 98000 11111", "period": {"end": "2025-01-01T00:00:00Z"}}
        ],
        "communication": [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "hi"}]}, "preferred": true}
        ]
    })
}

#[test]
fn a_patient_maps_name_mobile_by_rank_preferred_language_and_organization() {
    let r = patient(asha());
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(r.patient_id.as_deref(), Some("P-1"));
    assert_eq!(r.facility_id.as_deref(), Some("city"));
    assert_eq!(r.first_name.as_deref(), Some("Asha"));
    assert_eq!(r.phone.as_deref(), Some("+919812345678"));
    assert_eq!(r.locations.of(fields::PHONE), Some("telecom[3].value"));
    assert_eq!(r.language.as_deref(), Some("hi"));
    assert_eq!(r.reported_at, Some("2026-01-20T04:30:00Z".parse().unwrap()));
}

#[test]
fn without_id_a_patient_is_keyed_by_its_mrn() {
    let mut p = asha();
    p.as_object_mut().unwrap().remove("id");
    let r = patient(p);
    assert_eq!(r.patient_id.as_deref(), Some("MRN-77"));
    assert_eq!(r.locations.of(fields::PATIENT_ID), Some("identifier[0].value"));
}

#[test]
fn without_a_mobile_use_a_number_that_is_a_mobile_is_taken_else_a_warning() {
    let mut p = asha();
    p["telecom"] = json!([
        {"system": "phone", "use": "home", "value": "+91 80 4123 4567"},
        {"system": "phone", "value": "0091 98123 45678"}
    ]);
    assert_eq!(patient(p.clone()).phone.as_deref(), Some("+919812345678"));
    p["telecom"] = json!([{"system": "phone", "use": "home", "value": "+91 80 4123 4567"}]);
    let r = patient(p.clone());
    assert!(r.has_no_phone());
    assert_eq!(r.issues[0].severity, crate::Severity::Warning);
    assert_eq!(r.issues[0].expression.as_deref(), Some("telecom"));
    p["telecom"] = json!([{"system": "phone", "use": "mobile", "value": "98123 45678"}]);
    let r = patient(p);
    assert!(r.issues[0].is_error());
    assert_eq!(r.issues[0].expression.as_deref(), Some("telecom[0].value"));
}

#[test]
fn without_communication_the_network_default_language_is_used() {
    let mut p = asha();
    p.as_object_mut().unwrap().remove("communication");
    assert_eq!(patient(p).language.as_deref(), Some("en"));
}

fn whatsapp_consent() -> serde_json::Value {
    json!({
        "resourceType": "Consent",
        "id": "C-9",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": WHATSAPP_CONSENT_CODE}]}],
        "patient": {"reference": "Patient/P-1"},
        "dateTime": "2026-01-05T10:00:00+05:30",
        "performer": [{"reference": "Patient/P-1"}],
        "organization": [{"reference": "Organization/city"}],
        "sourceReference": {"reference": "DocumentReference/form-77"}
    })
}

#[test]
fn an_active_whatsapp_consent_is_an_opt_in_with_its_evidence() {
    let r = consent(whatsapp_consent());
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(r.state, Some(ConsentState::OptedIn));
    assert_eq!(r.patient_id.as_deref(), Some("P-1"));
    assert_eq!(r.facility_id.as_deref(), Some("city"));
    assert_eq!(r.recorded_at, Some("2026-01-05T04:30:00Z".parse().unwrap()));
    assert_eq!(r.evidence.as_deref(), Some("DocumentReference/form-77; performer Patient/P-1"));
}

#[test]
fn inactive_or_deny_is_an_opt_out_and_other_consents_are_refused() {
    let mut c = whatsapp_consent();
    c["status"] = json!("inactive");
    assert_eq!(consent(c).state, Some(ConsentState::OptedOut));
    let mut c = whatsapp_consent();
    c["provision"] = json!({"type": "deny"});
    assert_eq!(consent(c).state, Some(ConsentState::OptedOut));
    let mut c = whatsapp_consent();
    c["category"] = json!([{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]);
    assert_eq!(consent(c).issues[0].expression.as_deref(), Some("category"));
    let mut c = whatsapp_consent();
    c["policy"] = json!([{"uri": WHATSAPP_CONSENT_POLICY}]);
    c["category"] = json!([]);
    assert!(consent(c).issues.is_empty());
    let mut c = whatsapp_consent();
    c["status"] = json!("draft");
    c["dateTime"] = json!("2026-01-05");
    let r = consent(c);
    let at: Vec<_> = r.issues.iter().map(|i| i.expression.as_deref().unwrap()).collect();
    assert_eq!(at, ["status", "dateTime"]);
}
