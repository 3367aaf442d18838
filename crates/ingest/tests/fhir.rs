//! FHIR R4 over HTTP against real PostgreSQL and RabbitMQ: a fresh database and AMQP prefix per
//! test, the scheduler's queue read directly to see what was published, and (where the resulting
//! state matters) those very events applied by the real scheduler planner on the same database.

use std::sync::Arc;
use std::time::Duration;

use careline_bus::{BusSettings, Topology};
use careline_domain::consent::ConsentState;
use careline_domain::events::{AppointmentStatus, AppointmentUpserted, Envelope, Event, PatientUpserted};
use careline_domain::facility::NetworkConfig;
use careline_domain::{Clock, SystemClock};
use careline_store::PgPool;
use careline_store::testing::{database_url, fresh_database};
use chrono::{DateTime, SubsecRound, Utc};
use ingest::auth::create_token;
use ingest::{Application, Settings};
use lapin::options::BasicGetOptions;
use scheduler::planner::{AppointmentOutcome, Planner};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NETWORK: &str = r#"
    default_language = "en"
    [templates.booking_confirmation]
    name = "appointment_booked"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]
    [templates.reminder]
    name = "appointment_reminder"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]

    [[facility]]
    id = "city"
    name = "City General"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"
    reminder_offsets = ["48h", "2h"]

    [[facility]]
    id = "north"
    name = "North Clinic"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1002"
    reminder_offsets = ["48h", "2h"]
"#;

const WHATSAPP_CATEGORY: &str = "https://careline.dev/fhir/CodeSystem/consent-category";

struct TestApp {
    base: String,
    pool: PgPool,
    bus: BusSettings,
    http: reqwest::Client,
    channel: lapin::Channel,
    _connection: lapin::Connection,
    planner: Planner,
    token: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(None, 65_536).await
}

async fn spawn_app_with(amqp_url: Option<&str>, max_body_bytes: usize) -> TestApp {
    let (pool, url) = fresh_database(&database_url()).await;
    let bus = BusSettings::for_test();
    let config_path = std::env::temp_dir().join(format!("careline-fhir-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config_path, NETWORK).expect("write facilities file");
    let connection = lapin::Connection::connect(&bus.url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    Topology::new(&bus.prefix).declare(&channel, bus.queue_expires_ms).await.expect("declare topology");

    let mut app_bus = bus.clone();
    if let Some(amqp_url) = amqp_url {
        app_bus.url = amqp_url.to_owned();
    }
    let settings = Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: url,
        database_max_connections: 5,
        bus: app_bus,
        config_path,
        max_body_bytes,
        publish_timeout: Duration::from_secs(5),
        token_cache_ttl: Duration::from_secs(10),
        migrate_on_start: false,
        mllp: ingest::mllp::MllpSettings::default(),
    };
    let app = Application::build(settings).await.expect("build ingest");
    let base = format!("http://{}", app.public_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let network = Arc::new(NetworkConfig::from_toml(NETWORK).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let planner = Planner::new(pool.clone(), network, clock);
    let token = create_token(&pool, "city-ehr", &["city".to_owned()], None).await.expect("token").token;
    TestApp {
        base,
        pool,
        bus,
        http: reqwest::Client::new(),
        channel,
        _connection: connection,
        planner,
        token,
        shutdown,
    }
}

impl TestApp {
    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> reqwest::Response {
        self.request(method, path, Some(&self.token), "application/fhir+json", body.to_string()).await
    }

    async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// The next event on the scheduler's queue, waiting up to 10 s.
    async fn next_event(&self) -> Envelope {
        let queue = Topology::new(&self.bus.prefix).scheduler_events();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self
                .channel
                .basic_get(queue.clone().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get");
            if let Some(message) = got {
                return serde_json::from_slice(&message.delivery.data).expect("an envelope");
            }
            assert!(tokio::time::Instant::now() < deadline, "no event arrived on {queue}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn next_appointment(&self) -> AppointmentUpserted {
        match self.next_event().await.event {
            Event::AppointmentUpserted(a) => a,
            other => panic!("expected an appointment, got {other:?}"),
        }
    }

    async fn next_patient(&self) -> (PatientUpserted, Envelope) {
        let envelope = self.next_event().await;
        match &envelope.event {
            Event::PatientUpserted(p) => (p.clone(), envelope),
            other => panic!("expected a patient, got {other:?}"),
        }
    }

    async fn nothing_published(&self) -> bool {
        let queue = Topology::new(&self.bus.prefix).scheduler_events();
        self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic_get").is_none()
    }

    /// (kind, state) of the appointment's jobs, sorted.
    async fn jobs(&self, appointment_id: &str) -> Vec<(String, String)> {
        sqlx::query_as("SELECT kind, state FROM jobs WHERE appointment_id = $1 ORDER BY kind, generation")
            .bind(appointment_id)
            .fetch_all(&self.pool)
            .await
            .expect("jobs")
    }
}

/// An `OperationOutcome` answer: checks the media type and returns the body.
async fn outcome(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/fhir+json"),
        "FHIR answers are application/fhir+json"
    );
    response.json().await.expect("a JSON body")
}

fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"].as_array().unwrap().iter().filter_map(|i| i["expression"][0].as_str().map(str::to_owned)).collect()
}

fn severities(outcome: &Value) -> Vec<String> {
    outcome["issue"].as_array().unwrap().iter().map(|i| i["severity"].as_str().unwrap().to_owned()).collect()
}

fn days_ahead(days: i64) -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::days(days)).trunc_subsecs(0)
}

fn appointment(id: &str, version: &str, start: DateTime<Utc>, status: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "id": id,
        "meta": {"versionId": version},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Cardiology follow-up</div>"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("ENC-{id}")}],
        "status": status,
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"}]}],
        "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "FOLLOWUP"}]},
        "start": start.to_rfc3339(),
        "end": (start + chrono::Duration::minutes(20)).to_rfc3339(),
        "minutesDuration": 20,
        "patientInstruction": "Bring your previous reports.",
        "participant": [
            {"actor": {"reference": "Patient/P-1", "display": "Asha Sharma"}, "required": "required", "status": "accepted"},
            {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
             "actor": {"reference": "Practitioner/D-9", "display": "Dr Priya Rao"}, "status": "accepted"},
            {"actor": {"reference": "Location/city", "display": "City General, Block B"}, "status": "accepted"}
        ]
    })
}

