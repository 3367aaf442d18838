//! The whole Careline fleet in one test process, for the end-to-end tests in `tests/tests/`.
//!
//! [`spawn_fleet`] starts ingest, the scheduler, the sender, the webhook-consumer and wa-sandbox
//! against real PostgreSQL (a fresh database) and RabbitMQ (a fresh prefix), each on
//! `127.0.0.1:0` and each with its own shutdown token, so a test can stop, kill and restart one
//! of them. One [`ManualClock`] is shared by ingest, the scheduler and the sender: tests move it
//! to a reminder's due time instead of waiting for it. Everything a test needs to observe is
//! read where it is durable: PostgreSQL, the sandbox's message list, and the hospital queue.
//!
//! The network has two facilities in different time zones (see [`CONFIG`]): `north`
//! (Europe/Berlin, no quiet hours, 10 messages per second) and `south` (Asia/Kolkata, quiet
//! hours 21:00–08:00 local).
#![forbid(unsafe_code)]

pub mod otlp;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use careline_bus::{BusSettings, Topology};
use careline_domain::events::Envelope;
use careline_domain::{Clock, ManualClock, Phone};
use careline_store::PgPool;
use chrono::{DateTime, SubsecRound, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wa_sandbox::{PhoneNumberSpec, Sandbox, SandboxHandle, SandboxMessage, SandboxSettings, TemplateSpec};

/// How long any expected state may take to appear. Generous for a busy 2-core machine; every
/// wait polls, so a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Between two looks at the expected state.
const POLL: Duration = Duration::from_millis(25);

/// Europe/Berlin, no quiet hours, paced at 10 messages per second.
pub const NORTH: &str = "north";
/// Asia/Kolkata, quiet hours 21:00–08:00 local.
pub const SOUTH: &str = "south";
/// The business numbers the facilities send from (registered in the sandbox).
pub const NORTH_NUMBER: &str = "106540352240001";
pub const SOUTH_NUMBER: &str = "106540352240002";
/// Template names at "Meta", one per kind of message.
pub const BOOKED_TEMPLATE: &str = "e2e_appointment_booked";
pub const REMINDER_TEMPLATE: &str = "e2e_appointment_reminder";
pub const SOON_TEMPLATE: &str = "e2e_appointment_soon";
/// Every patient is called this (the first body parameter of every template).
pub const FIRST_NAME: &str = "Asha";
/// Every appointment is with this clinician (a body parameter of the 48 h reminder).
pub const CLINICIAN: &str = "Dr. Rao";
/// Shared by wa-sandbox (signs) and the webhook-consumer (verifies).
const APP_SECRET: &str = "e2e-app-secret";
const ACCESS_TOKEN: &str = "e2e-access-token";
/// Sender concurrency: jobs worked on at once.
pub const SENDER_CONCURRENCY: usize = 8;

/// The facilities file (`CARELINE_CONFIG`) every component of the fleet reads.
pub const CONFIG: &str = r#"
default_language = "en"

[templates.booking_confirmation]
name = "e2e_appointment_booked"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]
buttons = ["confirm", "reschedule", "cancel"]

[templates.reminder]
name = "e2e_appointment_reminder"
languages = { en = "en_US" }
body = ["first_name", "date_time", "clinician", "facility"]
buttons = ["confirm", "reschedule", "cancel"]

[templates.reminder_2h]
name = "e2e_appointment_soon"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]
buttons = ["confirm", "reschedule", "cancel"]

[[facility]]
id = "north"
name = "North General"
time_zone = "Europe/Berlin"
phone_number_id = "106540352240001"
throughput_mps = 10

[[facility]]
id = "south"
name = "South Clinic"
time_zone = "Asia/Kolkata"
phone_number_id = "106540352240002"
quiet_hours = { start = "21:00", end = "08:00" }
"#;

