//! Ingest against real PostgreSQL and RabbitMQ: a fresh database and a fresh AMQP prefix per
//! test, and the scheduler's queue read directly to see what was published.

use std::net::SocketAddr;
use std::time::Duration;

use careline_bus::{BusSettings, Topology};
use careline_domain::events::{AppointmentStatus, Envelope, Event};
use careline_store::PgPool;
use careline_store::testing::{database_url, fresh_database};
use ingest::api::Accepted;
use ingest::auth::create_token;
use ingest::{Application, Settings};
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NETWORK: &str = r#"
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

struct TestApp {
    base: String,
    admin: SocketAddr,
    pool: PgPool,
    bus: BusSettings,
    http: reqwest::Client,
    channel: lapin::Channel,
    _connection: lapin::Connection,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Options {
    amqp_url: Option<String>,
    max_body_bytes: usize,
    token_cache_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { amqp_url: None, max_body_bytes: 65_536, token_cache_ttl: Duration::from_secs(10) }
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

async fn spawn_app_with(options: Options) -> TestApp {
    let (pool, url) = fresh_database(&database_url()).await;
    let bus = BusSettings::for_test();
    let config_path = std::env::temp_dir().join(format!("careline-ingest-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config_path, NETWORK).expect("write facilities file");

    // The test's own view of the broker: the real one, whatever the app is pointed at.
    let connection = lapin::Connection::connect(&bus.url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    Topology::new(&bus.prefix).declare(&channel, bus.queue_expires_ms).await.expect("declare topology");

    let mut app_bus = bus.clone();
    if let Some(amqp_url) = options.amqp_url {
        app_bus.url = amqp_url;
    }
    let settings = Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: url,
        database_max_connections: 5,
        bus: app_bus,
        config_path,
        max_body_bytes: options.max_body_bytes,
        publish_timeout: Duration::from_secs(5),
        token_cache_ttl: options.token_cache_ttl,
        migrate_on_start: false,
        mllp: ingest::mllp::MllpSettings::default(),
    };
    let app = Application::build(settings).await.expect("build ingest");
    let base = format!("http://{}", app.public_addr());
    let admin = app.admin_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { base, admin, pool, bus, http: reqwest::Client::new(), channel, _connection: connection, shutdown }
}

impl TestApp {
    async fn token(&self, source: &str, facilities: &[&str]) -> String {
        let facilities: Vec<String> = facilities.iter().map(|f| f.to_string()).collect();
        create_token(&self.pool, source, &facilities, None).await.expect("create token").token
    }

    async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, token, body.to_string()).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: String) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// The next event on the scheduler's queue, waiting up to 10 s.
    async fn next_scheduler_event(&self) -> Envelope {
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

    async fn scheduler_queue_is_empty(&self) -> bool {
        let queue = Topology::new(&self.bus.prefix).scheduler_events();
        self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic_get").is_none()
    }
}

fn patient(facility: &str) -> Value {
    json!({
        "facility_id": facility,
        "first_name": "Asha",
        "phone": "+919812345678",
        "language": "hi",
        "consent": {
            "state": "opted_in",
            "recorded_at": "2026-01-05T10:00:00+05:30",
            "source": "front_desk",
            "evidence": "form-77",
            "wording_version": "v3"
        }
    })
}

fn appointment(facility: &str) -> Value {
    json!({
        "facility_id": facility,
        "patient_id": "P-1",
        "version": 4,
        "starts_at": "2026-03-01T09:30:00+05:30",
        "duration_minutes": 20,
        "clinician": "Dr Rao",
        "department": "Cardiology",
        "instructions": "Bring your previous reports."
    })
}

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "problems are application/problem+json"
    );
    response.json().await.expect("problem body")
}

fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_valid_patient_is_accepted_only_once_published_for_the_scheduler() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;

    let response = app.put("/v1/patients/P-1", Some(&token), &patient("city")).await;

    assert_eq!(response.status(), 202);
    let accepted: Accepted = response.json().await.unwrap();
    let envelope = app.next_scheduler_event().await;
    assert_eq!(envelope.message_id, accepted.event_id);
    let Event::PatientUpserted(p) = envelope.event else { panic!("expected patient_upserted, got {envelope:?}") };
    assert_eq!(p.patient_id, "P-1");
    assert_eq!(p.facility_id, "city");
    assert_eq!(p.first_name.as_deref(), Some("Asha"));
    assert_eq!(p.phone, "+919812345678");
    assert_eq!(p.language, "hi");
    assert_eq!(p.reported_by, "city-his");
    let consent = p.consent.expect("consent travels with the patient");
    assert_eq!(consent.state, careline_domain::consent::ConsentState::OptedIn);
    assert_eq!(consent.recorded_at.to_rfc3339(), "2026-01-05T04:30:00+00:00");
    assert_eq!(consent.evidence.as_deref(), Some("form-77"));
}