fn patient(id: &str, last_updated: DateTime<Utc>, mobile: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "meta": {"versionId": "2", "lastUpdated": last_updated.to_rfc3339()},
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                        "system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("MRN-{id}")}],
        "active": true,
        "name": [{"use": "official", "family": "Sharma", "given": ["Asha", "K"]}],
        "gender": "female",
        "birthDate": "1985-04-12",
        "telecom": [
            {"system": "phone", "value": "+91 80 4123 4567", "use": "home"},
            {"system": "phone", "value": mobile, "use": "mobile", "rank": 1},
            {"system": "email", "value": "asha@example.com"}
        ],
        "communication": [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "hi", "display": "Hindi"}]}, "preferred": true}
        ],
        "managingOrganization": {"reference": "Organization/city"}
    })
}

fn consent(status: &str, date_time: DateTime<Utc>) -> Value {
    json!({
        "resourceType": "Consent",
        "id": "C-9",
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": WHATSAPP_CATEGORY, "code": "whatsapp-reminders"}]}],
        "patient": {"reference": "Patient/P-1"},
        "dateTime": date_time.to_rfc3339(),
        "performer": [{"reference": "Patient/P-1"}],
        "organization": [{"reference": "Organization/city"}],
        "sourceReference": {"reference": "DocumentReference/form-77"},
        "policy": [{"uri": "https://careline.dev/fhir/consent-policy/whatsapp-reminders"}],
        "provision": {"type": "permit"}
    })
}