/// The templates of [`CONFIG`], approved in the sandbox with matching parameter counts.
fn sandbox_templates() -> Vec<TemplateSpec> {
    let buttons: Vec<String> = ["Confirm", "Reschedule", "Cancel"].into_iter().map(str::to_owned).collect();
    let template = |name: &str, language: &str, body_params: usize| TemplateSpec {
        name: name.to_owned(),
        languages: vec![language.to_owned()],
        body_params,
        quick_replies: buttons.clone(),
        ..TemplateSpec::default()
    };
    vec![template(BOOKED_TEMPLATE, "en", 3), template(REMINDER_TEMPLATE, "en_US", 4), template(SOON_TEMPLATE, "en", 3)]
}

/// One of the fleet's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Ingest,
    Scheduler,
    Sender,
    WebhookConsumer,
}

/// A component running in a task of its own.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Whether a patient report carries an opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    OptedIn,
    NotRecorded,
}

/// A `jobs` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    pub job_id: Uuid,
    pub appointment_id: String,
    pub generation: i32,
    pub kind: String,
    pub state: String,
    pub reason: Option<String>,
    pub due_at: DateTime<Utc>,
    pub enqueued_at: Option<DateTime<Utc>>,
}

/// A `sends` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SendRow {
    pub job_id: Uuid,
    pub state: String,
    pub reason: Option<String>,
    pub wamid: Option<String>,
    pub template_name: Option<String>,
}

/// The settings each component is (re)started with.
struct FleetSettings {
    ingest: ingest::Settings,
    scheduler: scheduler::Settings,
    sender: sender::Settings,
    webhook_consumer: webhook_consumer::Settings,
}