#[tokio::test]
async fn a_valid_appointment_is_accepted_and_published_with_its_fields() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["*"]).await;

    let response = app.put("/v1/appointments/A-1", Some(&token), &appointment("city")).await;

    assert_eq!(response.status(), 202);
    let accepted: Accepted = response.json().await.unwrap();
    let envelope = app.next_scheduler_event().await;
    assert_eq!(envelope.message_id, accepted.event_id);
    let Event::AppointmentUpserted(a) = envelope.event else { panic!("expected appointment_upserted") };
    assert_eq!(a.appointment_id, "A-1");
    assert_eq!(a.facility_id, "city");
    assert_eq!(a.patient_id, "P-1");
    assert_eq!(a.version, 4);
    assert_eq!(a.status, AppointmentStatus::Booked);
    assert_eq!(a.starts_at.to_rfc3339(), "2026-03-01T04:00:00+00:00");
    assert_eq!(a.duration_minutes, Some(20));
    assert_eq!(a.clinician.as_deref(), Some("Dr Rao"));
    assert_eq!(a.reported_by, "city-his");
}

#[tokio::test]
async fn cancelling_an_appointment_publishes_it_as_cancelled() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;
    let body = json!({"facility_id": "city", "patient_id": "P-1", "version": 5, "starts_at": "2026-03-01T04:00:00Z"});

    let response = app.send(reqwest::Method::POST, "/v1/appointments/A-1/cancel", Some(&token), body.to_string()).await;

    assert_eq!(response.status(), 202);
    let Event::AppointmentUpserted(a) = app.next_scheduler_event().await.event else { panic!("expected appointment") };
    assert_eq!(a.status, AppointmentStatus::Cancelled);
    assert_eq!(a.version, 5);
}

#[tokio::test]
async fn a_request_without_a_token_is_unauthorized_with_a_bearer_challenge() {
    let app = spawn_app().await;

    let response = app.put("/v1/patients/P-1", None, &patient("city")).await;

    assert_eq!(response.status(), 401);
    assert_eq!(response.headers().get("www-authenticate").unwrap(), "Bearer");
    let body = problem(response).await;
    assert_eq!(body["status"], 401);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn an_unknown_token_is_unauthorized() {
    let app = spawn_app().await;
    app.token("city-his", &["city"]).await;

    let response = app.put("/v1/patients/P-1", Some("clt_not-a-real-token"), &patient("city")).await;

    assert_eq!(response.status(), 401);
    assert_eq!(problem(response).await["status"], 401);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn a_revoked_token_stops_working_within_the_cache_time() {
    let app = spawn_app_with(Options { token_cache_ttl: Duration::from_secs(1), ..Options::default() }).await;
    let created = create_token(&app.pool, "city-his", &["city".to_owned()], None).await.unwrap();
    let response = app.put("/v1/patients/P-1", Some(&created.token), &patient("city")).await;
    assert_eq!(response.status(), 202);
    app.next_scheduler_event().await;

    assert!(careline_store::tokens::revoke(&app.pool, created.token_id, chrono::Utc::now()).await.unwrap());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = app.put("/v1/patients/P-1", Some(&created.token), &patient("city")).await;
        if response.status() == 401 {
            break;
        }
        assert_eq!(response.status(), 202);
        app.next_scheduler_event().await;
        assert!(tokio::time::Instant::now() < deadline, "revoked token still accepted after the cache time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_unauthorized() {
    let app = spawn_app().await;
    let token = ingest::auth::generate_token();
    let digest = ingest::auth::hash_token(&token);
    careline_store::tokens::insert(
        &app.pool,
        &careline_store::tokens::NewApiToken {
            token_id: uuid::Uuid::now_v7(),
            source: "city-his",
            token_sha256: &digest,
            facilities: &["*".to_owned()],
            expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        },
    )
    .await
    .unwrap();

    let response = app.put("/v1/patients/P-1", Some(&token), &patient("city")).await;

    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_token_may_not_write_for_a_facility_it_does_not_cover() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;

    let response = app.put("/v1/appointments/A-1", Some(&token), &appointment("north")).await;

    assert_eq!(response.status(), 403);
    assert_eq!(problem(response).await["status"], 403);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn two_active_tokens_of_one_source_both_work_so_tokens_can_be_rotated() {
    let app = spawn_app().await;
    let old = app.token("city-his", &["city"]).await;
    let new = app.token("city-his", &["city"]).await;

    for token in [&old, &new] {
        let response = app.put("/v1/patients/P-1", Some(token), &patient("city")).await;
        assert_eq!(response.status(), 202);
        let Event::PatientUpserted(p) = app.next_scheduler_event().await.event else { panic!("expected patient") };
        assert_eq!(p.reported_by, "city-his");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_that_names_the_field() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["*"]).await;

    let mut wrong_type = appointment("city");
    wrong_type["version"] = json!("four");
    let response = app.put("/v1/appointments/A-1", Some(&token), &wrong_type).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_fields(&problem(response).await), ["version"]);

    let mut nested = patient("city");
    nested["consent"]["state"] = json!(true);
    let response = app.put("/v1/patients/P-1", Some(&token), &nested).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_fields(&problem(response).await), ["consent.state"]);

    let mut unknown = patient("city");
    unknown["phone_number"] = json!("+919812345678");
    let response = app.put("/v1/patients/P-1", Some(&token), &unknown).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_fields(&problem(response).await), ["phone_number"]);

    let response = app.send(reqwest::Method::PUT, "/v1/patients/P-1", Some(&token), "{\"phone\": ".into()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(problem(response).await["status"], 400);

    assert!(app.scheduler_queue_is_empty().await, "nothing is published for a bad request");
}

#[tokio::test]
async fn a_bad_phone_is_a_422_that_names_phone() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;
    let mut body = patient("city");
    body["phone"] = json!("09812345678");

    let response = app.put("/v1/patients/P-1", Some(&token), &body).await;

    assert_eq!(response.status(), 422);
    let body = problem(response).await;
    assert_eq!(error_fields(&body), ["phone"]);
    assert_eq!(body["type"], "https://careline.dev/problems/validation-failed");
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn every_missing_or_invalid_field_is_listed_in_one_422() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["*"]).await;

    let response = app.put("/v1/patients/P-1", Some(&token), &json!({"facility_id": "city", "language": "x"})).await;

    assert_eq!(response.status(), 422);
    assert_eq!(error_fields(&problem(response).await), ["phone", "language"]);
}