#[tokio::test]
async fn a_booked_appointment_is_published_with_its_mapped_fields_and_planned_by_the_scheduler() {
    let app = spawn_app().await;
    let start = days_ahead(10);

    let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", "3", start, "booked")).await;

    assert_eq!(response.status(), 200);
    let body = outcome(response).await;
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "informational");
    let a = app.next_appointment().await;
    assert_eq!(a.appointment_id, "A-1");
    assert_eq!(a.facility_id, "city");
    assert_eq!(a.patient_id, "P-1");
    assert_eq!(a.version, 3);
    assert_eq!(a.status, AppointmentStatus::Booked);
    assert_eq!(a.starts_at, start);
    assert_eq!(a.duration_minutes, Some(20));
    assert_eq!(a.clinician.as_deref(), Some("Dr Priya Rao"));
    assert_eq!(a.department.as_deref(), Some("Cardiology"));
    assert_eq!(a.instructions.as_deref(), Some("Bring your previous reports."));
    assert_eq!(a.reported_by, "city-ehr");

    assert!(matches!(app.planner.apply_appointment(&a).await.unwrap(), AppointmentOutcome::Created { planned: 3, .. }));
    let jobs = app.jobs("A-1").await;
    let kinds: Vec<&str> = jobs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["booking_confirmation", "reminder_2h", "reminder_48h"]);
    assert!(jobs.iter().all(|(_, state)| state == "planned"), "{jobs:?}");
}

#[tokio::test]
async fn a_posted_appointment_without_id_is_keyed_by_its_identifier_and_answered_201() {
    let app = spawn_app().await;
    let mut resource = appointment("ignored", "1", days_ahead(5), "booked");
    resource.as_object_mut().unwrap().remove("id");

    let response = app.post("/fhir/Appointment", &resource).await;

    assert_eq!(response.status(), 201);
    outcome(response).await;
    assert_eq!(app.next_appointment().await.appointment_id, "ENC-ignored");
}

#[tokio::test]
async fn a_stale_version_id_is_acknowledged_but_does_not_overwrite_the_newer_appointment() {
    let app = spawn_app().await;
    let newer_start = days_ahead(10);
    let older_start = days_ahead(3);

    let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", "5", newer_start, "booked")).await;
    assert_eq!(response.status(), 200);
    let newer = app.next_appointment().await;
    app.planner.apply_appointment(&newer).await.unwrap();

    // An interface engine re-sends an older version after an outage.
    let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", "4", older_start, "booked")).await;
    assert_eq!(response.status(), 200);
    let older = app.next_appointment().await;
    assert_eq!(older.version, 4);

    assert_eq!(app.planner.apply_appointment(&older).await.unwrap(), AppointmentOutcome::Stale);
    let stored = careline_store::appointments::lock(&app.pool, "A-1").await.unwrap().unwrap();
    assert_eq!(stored.version, 5);
    assert_eq!(stored.starts_at, newer_start);
    assert_eq!(app.jobs("A-1").await.len(), 3, "the plan of the newer version stands");
}

#[tokio::test]
async fn last_updated_orders_appointments_even_when_version_ids_say_otherwise() {
    let app = spawn_app().await;
    let mut first = appointment("A-1", "9", days_ahead(10), "booked");
    first["meta"]["lastUpdated"] = json!((Utc::now() - chrono::Duration::hours(1)).to_rfc3339());
    let mut later = appointment("A-1", "1", days_ahead(10), "cancelled");
    later["meta"]["lastUpdated"] = json!(Utc::now().to_rfc3339());

    assert_eq!(app.put("/fhir/Appointment/A-1", &first).await.status(), 200);
    let first = app.next_appointment().await;
    assert_eq!(app.put("/fhir/Appointment/A-1", &later).await.status(), 200);
    let later = app.next_appointment().await;

    assert!(later.version > first.version, "lastUpdated (epoch ms) is the version");
    app.planner.apply_appointment(&first).await.unwrap();
    assert!(matches!(app.planner.apply_appointment(&later).await.unwrap(), AppointmentOutcome::Cancelled { .. }));
}

#[tokio::test]
async fn a_cancelled_appointment_is_published_cancelled_and_revokes_its_reminders() {
    let app = spawn_app().await;
    let start = days_ahead(7);
    app.put("/fhir/Appointment/A-1", &appointment("A-1", "1", start, "booked")).await;
    app.planner.apply_appointment(&app.next_appointment().await).await.unwrap();

    let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", "2", start, "cancelled")).await;

    assert_eq!(response.status(), 200);
    let cancelled = app.next_appointment().await;
    assert_eq!(cancelled.status, AppointmentStatus::Cancelled);
    assert_eq!(app.planner.apply_appointment(&cancelled).await.unwrap(), AppointmentOutcome::Cancelled { revoked: 3 });
    assert!(app.jobs("A-1").await.iter().all(|(_, state)| state == "revoked"));
}