/// A running fleet. Dropping it stops every component.
pub struct Fleet {
    /// The fleet's database (fresh for this test).
    pub pool: PgPool,
    pub database_url: String,
    /// The fleet's broker settings (a fresh prefix).
    pub bus: BusSettings,
    /// "Now" for ingest, the scheduler and the sender.
    pub clock: ManualClock,
    /// The facilities file.
    pub config_path: PathBuf,
    /// Messages, statuses, faults and patient replies of the WhatsApp stand-in.
    pub sandbox: SandboxHandle,
    /// `http://127.0.0.1:<port>` of ingest's public API.
    pub ingest_url: String,
    api_token: String,
    http: reqwest::Client,
    settings: FleetSettings,
    ingest: Option<Running>,
    scheduler: Option<Running>,
    sender: Option<Running>,
    webhook_consumer: Option<Running>,
    sandbox_shutdown: CancellationToken,
    /// Where each component serves `/healthz`, `/readyz` and `/metrics` (its latest start).
    admin_addrs: std::sync::Mutex<std::collections::HashMap<Component, SocketAddr>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for running in [&self.ingest, &self.scheduler, &self.sender, &self.webhook_consumer].into_iter().flatten() {
            running.shutdown.cancel();
        }
        self.sandbox_shutdown.cancel();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Logs of every component, when `RUST_LOG` is set (captured per test).
fn init_test_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Builds and starts the whole fleet, and waits until every component reports ready.
pub async fn spawn_fleet() -> Fleet {
    init_test_tracing();
    let (pool, database_url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let bus = BusSettings::for_test();
    // Whole seconds: PostgreSQL keeps microseconds, so sub-second instants would not round-trip.
    let clock = ManualClock::new(Utc::now().trunc_subsecs(0));
    let config_path = std::env::temp_dir().join(format!("careline-e2e-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(&config_path, CONFIG).expect("write the facilities file");
    let network = Arc::new(careline_domain::facility::NetworkConfig::from_toml(CONFIG).expect("CONFIG is valid"));
    let api_token = ingest::auth::create_token(&pool, "e2e-hospital", &["*".to_owned()], None)
        .await
        .expect("create an ingest API token")
        .token;

    // The webhook-consumer is built first: the sandbox needs its address.
    let mut webhook_settings = webhook_consumer::Settings {
        app_secret: webhook_consumer::Secret::new(APP_SECRET),
        verify_token: webhook_consumer::Secret::new("e2e-verify-token"),
        webhook_listen_addr: loopback(),
        admin_listen_addr: loopback(),
        max_body_bytes: 1024 * 1024,
        database_url: webhook_consumer::Secret::new(database_url.clone()),
        database_max_connections: 4,
        bus: bus.clone(),
        migrate_on_start: false,
        batch_size: 100,
        poll_interval: Duration::from_millis(100),
        network: Some(network.clone()),
        // Filled in below, once the sandbox's address is known.
        whatsapp: None,
    };
    let webhook_app =
        webhook_consumer::Application::build(webhook_settings.clone()).await.expect("build webhook-consumer");
    // Restarts rebind the same port, so the sandbox's webhook URL stays right.
    webhook_settings.webhook_listen_addr = webhook_app.public_addr();

    let mut sandbox_settings = SandboxSettings {
        listen_addr: loopback(),
        access_token: ACCESS_TOKEN.to_owned(),
        app_secret: APP_SECRET.to_owned(),
        webhook_url: Some(format!("http://{}/webhook", webhook_app.public_addr())),
        templates: sandbox_templates(),
        phone_numbers: [(NORTH_NUMBER, "15550000001"), (SOUTH_NUMBER, "15550000002")]
            .into_iter()
            .map(|(id, display)| PhoneNumberSpec {
                id: id.to_owned(),
                display_phone_number: display.to_owned(),
                mps: None,
            })
            .collect(),
        // Below the sender's own pair interval, so the sandbox never sees a violation.
        pair_interval: Duration::from_millis(100),
        ..SandboxSettings::default()
    };
    sandbox_settings.statuses.sent_after = Duration::from_millis(20);
    sandbox_settings.statuses.delivered_after = Duration::from_millis(60);
    sandbox_settings.statuses.read_after = Duration::from_millis(120);
    sandbox_settings.statuses.read_probability = 1.0;
    sandbox_settings.delivery.retry_base = Duration::from_millis(200);
    sandbox_settings.delivery.retry_max = Duration::from_secs(2);
    let sandbox = Sandbox::build(sandbox_settings).await.expect("build wa-sandbox");
    let sandbox_url = sandbox.base_url();
    let sandbox_handle = sandbox.handle();
    webhook_settings.whatsapp = Some(careline_whatsapp::client::ClientSettings::new(
        sandbox_url.clone(),
        careline_whatsapp::client::DEFAULT_API_VERSION,
        ACCESS_TOKEN,
    ));
    // Built again with the sandbox as its WhatsApp API (for STOP / START / HELP answers), on
    // the port the sandbox was told.
    drop(webhook_app);
    let webhook_app =
        webhook_consumer::Application::build(webhook_settings.clone()).await.expect("build webhook-consumer");
    let sandbox_shutdown = CancellationToken::new();
    tokio::spawn(sandbox.run_until_stopped(sandbox_shutdown.clone()));

    let scheduler_settings = scheduler::Settings {
        database_url: database_url.clone(),
        db_max_connections: 4,
        bus: bus.clone(),
        config_path: config_path.clone(),
        admin_addr: loopback(),
        migrate_on_start: false,
        prefetch: 32,
        concurrency: 4,
        tick_ms: 50,
        batch: 500,
        lease_ms: 30_000,
        worker_id: "e2e-scheduler".to_owned(),
    };
    let sender_settings = sender::Settings {
        database_url: database_url.clone(),
        database_max_connections: 8,
        migrate_on_start: false,
        bus: bus.clone(),
        admin_listen_addr: loopback(),
        network,
        prefetch: 64,
        concurrency: SENDER_CONCURRENCY,
        pair_interval: Duration::from_millis(200),
        headroom: sender::limits::HEADROOM,
        max_attempts: 3,
        retry_min_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(1),
        whatsapp_base_url: sandbox_url,
        whatsapp_api_version: careline_whatsapp::client::DEFAULT_API_VERSION.to_owned(),
        whatsapp_access_token: careline_whatsapp::client::AccessToken::new(ACCESS_TOKEN),
        http_timeout: Duration::from_secs(10),
        unknown_window: Duration::from_secs(3),
        unknown_max_resends: 1,
        paused_recheck: Duration::from_secs(1),
        tier_recheck: Duration::from_secs(1),
    };
    let mut ingest_settings = ingest::Settings {
        listen_addr: loopback(),
        admin_addr: loopback(),
        database_url: database_url.clone(),
        database_max_connections: 2,
        bus: bus.clone(),
        config_path: config_path.clone(),
        max_body_bytes: 65_536,
        publish_timeout: Duration::from_secs(10),
        token_cache_ttl: Duration::from_secs(10),
        migrate_on_start: false,
        mllp: ingest::mllp::MllpSettings::default(),
    };
    let ingest_app = ingest::Application::build_with_clock(ingest_settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("build ingest");
    ingest_settings.listen_addr = ingest_app.public_addr();
    let ingest_url = format!("http://{}", ingest_app.public_addr());

    let mut fleet = Fleet {
        pool,
        database_url,
        bus,
        clock,
        config_path,
        sandbox: sandbox_handle,
        ingest_url,
        api_token,
        http: reqwest::Client::new(),
        settings: FleetSettings {
            ingest: ingest_settings,
            scheduler: scheduler_settings,
            sender: sender_settings,
            webhook_consumer: webhook_settings,
        },
        ingest: None,
        scheduler: None,
        sender: None,
        webhook_consumer: None,
        sandbox_shutdown,
        admin_addrs: Default::default(),
    };
    let admin = webhook_app.admin_addr();
    fleet.webhook_consumer = Some(spawn(|t| webhook_app.run_until_stopped(t)));
    fleet.wait_ready(Component::WebhookConsumer, admin).await;
    let admin = ingest_app.admin_addr();
    fleet.ingest = Some(spawn(|t| ingest_app.run_until_stopped(t)));
    fleet.wait_ready(Component::Ingest, admin).await;
    fleet.start(Component::Scheduler).await;
    fleet.start(Component::Sender).await;
    fleet
}

/// Runs a component's `run_until_stopped` in a task with a fresh shutdown token.
fn spawn<F, Fut>(run: F) -> Running
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(shutdown.clone()));
    Running { shutdown, task }
}

impl Fleet {
    fn slot(&mut self, component: Component) -> &mut Option<Running> {
        match component {
            Component::Ingest => &mut self.ingest,
            Component::Scheduler => &mut self.scheduler,
            Component::Sender => &mut self.sender,
            Component::WebhookConsumer => &mut self.webhook_consumer,
        }
    }

    /// Builds and starts `component` (again), and waits until its `/readyz` answers 200.
    pub async fn start(&mut self, component: Component) {
        assert!(self.slot(component).is_none(), "{component:?} is already running");
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let (admin, running) = match component {
            Component::Ingest => {
                let app = ingest::Application::build_with_clock(self.settings.ingest.clone(), clock)
                    .await
                    .expect("build ingest");
                (app.admin_addr(), spawn(|t| app.run_until_stopped(t)))
            }
            Component::Scheduler => {
                let app = scheduler::Application::build_with_clock(self.settings.scheduler.clone(), clock)
                    .await
                    .expect("build scheduler");
                (app.admin_addr(), spawn(|t| app.run_until_stopped(t)))
            }
            Component::Sender => {
                let app = sender::Application::build_with_clock(self.settings.sender.clone(), clock)
                    .await
                    .expect("build sender");
                (app.admin_addr(), spawn(|t| app.run_until_stopped(t)))
            }
            Component::WebhookConsumer => {
                let app = webhook_consumer::Application::build(self.settings.webhook_consumer.clone())
                    .await
                    .expect("build webhook-consumer");
                (app.admin_addr(), spawn(|t| app.run_until_stopped(t)))
            }
        };
        *self.slot(component) = Some(running);
        self.wait_ready(component, admin).await;
    }

    /// Stops `component` gracefully (its shutdown token) and waits until it has returned.
    pub async fn stop(&mut self, component: Component) {
        let running = self.slot(component).take().unwrap_or_else(|| panic!("{component:?} is not running"));
        running.shutdown.cancel();
        match tokio::time::timeout(DEADLINE, running.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{component:?} stopped with an error: {e:#}"),
            Ok(Err(e)) => panic!("{component:?} panicked: {e}"),
            Err(_) => panic!("{component:?} did not stop within {DEADLINE:?}"),
        }
    }

    /// Kills `component`: its task is aborted wherever it is, like a process crash (its
    /// broker connection and database sessions are dropped).
    pub async fn kill(&mut self, component: Component) {
        let running = self.slot(component).take().unwrap_or_else(|| panic!("{component:?} is not running"));
        running.task.abort();
        let _ = running.task.await;
    }

    /// The admin address (`/metrics`, `/readyz`) of a running component.
    pub fn admin_addr(&self, component: Component) -> SocketAddr {
        let addrs = self.admin_addrs.lock().unwrap_or_else(|p| p.into_inner());
        *addrs.get(&component).unwrap_or_else(|| panic!("{component:?} was never started"))
    }

    async fn wait_ready(&self, component: Component, admin: SocketAddr) {
        self.admin_addrs.lock().unwrap_or_else(|p| p.into_inner()).insert(component, admin);
        let url = format!("http://{admin}/readyz");
        let http = &self.http;
        wait_until(&format!("{component:?} is ready"), DEADLINE, || async {
            http.get(&url).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    // ---- ingest, over HTTP -----------------------------------------------------------------

    async fn call_ingest(&self, request: reqwest::RequestBuilder, body: serde_json::Value) {
        let response = request.bearer_auth(&self.api_token).json(&body).send().await.expect("ingest answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "ingest refused {body}: {text}");
    }

    /// Reports a patient through ingest (`PUT /v1/patients/{id}`), opted in an hour ago or with
    /// no consent at all, and waits until the scheduler has stored the profile (and consent).
    pub async fn ingest_patient(&self, patient_id: &str, facility_id: &str, phone: &str, consent: Consent) {
        let mut body = serde_json::json!({
            "facility_id": facility_id,
            "first_name": FIRST_NAME,
            "phone": phone,
            "language": "en",
        });
        if consent == Consent::OptedIn {
            body["consent"] = serde_json::json!({
                "state": "opted_in",
                "recorded_at": (self.clock.now() - chrono::Duration::hours(1)).to_rfc3339(),
                "source": "booking_form",
                "evidence": format!("form-{patient_id}"),
                "wording_version": "v1",
            });
        }
        self.call_ingest(self.http.put(format!("{}/v1/patients/{patient_id}", self.ingest_url)), body).await;
        let pool = &self.pool;
        wait_until(&format!("patient {patient_id} is stored"), DEADLINE, || async {
            let stored: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM patients WHERE patient_id = $1)
                      + (SELECT count(*) FROM consent_log WHERE patient_id = $1)",
            )
            .bind(patient_id)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
            stored == if consent == Consent::OptedIn { 2 } else { 1 }
        })
        .await;
    }

    /// Reports a patient through ingest with this `consent` object (provenance, purpose, …) and
    /// waits until the scheduler has stored the profile and the consent entry.
    pub async fn ingest_patient_with_consent(
        &self,
        patient_id: &str,
        facility_id: &str,
        phone: &str,
        consent: serde_json::Value,
    ) {
        let body = serde_json::json!({
            "facility_id": facility_id,
            "first_name": FIRST_NAME,
            "phone": phone,
            "language": "en",
            "consent": consent,
        });
        self.call_ingest(self.http.put(format!("{}/v1/patients/{patient_id}", self.ingest_url)), body).await;
        let pool = &self.pool;
        wait_until(&format!("patient {patient_id} and consent are stored"), DEADLINE, || async {
            let stored: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM patients WHERE patient_id = $1)
                      + (SELECT count(*) FROM consent_log WHERE patient_id = $1)",
            )
            .bind(patient_id)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
            stored == 2
        })
        .await;
    }

    /// Books or moves an appointment through ingest (`PUT /v1/appointments/{id}`) and waits
    /// until the scheduler has applied this version.
    pub async fn ingest_appointment(
        &self,
        appointment_id: &str,
        facility_id: &str,
        patient_id: &str,
        version: i64,
        starts_at: DateTime<Utc>,
    ) {
        let body = serde_json::json!({
            "facility_id": facility_id,
            "patient_id": patient_id,
            "version": version,
            "starts_at": starts_at.to_rfc3339(),
            "duration_minutes": 20,
            "clinician": CLINICIAN,
        });
        self.call_ingest(self.http.put(format!("{}/v1/appointments/{appointment_id}", self.ingest_url)), body).await;
        self.wait_for_appointment_version(appointment_id, version).await;
    }

    /// Cancels an appointment through ingest (`POST /v1/appointments/{id}/cancel`) and waits
    /// until the scheduler has applied it.
    pub async fn cancel_appointment(
        &self,
        appointment_id: &str,
        facility_id: &str,
        patient_id: &str,
        version: i64,
        starts_at: DateTime<Utc>,
    ) {
        let body = serde_json::json!({
            "facility_id": facility_id,
            "patient_id": patient_id,
            "version": version,
            "starts_at": starts_at.to_rfc3339(),
        });
        self.call_ingest(self.http.post(format!("{}/v1/appointments/{appointment_id}/cancel", self.ingest_url)), body)
            .await;
        self.wait_for_appointment_version(appointment_id, version).await;
    }

    async fn wait_for_appointment_version(&self, appointment_id: &str, version: i64) {
        let pool = &self.pool;
        wait_until(&format!("appointment {appointment_id} version {version} is applied"), DEADLINE, || async {
            let stored: Option<i64> = sqlx::query_scalar("SELECT version FROM appointments WHERE appointment_id = $1")
                .bind(appointment_id)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
            stored == Some(version)
        })
        .await;
    }

    // ---- PostgreSQL -----------------------------------------------------------------------

    /// Every job of an appointment, by generation, due time and kind.
    pub async fn jobs(&self, appointment_id: &str) -> Vec<Job> {
        sqlx::query_as(
            "SELECT job_id, appointment_id, generation, kind, state, reason, due_at, enqueued_at
             FROM jobs WHERE appointment_id = $1 ORDER BY generation, due_at, kind",
        )
        .bind(appointment_id)
        .fetch_all(&self.pool)
        .await
        .expect("read jobs")
    }

    /// The job of this kind in this generation of an appointment.
    pub async fn job(&self, appointment_id: &str, generation: i32, kind: &str) -> Job {
        self.jobs(appointment_id)
            .await
            .into_iter()
            .find(|j| j.generation == generation && j.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} job in generation {generation} of {appointment_id}"))
    }

    /// The sender's row for a job, if it took the job on.
    pub async fn send_row(&self, job_id: Uuid) -> Option<SendRow> {
        sqlx::query_as("SELECT job_id, state, reason, wamid, template_name FROM sends WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
            .expect("read sends")
    }

    /// Waits until the sender has settled a job (any state but `sending`) and returns the row.
    pub async fn wait_for_settled_send(&self, job_id: Uuid) -> SendRow {
        wait_for(&format!("the sender settles job {job_id}"), DEADLINE, || async {
            self.send_row(job_id).await.filter(|row| row.state != "sending")
        })
        .await
    }

    /// Runs a `SELECT count(*) …` with one text parameter.
    pub async fn count(&self, sql: &str, param: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(param)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Waits until the whole fleet is at rest: nothing due is left unclaimed or in a claim,
    /// every job handed to the sender has a final `sends` row, no webhook is pending in the
    /// sandbox, the inbox is processed, the outbox published and every STOP / START / HELP
    /// answer settled. Exact counts are asserted
    /// after this, so a late duplicate would be seen.
    pub async fn settle(&self) {
        let pool = &self.pool;
        let now = self.clock.now();
        wait_until("the fleet is at rest", DEADLINE, || async {
            let busy: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM jobs WHERE (state = 'planned' AND due_at <= $1) OR state = 'claimed')
                      + (SELECT count(*) FROM jobs j WHERE j.enqueued_at IS NOT NULL AND NOT EXISTS
                            (SELECT 1 FROM sends s WHERE s.job_id = j.job_id AND s.state <> 'sending'))
                      + (SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL)
                      + (SELECT count(*) FROM webhook_outbox WHERE published_at IS NULL)
                      + (SELECT count(*) FROM service_replies WHERE state IN ('pending', 'sending'))",
            )
            .bind(now)
            .fetch_one(pool)
            .await
            .unwrap_or(1);
            busy == 0 && self.sandbox.pending_webhooks() == 0
        })
        .await;
    }

    // ---- wa-sandbox -------------------------------------------------------------------------

    /// Messages the sandbox accepted for this recipient (E.164), oldest first.
    pub fn messages_to(&self, phone: &str) -> Vec<SandboxMessage> {
        let wa_id = Phone::parse(phone).expect("a valid test phone number").wa_id().to_owned();
        self.sandbox.messages().into_iter().filter(|m| m.wa_id == wa_id).collect()
    }

    /// Template messages (reminders, confirmations) the sandbox accepted for this recipient;
    /// free-form answers to STOP / START / HELP are left out.
    pub fn templates_to(&self, phone: &str) -> Vec<SandboxMessage> {
        self.messages_to(phone).into_iter().filter(|m| m.message_type == "template").collect()
    }

    /// Free-form text messages the sandbox accepted for this recipient.
    pub fn texts_to(&self, phone: &str) -> Vec<SandboxMessage> {
        self.messages_to(phone).into_iter().filter(|m| m.message_type == "text").collect()
    }

    /// Waits until the sandbox holds `n` messages for this recipient, then checks there are not
    /// more, and returns them.
    pub async fn wait_for_messages_to(&self, phone: &str, n: usize) -> Vec<SandboxMessage> {
        wait_until(&format!("{n} message(s) reach {phone}"), DEADLINE, || async { self.messages_to(phone).len() >= n })
            .await;
        let messages = self.messages_to(phone);
        assert_eq!(messages.len(), n, "more messages than expected for {phone}: {messages:#?}");
        messages
    }

    // ---- RabbitMQ -----------------------------------------------------------------------------

    /// Takes (and acks) every event waiting in `{prefix}.hospital.events`.
    pub async fn take_hospital_events(&self) -> Vec<Envelope> {
        let connection = lapin::Connection::connect(&self.bus.url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("open a channel");
        let queue = Topology::new(&self.bus.prefix).hospital_events();
        let mut events = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.clone().into(), BasicGetOptions::default()).await.expect("basic_get")
        {
            let envelope: Envelope = serde_json::from_slice(&message.delivery.data).expect("an envelope");
            message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            events.push(envelope);
        }
        let _ = connection.close(200, "bye".into()).await;
        events
    }

    /// Collects hospital events until there are `n`, then checks no more are waiting.
    pub async fn wait_for_hospital_events(&self, n: usize) -> Vec<Envelope> {
        let started = Instant::now();
        let mut events = Vec::new();
        while events.len() < n {
            assert!(started.elapsed() < DEADLINE, "timed out waiting for {n} hospital events; got {events:#?}");
            events.extend(self.take_hospital_events().await);
            tokio::time::sleep(POLL * 4).await;
        }
        events.extend(self.take_hospital_events().await);
        assert_eq!(events.len(), n, "more hospital events than expected: {events:#?}");
        events
    }
}

/// Polls `condition` until it holds; panics naming `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `probe` until it yields a value; panics naming `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A valid mobile number for test patient `n` (India, 98123 4xxxx).
pub fn phone(n: u32) -> String {
    format!("+9198123{:05}", 40_000 + n)
}
