use std::time::Duration;

use careline_bus::{BusSettings, Topology};
use careline_domain::events::Envelope;
use careline_store::PgPool;
use careline_whatsapp::signature::sign;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook_consumer::{Application, Secret, Settings};

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// A valid Indian mobile number, in wa_id form and E.164.
pub const PATIENT_WA_ID: &str = "919812345678";
pub const PATIENT_E164: &str = "+919812345678";
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: String,
    pub admin_addr: String,
    pub pool: PgPool,
    pub database_url: String,
    pub bus: BusSettings,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    let (_, database_url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let bus = BusSettings::for_test();
    let mut settings = Settings {
        app_secret: Secret::new(APP_SECRET),
        verify_token: Secret::new(VERIFY_TOKEN),
        webhook_listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: webhook_consumer::settings::DEFAULT_MAX_BODY_BYTES,
        database_url: Secret::new(database_url.clone()),
        database_max_connections: 5,
        bus: bus.clone(),
        migrate_on_start: true,
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        network: None,
        whatsapp: None,
    };
    customise(&mut settings);
    // The database the application really uses (a test may point it elsewhere).
    let database_url = settings.database_url.expose().to_owned();
    let pool = careline_store::connect_lazy(&database_url, 5).expect("pool");
    let app = Application::build(settings).await.expect("build");
    let addr = format!("http://{}", app.public_addr());
    let admin_addr = format!("http://{}", app.admin_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { addr, admin_addr, pool, database_url, bus, client: reqwest::Client::new(), shutdown, task: Some(task) }
}

impl TestApp {
    pub async fn post(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhook", self.addr))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().await.expect("POST /webhook")
    }

    /// POSTs a body signed as Meta would, and expects 200.
    pub async fn post_signed(&self, body: &[u8]) {
        let response = self.post(body, Some(&sign(APP_SECRET.as_bytes(), body))).await;
        assert_eq!(response.status(), 200, "signed webhook refused");
    }

    /// Waits until every stored body is processed and every event is published.
    pub async fn wait_until_settled(&self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL)
                      + (SELECT count(*) FROM webhook_outbox WHERE published_at IS NULL)",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap_or(1);
            if pending == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "webhooks not processed within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `query` (a single count) until it returns `expected`.
    pub async fn wait_for_count(&self, query: &str, expected: i64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&self.pool).await.unwrap_or(-1);
            if count == expected {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{query}` stayed at {count}, expected {expected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, query: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&self.pool).await.expect("count")
    }

    /// Takes every message now in `{p}.hospital.events`, after waiting for at least `at_least`.
    pub async fn hospital_events(&self, at_least: usize) -> Vec<Envelope> {
        let topology = Topology::new(&self.bus.prefix);
        let connection =
            lapin::Connection::connect(&self.bus.url, lapin::ConnectionProperties::default()).await.expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel, self.bus.queue_expires_ms).await.expect("declare");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut events = Vec::new();
        loop {
            let got = channel
                .basic_get(topology.hospital_events().into(), BasicGetOptions::default())
                .await
                .expect("basic_get");
            match got {
                Some(message) => {
                    events.push(serde_json::from_slice(&message.delivery.data).expect("envelope"));
                    message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
                }
                None if events.len() >= at_least => break,
                None => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "only {} hospital events within {DEADLINE:?}, expected {at_least}",
                        events.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let _ = connection.close(0, "done".into()).await;
        events
    }

    /// Stops the application and waits for it to exit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task).await.expect("stops in time").expect("no panic").expect("clean exit");
        }
    }
}

/// Meta's envelope around one `value`.
pub fn envelope(values: &[Value]) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [ {
            "id": "102290129340398",
            "changes": values.iter().map(|v| json!({ "field": "messages", "value": v })).collect::<Vec<_>>()
        } ]
    })
}

/// A `value` with statuses.
pub fn statuses_value(statuses: Vec<Value>) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID },
        "statuses": statuses
    })
}

pub fn status(wamid: &str, status: &str, timestamp: i64, job_id: Option<Uuid>) -> Value {
    let mut s = json!({
        "id": wamid, "status": status, "timestamp": timestamp.to_string(), "recipient_id": PATIENT_WA_ID,
        "pricing": { "billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular" }
    });
    if let Some(job_id) = job_id {
        s["biz_opaque_callback_data"] = json!(job_id.to_string());
    }
    s
}

/// A `value` with inbound messages from the test patient.
pub fn messages_value(messages: Vec<Value>) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID },
        "contacts": [ { "profile": { "name": "Asha" }, "wa_id": PATIENT_WA_ID } ],
        "messages": messages
    })
}

pub fn text_message(id: &str, body: &str, timestamp: i64) -> Value {
    json!({ "from": PATIENT_WA_ID, "id": id, "timestamp": timestamp.to_string(), "type": "text", "text": { "body": body } })
}

pub fn button_message(id: &str, context_wamid: &str, payload: &str, label: &str, timestamp: i64) -> Value {
    json!({
        "context": { "from": "15550783881", "id": context_wamid },
        "from": PATIENT_WA_ID, "id": id, "timestamp": timestamp.to_string(), "type": "button",
        "button": { "text": label, "payload": payload }
    })
}

/// Meta's bytes for a value (`\/` and `\uXXXX` escapes).
pub fn meta_bytes(value: &Value) -> Vec<u8> {
    careline_whatsapp::webhook::to_meta_json(value).expect("serialise")
}

/// A patient, a booked appointment, a reminder job and its accepted send.
pub struct Fixture {
    pub patient_id: String,
    pub appointment_id: String,
    pub facility_id: String,
    pub job_id: Uuid,
    pub wamid: String,
}

pub async fn seed_appointment(pool: &PgPool) -> Fixture {
    let fixture = Fixture {
        patient_id: "P-1001".into(),
        appointment_id: "A-2002".into(),
        facility_id: "F-north".into(),
        job_id: Uuid::now_v7(),
        wamid: format!("wamid.{}", Uuid::new_v4().simple()),
    };
    sqlx::query(
        "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
         VALUES ($1, $2, 'Asha', $3, 'en', now())",
    )
    .bind(&fixture.patient_id)
    .bind(&fixture.facility_id)
    .bind(PATIENT_E164)
    .execute(pool)
    .await
    .expect("patient");
    sqlx::query(
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, status, starts_at)
         VALUES ($1, $2, $3, 1, 'booked', now() + interval '2 days')",
    )
    .bind(&fixture.appointment_id)
    .bind(&fixture.facility_id)
    .bind(&fixture.patient_id)
    .execute(pool)
    .await
    .expect("appointment");
    sqlx::query(
        "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state)
         VALUES ($1, $2, 1, 'reminder_48h', now(), 'enqueued')",
    )
    .bind(fixture.job_id)
    .bind(&fixture.appointment_id)
    .execute(pool)
    .await
    .expect("job");
    sqlx::query("INSERT INTO sends (job_id, state, wamid, attempts) VALUES ($1, 'accepted', $2, 1)")
        .bind(fixture.job_id)
        .bind(&fixture.wamid)
        .execute(pool)
        .await
        .expect("send");
    fixture
}