#[tokio::test]
async fn a_noshow_or_an_entry_in_error_ends_the_appointment_and_an_arrival_keeps_it_booked() {
    let app = spawn_app().await;
    for (version, status, expected) in [
        ("1", "arrived", AppointmentStatus::Booked),
        ("2", "noshow", AppointmentStatus::Cancelled),
        ("3", "entered-in-error", AppointmentStatus::Cancelled),
        ("4", "checked-in", AppointmentStatus::Booked),
    ] {
        let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", version, days_ahead(2), status)).await;
        assert_eq!(response.status(), 200, "{status}");
        assert_eq!(app.next_appointment().await.status, expected, "{status}");
    }
}

#[tokio::test]
async fn a_patient_is_published_with_its_mobile_preferred_language_and_first_name() {
    let app = spawn_app().await;
    let last_updated = (Utc::now() - chrono::Duration::minutes(10)).trunc_subsecs(0);

    let response = app.put("/fhir/Patient/P-1", &patient("P-1", last_updated, "+91 98123 45678")).await;

    assert_eq!(response.status(), 200);
    outcome(response).await;
    let (p, envelope) = app.next_patient().await;
    assert_eq!(p.patient_id, "P-1");
    assert_eq!(p.facility_id, "city");
    assert_eq!(p.first_name.as_deref(), Some("Asha"));
    assert_eq!(p.phone, "+919812345678");
    assert_eq!(p.language, "hi");
    assert_eq!(p.consent, None);
    assert_eq!(envelope.occurred_at, last_updated, "the profile is dated by meta.lastUpdated");
}