#[tokio::test]
async fn an_unknown_facility_is_a_422() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["*"]).await;

    let response = app.put("/v1/appointments/A-1", Some(&token), &appointment("atlantis")).await;

    assert_eq!(response.status(), 422);
    assert_eq!(error_fields(&problem(response).await), ["facility_id"]);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn a_start_time_that_is_not_rfc3339_with_an_offset_is_a_422() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;

    for bad in ["2026-03-01T09:30:00", "tomorrow at nine", "2026-02-30T09:30:00Z"] {
        let mut body = appointment("city");
        body["starts_at"] = json!(bad);
        let response = app.put("/v1/appointments/A-1", Some(&token), &body).await;
        assert_eq!(response.status(), 422, "{bad}");
        assert_eq!(error_fields(&problem(response).await), ["starts_at"], "{bad}");
    }
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let app = spawn_app_with(Options { max_body_bytes: 1024, ..Options::default() }).await;
    let token = app.token("city-his", &["city"]).await;
    let mut body = appointment("city");
    body["instructions"] = json!("x".repeat(4096));

    let response = app.put("/v1/appointments/A-1", Some(&token), &body).await;

    assert_eq!(response.status(), 413);
    assert_eq!(problem(response).await["status"], 413);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;

    let response = app
        .http
        .put(format!("{}/v1/patients/P-1", app.base))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(patient("city").to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 415);
    assert_eq!(problem(response).await["status"], 415);
}

#[tokio::test]
async fn an_unreachable_broker_is_a_503_with_retry_after_and_nothing_is_published() {
    let app =
        spawn_app_with(Options { amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()), ..Options::default() })
            .await;
    let token = app.token("city-his", &["city"]).await;

    let response = app.put("/v1/patients/P-1", Some(&token), &patient("city")).await;

    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(problem(response).await["status"], 503);
    assert!(app.scheduler_queue_is_empty().await);
}

#[tokio::test]
async fn readiness_reports_database_and_broker_and_metrics_count_requests() {
    let app = spawn_app().await;
    let token = app.token("city-his", &["city"]).await;
    assert_eq!(app.put("/v1/patients/P-1", Some(&token), &patient("city")).await.status(), 202);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.http.get(format!("http://{}/readyz", app.admin)).send().await.unwrap();
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body, json!({"broker": true, "database": true}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.http.get(format!("http://{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("careline_ingest_requests_total"), "{metrics}");
    assert!(metrics.contains("careline_ingest_publish_seconds"), "{metrics}");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_details() {
    let app = spawn_app().await;

    let response = app.http.get(format!("{}/v1/patients/P-1", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(problem(response).await["status"], 405);

    let response = app.http.get(format!("{}/v2/whatever", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(problem(response).await["status"], 404);
}