#[tokio::test]
async fn an_older_last_updated_patient_does_not_overwrite_the_newer_profile() {
    let app = spawn_app().await;
    let newer = Utc::now() - chrono::Duration::minutes(5);
    let older = Utc::now() - chrono::Duration::hours(2);
    app.put("/fhir/Patient/P-1", &patient("P-1", newer, "+91 98123 45678")).await;
    let (p, envelope) = app.next_patient().await;
    assert!(app.planner.apply_patient(&p, &envelope).await.unwrap());

    let response = app.put("/fhir/Patient/P-1", &patient("P-1", older, "+91 98765 43210")).await;
    assert_eq!(response.status(), 200);
    let (stale, envelope) = app.next_patient().await;

    assert!(!app.planner.apply_patient(&stale, &envelope).await.unwrap(), "stale profile ignored");
    let phone: String = sqlx::query_scalar("SELECT phone_e164 FROM patients WHERE patient_id = 'P-1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(phone, "+919812345678");
}

#[tokio::test]
async fn a_patient_without_a_mobile_phone_is_acknowledged_with_a_warning_and_nothing_is_published() {
    let app = spawn_app().await;
    let mut resource = patient("P-1", Utc::now(), "+91 98123 45678");
    resource["telecom"] = json!([{"system": "phone", "value": "+91 80 4123 4567", "use": "home"}]);

    let response = app.put("/fhir/Patient/P-1", &resource).await;

    assert_eq!(response.status(), 200);
    let body = outcome(response).await;
    assert_eq!(severities(&body), ["information", "warning"]);
    assert_eq!(body["issue"][1]["code"], "incomplete");
    assert_eq!(expressions(&body), ["Patient.telecom"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn a_mobile_phone_that_is_not_international_is_a_422_naming_the_telecom() {
    let app = spawn_app().await;
    let resource = patient("P-1", Utc::now(), "98123 45678");

    let response = app.put("/fhir/Patient/P-1", &resource).await;

    assert_eq!(response.status(), 422);
    let body = outcome(response).await;
    assert_eq!(expressions(&body), ["Patient.telecom[1].value"]);
    assert_eq!(body["issue"][0]["severity"], "error");
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn every_invalid_element_is_listed_in_one_422() {
    let app = spawn_app().await;
    let mut resource = appointment("A-1", "1", days_ahead(1), "moved");
    resource["participant"][2]["actor"]["reference"] = json!("Location/nowhere");
    resource["start"] = json!("2026-03-01T09:30:00");
    resource["participant"][0]["actor"] = json!({"display": "Asha"});
    // A token for every facility, so the unknown facility is a validation error, not a 403.
    let everywhere = create_token(&app.pool, "network-ehr", &["*".to_owned()], None).await.unwrap().token;

    let response = app
        .request(
            reqwest::Method::PUT,
            "/fhir/Appointment/A-1",
            Some(&everywhere),
            "application/fhir+json",
            resource.to_string(),
        )
        .await;

    assert_eq!(response.status(), 422);
    let body = outcome(response).await;
    let mut found = expressions(&body);
    found.sort();
    assert_eq!(
        found,
        [
            "Appointment.participant",
            "Appointment.participant[2].actor.reference",
            "Appointment.start",
            "Appointment.status"
        ]
    );
    assert!(app.nothing_published().await);
}

fn transaction(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "id": "B-1", "type": kind, "entry": entries})
}

fn put_entry(resource: Value) -> Value {
    let url = format!("{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
    json!({"fullUrl": format!("https://ehr.example/fhir/{url}"), "resource": resource, "request": {"method": "PUT", "url": url}})
}

#[tokio::test]
async fn a_transaction_resolves_urn_references_and_publishes_every_entry_in_order() {
    let app = spawn_app().await;
    let mut new_patient = patient("P-7", Utc::now(), "+91 98123 45678");
    new_patient.as_object_mut().unwrap().remove("id");
    new_patient.as_object_mut().unwrap().remove("managingOrganization");
    let mut booking = appointment("A-7", "1", days_ahead(4), "booked");
    booking.as_object_mut().unwrap().remove("id");
    booking["participant"][0]["actor"] = json!({"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"});
    let bundle = transaction(
        "transaction",
        vec![
            json!({"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": new_patient,
                   "request": {"method": "POST", "url": "Patient"}}),
            json!({"fullUrl": "urn:uuid:88f151c0-a954-468a-88cd-2f3b4bd1a2c3", "resource": booking,
                   "request": {"method": "POST", "url": "Appointment"}}),
        ],
    );

    let response = app.post("/fhir", &bundle).await;

    assert_eq!(response.status(), 200);
    let body = outcome(response).await;
    assert_eq!(body["type"], "transaction-response");
    assert_eq!(body["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(body["entry"][1]["response"]["status"], "201 Created");
    let (p, _) = app.next_patient().await;
    assert_eq!(p.patient_id, "MRN-P-7");
    assert_eq!(p.facility_id, "city", "taken from the appointment in the same Bundle");
    let a = app.next_appointment().await;
    assert_eq!(a.patient_id, "MRN-P-7");
    assert_eq!(a.appointment_id, "ENC-A-7");
}

#[tokio::test]
async fn a_transaction_with_one_bad_entry_publishes_nothing_and_names_the_entry() {
    let app = spawn_app().await;
    let mut bad = appointment("A-2", "1", days_ahead(4), "booked");
    bad["start"] = json!("next tuesday");
    let bundle = transaction(
        "transaction",
        vec![
            put_entry(patient("P-1", Utc::now(), "+91 98123 45678")),
            put_entry(appointment("A-1", "1", days_ahead(4), "booked")),
            put_entry(bad),
        ],
    );

    let response = app.post("/fhir", &bundle).await;

    assert_eq!(response.status(), 422);
    let body = outcome(response).await;
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(expressions(&body), ["Bundle.entry[2].resource.start"]);
    assert!(app.nothing_published().await, "a refused transaction publishes nothing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn a_batch_applies_the_good_entries_and_answers_the_bad_one_on_its_own() {
    let app = spawn_app().await;
    let mut bad = appointment("A-2", "1", days_ahead(4), "booked");
    bad["participant"][2]["actor"]["reference"] = json!("Location/north");
    let bundle = transaction(
        "batch",
        vec![
            put_entry(appointment("A-1", "1", days_ahead(4), "booked")),
            put_entry(bad),
            json!({"resource": {"resourceType": "Observation", "status": "final"}, "request": {"method": "POST", "url": "Observation"}}),
            put_entry(patient("P-1", Utc::now(), "+91 98123 45678")),
        ],
    );

    let response = app.post("/fhir", &bundle).await;

    assert_eq!(response.status(), 200);
    let body = outcome(response).await;
    assert_eq!(body["type"], "batch-response");
    let statuses: Vec<&str> =
        body["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["200 OK", "403 Forbidden", "400 Bad Request", "200 OK"]);
    assert_eq!(body["entry"][1]["response"]["outcome"]["issue"][0]["code"], "forbidden");
    assert_eq!(
        body["entry"][2]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[2].resource.resourceType"
    );
    assert_eq!(app.next_appointment().await.appointment_id, "A-1");
    assert_eq!(app.next_patient().await.0.patient_id, "P-1");
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn a_whatsapp_consent_is_recorded_once_and_a_later_withdrawal_wins() {
    let app = spawn_app().await;
    let given = (Utc::now() - chrono::Duration::days(2)).trunc_subsecs(0);

    let response = app.post("/fhir/Consent", &consent("active", given)).await;
    assert_eq!(response.status(), 201);
    let body = outcome(response).await;
    assert_eq!(body["issue"][0]["diagnostics"], "accepted: consent recorded");
    // A re-send (an interface engine retrying) adds nothing.
    let response = app.post("/fhir/Consent", &consent("active", given)).await;
    assert_eq!(outcome(response).await["issue"][0]["diagnostics"], "accepted: this consent was already recorded");

    let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT state, source, evidence, recorded_by FROM consent_log WHERE patient_id = 'P-1' ORDER BY entry_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(
            "opted_in".to_owned(),
            "hospital_system".to_owned(),
            Some("DocumentReference/form-77; performer Patient/P-1".to_owned()),
            "city-ehr".to_owned()
        )]
    );
    let current = careline_store::consent::current(&app.pool, "P-1", "+919812345678").await.unwrap();
    assert_eq!(current, Some(ConsentState::OptedIn));

    let withdrawn = (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(0);
    let response = app.put("/fhir/Consent/C-9", &consent("inactive", withdrawn)).await;
    assert_eq!(response.status(), 200);
    let current = careline_store::consent::current(&app.pool, "P-1", "+919812345678").await.unwrap();
    assert_eq!(current, Some(ConsentState::OptedOut));
    assert!(app.nothing_published().await, "consent goes to the consent log, not the scheduler's queue");
}

#[tokio::test]
async fn a_consent_that_is_not_for_whatsapp_reminders_is_refused() {
    let app = spawn_app().await;
    let mut resource = consent("active", Utc::now());
    resource["category"] = json!([{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]);
    resource["policy"] = json!([{"uri": "https://hospital.example/policies/research"}]);

    let response = app.post("/fhir/Consent", &resource).await;

    assert_eq!(response.status(), 422);
    let body = outcome(response).await;
    assert_eq!(body["issue"][0]["code"], "not-supported");
    assert_eq!(expressions(&body), ["Consent.category"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM consent_log").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn malformed_json_is_a_400_operation_outcome() {
    let app = spawn_app().await;

    let response = app
        .request(
            reqwest::Method::PUT,
            "/fhir/Patient/P-1",
            Some(&app.token),
            "application/fhir+json",
            "{\"resourceType\": ".into(),
        )
        .await;

    assert_eq!(response.status(), 400);
    let body = outcome(response).await;
    assert_eq!(body["issue"][0]["severity"], "error");
    assert_eq!(body["issue"][0]["code"], "structure");
    assert!(body["issue"][0]["diagnostics"].as_str().unwrap().contains("not valid JSON"));
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_element_of_the_wrong_type_is_a_400_naming_its_path() {
    let app = spawn_app().await;
    let mut resource = appointment("A-1", "1", days_ahead(1), "booked");
    resource["participant"][1]["actor"]["display"] = json!(["Dr", "Rao"]);

    let response = app.put("/fhir/Appointment/A-1", &resource).await;

    assert_eq!(response.status(), 400);
    let body = outcome(response).await;
    assert_eq!(expressions(&body), ["Appointment.participant[1].actor.display"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn a_resource_of_the_wrong_type_is_a_400() {
    let app = spawn_app().await;

    let response = app.put("/fhir/Appointment/A-1", &patient("P-1", Utc::now(), "+919812345678")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(expressions(&outcome(response).await), ["resourceType"]);

    let response = app.post("/fhir", &json!({"resourceType": "Observation", "status": "final"})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(outcome(response).await["issue"][0]["code"], "not-supported");

    let response = app.post("/fhir", &json!({"resourceType": "Bundle", "type": "collection"})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(expressions(&outcome(response).await), ["Bundle.type"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_id_in_the_body_differing_from_the_url_is_a_400() {
    let app = spawn_app().await;

    let response = app.put("/fhir/Appointment/A-2", &appointment("A-1", "1", days_ahead(1), "booked")).await;

    assert_eq!(response.status(), 400);
    assert_eq!(expressions(&outcome(response).await), ["Appointment.id"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_oversized_body_is_a_413_operation_outcome() {
    let app = spawn_app_with(None, 4096).await;
    let mut resource = appointment("A-1", "1", days_ahead(1), "booked");
    resource["text"]["div"] = json!(format!("<div>{}</div>", "x".repeat(8192)));

    let response = app.put("/fhir/Appointment/A-1", &resource).await;

    assert_eq!(response.status(), 413);
    assert_eq!(outcome(response).await["issue"][0]["code"], "too-costly");
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn fhir_requests_are_authenticated_and_authorized_like_the_json_api() {
    let app = spawn_app().await;
    let resource = appointment("A-1", "1", days_ahead(1), "booked");

    let response = app
        .request(reqwest::Method::PUT, "/fhir/Appointment/A-1", None, "application/fhir+json", resource.to_string())
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(outcome(response).await["issue"][0]["code"], "login");

    let north = create_token(&app.pool, "north-ehr", &["north".to_owned()], None).await.unwrap().token;
    let response = app
        .request(
            reqwest::Method::PUT,
            "/fhir/Appointment/A-1",
            Some(&north),
            "application/fhir+json",
            resource.to_string(),
        )
        .await;
    assert_eq!(response.status(), 403);
    let body = outcome(response).await;
    assert_eq!(body["issue"][0]["code"], "forbidden");
    assert_eq!(expressions(&body), ["Appointment.participant[2].actor.reference"]);
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn media_types_unknown_paths_and_methods_are_answered_in_fhir() {
    let app = spawn_app().await;
    let resource = appointment("A-1", "1", days_ahead(1), "booked").to_string();

    let response = app
        .request(reqwest::Method::PUT, "/fhir/Appointment/A-1", Some(&app.token), "application/json", resource.clone())
        .await;
    assert_eq!(response.status(), 200, "plain application/json is accepted too");
    app.next_appointment().await;

    let response = app
        .request(
            reqwest::Method::PUT,
            "/fhir/Appointment/A-1",
            Some(&app.token),
            "application/fhir+xml",
            resource.clone(),
        )
        .await;
    assert_eq!(response.status(), 415);
    assert_eq!(outcome(response).await["issue"][0]["code"], "not-supported");

    let response = app
        .http
        .put(format!("{}/fhir/Appointment/A-1", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/fhir+json")
        .header("accept", "application/fhir+xml")
        .body(resource)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    outcome(response).await;

    let response = app.http.get(format!("{}/fhir/Observation/1", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(outcome(response).await["issue"][0]["code"], "not-found");

    let response = app.http.get(format!("{}/fhir/Patient/P-1", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    outcome(response).await;

    let response = app.http.get(format!("{}/v1/nothing", app.base)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/problem+json", "the JSON API keeps problem+json");
    assert!(app.nothing_published().await);
}

#[tokio::test]
async fn an_unreachable_broker_is_a_503_with_retry_after_and_nothing_is_published() {
    let app = spawn_app_with(Some("amqp://guest:guest@127.0.0.1:1/%2f"), 65_536).await;

    let response = app.put("/fhir/Appointment/A-1", &appointment("A-1", "1", days_ahead(1), "booked")).await;

    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(outcome(response).await["issue"][0]["code"], "transient");
    assert!(app.nothing_published().await);
}
