//! `spawn_app()`: a fresh database, a fresh AMQP prefix, an in-process wa-sandbox and a sender
//! pointed at them. The rows the scheduler would write (patients, appointments, jobs, consent)
//! are written here with plain SQL as fixtures.

use std::sync::Arc;
use std::time::Duration;

use careline_bus::{BusSettings, Publisher};
use careline_domain::clock::ManualClock;
use careline_domain::events::{Envelope, Event, JobDue};
use careline_domain::facility::NetworkConfig;
use careline_store::PgPool;
use careline_store::testing::{database_url, fresh_database};
use careline_whatsapp::client::AccessToken;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sender::{Application, Settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wa_sandbox::{Sandbox, SandboxHandle, SandboxMessage, SandboxSettings};

pub const TOKEN: &str = "test-token";
/// Registered in the sandbox by default.
pub const NUMBER_ID: &str = "106540352242922";
pub const FACILITY: &str = "city";
pub const PAIR_INTERVAL: Duration = Duration::from_millis(500);

/// Templates named and shaped like the sandbox's built-ins (`appointment_booked`: 3 body
/// parameters, `appointment_reminder`: 5; both with Confirm / Reschedule / Cancel).
pub fn network_toml(throughput_mps: u32) -> String {
    format!(
        r#"
        default_language = "en"
        [templates.booking_confirmation]
        name = "appointment_booked"
        languages = {{ en = "en", hi = "hi" }}
        body = ["first_name", "date_time", "facility"]
        buttons = ["confirm", "reschedule", "cancel"]
        [templates.reminder]
        name = "appointment_reminder"
        languages = {{ en = "en_US" }}
        body = ["first_name", "date_time", "clinician", "facility", "address"]
        buttons = ["confirm", "reschedule", "cancel"]

        [[facility]]
        id = "{FACILITY}"
        name = "City General"
        time_zone = "Asia/Kolkata"
        address = "1 Ring Road"
        phone_number_id = "{NUMBER_ID}"
        throughput_mps = {throughput_mps}
        "#
    )
}

/// Knobs a test may turn before the app starts.
pub struct Options {
    pub http_timeout: Duration,
    pub throughput_mps: u32,
    pub concurrency: usize,
    pub sandbox: SandboxSettings,
    /// How long an unknown outcome waits for a status webhook (none come in these tests).
    pub unknown_window: Duration,
    pub unknown_max_resends: u32,
    pub paused_recheck: Duration,
    pub network_toml: Option<String>,
    /// `SENDER_HEADROOM_PERCENT` as a fraction.
    pub headroom: f64,
}

impl Default for Options {
    fn default() -> Self {
        let mut sandbox = SandboxSettings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            access_token: TOKEN.to_owned(),
            ..SandboxSettings::default()
        };
        // A little under the sender's interval: Meta's pair limiter is unpublished, so the
        // sender is configured a notch stricter than the platform, which absorbs the jitter
        // between the limiter releasing a call and the request reaching the API.
        sandbox.pair_interval = PAIR_INTERVAL - Duration::from_millis(50);
        Self {
            http_timeout: Duration::from_secs(5),
            throughput_mps: 80,
            concurrency: 8,
            sandbox,
            unknown_window: Duration::from_secs(600),
            unknown_max_resends: 1,
            paused_recheck: Duration::from_secs(1),
            network_toml: None,
            headroom: sender::limits::HEADROOM,
        }
    }
}

pub struct TestApp {
    pub pool: PgPool,
    pub settings: Settings,
    pub sandbox: SandboxHandle,
    pub publisher: Publisher,
    pub clock: ManualClock,
    pub shutdown: CancellationToken,
    pub running: Option<JoinHandle<anyhow::Result<()>>>,
    sandbox_shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.sandbox_shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let (pool, url) = fresh_database(&database_url()).await;
    let sandbox = Sandbox::build(options.sandbox).await.expect("sandbox");
    let base_url = sandbox.base_url();
    let handle = sandbox.handle();
    let sandbox_shutdown = CancellationToken::new();
    tokio::spawn(sandbox.run_until_stopped(sandbox_shutdown.clone()));

    let bus = BusSettings::for_test();
    let settings = Settings {
        database_url: url,
        database_max_connections: 8,
        migrate_on_start: true,
        bus: bus.clone(),
        admin_listen_addr: "127.0.0.1:0".parse().unwrap(),
        network: Arc::new(
            NetworkConfig::from_toml(
                &options.network_toml.clone().unwrap_or_else(|| network_toml(options.throughput_mps)),
            )
            .expect("test network"),
        ),
        prefetch: 16,
        concurrency: options.concurrency,
        pair_interval: PAIR_INTERVAL,
        headroom: options.headroom,
        max_attempts: 5,
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(500),
        whatsapp_base_url: base_url,
        whatsapp_api_version: "v23.0".to_owned(),
        whatsapp_access_token: AccessToken::new(TOKEN),
        http_timeout: options.http_timeout,
        unknown_window: options.unknown_window,
        unknown_max_resends: options.unknown_max_resends,
        paused_recheck: options.paused_recheck,
        tier_recheck: Duration::from_secs(1),
    };
    let clock = ManualClock::new(Utc::now());
    let publisher = Publisher::new(bus, "sender-test");
    publisher.ensure_connected().await.expect("broker is up");
    let mut app = TestApp {
        pool,
        settings,
        sandbox: handle,
        publisher,
        clock,
        shutdown: CancellationToken::new(),
        running: None,
        sandbox_shutdown,
    };
    app.start().await;
    app
}

impl TestApp {
    /// Builds and runs a (new) sender with this app's settings.
    pub async fn start(&mut self) {
        self.shutdown = CancellationToken::new();
        let app = Application::build_with_clock(self.settings.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("build sender");
        self.running = Some(tokio::spawn(app.run_until_stopped(self.shutdown.clone())));
    }

    /// Runs one more sender replica with this app's settings (same database, queues and
    /// sandbox); it stops when the returned token fires or the test ends.
    pub async fn spawn_replica(&self) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
        let stop = self.shutdown.child_token();
        let app = Application::build_with_clock(self.settings.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("build sender replica");
        let running = tokio::spawn(app.run_until_stopped(stop.clone()));
        (stop, running)
    }

    /// Kills the running sender without any graceful step, like a crashed process.
    pub async fn crash(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
            let _ = running.await;
        }
    }

    /// Stops the running sender as SIGTERM would.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("sender task").expect("sender run");
        }
    }

    pub async fn publish(&self, job: &JobDue) {
        self.publisher.publish(&Envelope::new(Event::JobDue(job.clone()), Utc::now())).await.expect("publish");
    }

    pub async fn publish_all(&self, jobs: &[JobDue]) {
        let envelopes: Vec<Envelope> =
            jobs.iter().map(|j| Envelope::new(Event::JobDue(j.clone()), Utc::now())).collect();
        self.publisher.publish_all(&envelopes).await.expect("publish");
    }

    /// The job's `sends` state and reason once it is final (panics after 15 s).
    pub async fn settled(&self, job_id: Uuid) -> SendRow {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(row) = self.send_row(job_id).await
                && row.state != "sending"
            {
                return row;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {job_id} not settled in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn send_row(&self, job_id: Uuid) -> Option<SendRow> {
        sqlx::query_as::<_, (String, Option<String>, Option<String>, i32, Option<i32>)>(
            "SELECT state, reason, wamid, attempts, error_code FROM sends WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .map(|(state, reason, wamid, attempts, error_code)| SendRow {
            state,
            reason,
            wamid,
            attempts,
            error_code,
        })
    }

    /// `(attempt, outcome, error_code)` of every recorded call, in order.
    pub async fn attempts(&self, job_id: Uuid) -> Vec<(i32, String, Option<i32>)> {
        sqlx::query_as("SELECT attempt, outcome, error_code FROM send_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    pub fn clock_now(&self) -> DateTime<Utc> {
        self.clock.now_utc()
    }

    /// Messages the sandbox accepted for this job.
    pub fn messages_for(&self, job_id: Uuid) -> Vec<SandboxMessage> {
        let data = job_id.to_string();
        self.sandbox.messages().into_iter().filter(|m| m.biz_opaque_callback_data.as_deref() == Some(&data)).collect()
    }

    /// Writes what the scheduler would have written for one due job.
    pub async fn seed(&self, f: &Fixture) -> JobDue {
        let patient_id = format!("P-{}", Uuid::new_v4().simple());
        let appointment_id = format!("A-{}", Uuid::new_v4().simple());
        let job_id = Uuid::now_v7();
        let now = self.clock.now_utc();
        let starts_at = f.starts_at.unwrap_or(now + ChronoDuration::days(3));
        if f.patient_exists {
            sqlx::query(
                "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
                 VALUES ($1, $2, $3, $4, $5, now())",
            )
            .bind(&patient_id)
            .bind(FACILITY)
            .bind("Asha")
            .bind(&f.phone)
            .bind("en")
            .execute(&self.pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, generation, status, starts_at, clinician)
             VALUES ($1, $2, $3, 1, $4, $5, $6, 'Dr Rao')",
        )
        .bind(&appointment_id)
        .bind(FACILITY)
        .bind(&patient_id)
        .bind(f.appointment_generation)
        .bind(f.appointment_status)
        .bind(starts_at)
        .execute(&self.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(job_id)
        .bind(&appointment_id)
        .bind(f.job_generation)
        .bind(f.kind)
        .bind(now - f.due_ago)
        .bind(f.job_state)
        .execute(&self.pool)
        .await
        .unwrap();
        for (i, (state, days_ago)) in f.consent.iter().enumerate() {
            sqlx::query(
                "INSERT INTO consent_log (patient_id, phone_e164, state, recorded_at, source, recorded_by, dedupe_key)
                 VALUES ($1, $2, $3, $4, 'booking_form', 'test', $5)",
            )
            .bind(&patient_id)
            .bind(&f.phone)
            .bind(*state)
            .bind(now - ChronoDuration::days(*days_ago))
            .bind(format!("{job_id}-{i}"))
            .execute(&self.pool)
            .await
            .unwrap();
        }
        JobDue {
            job_id,
            appointment_id,
            generation: f.job_generation,
            kind: f.kind.to_owned(),
            due_at: now - f.due_ago,
        }
    }
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        careline_domain::clock::Clock::now(self)
    }
}

#[derive(Debug, Clone)]
pub struct SendRow {
    pub state: String,
    pub reason: Option<String>,
    pub wamid: Option<String>,
    pub attempts: i32,
    pub error_code: Option<i32>,
}

/// One patient, appointment and job; by default a consented patient with a booked
/// appointment in three days and a planned booking confirmation.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub phone: String,
    pub patient_exists: bool,
    /// Consent entries `(state, days ago)`, oldest first.
    pub consent: Vec<(&'static str, i64)>,
    pub kind: &'static str,
    pub job_state: &'static str,
    pub job_generation: i32,
    pub appointment_generation: i32,
    pub appointment_status: &'static str,
    pub starts_at: Option<DateTime<Utc>>,
    /// How long ago the job fell due.
    pub due_ago: ChronoDuration,
}

impl Default for Fixture {
    fn default() -> Self {
        Self {
            phone: "+919812345678".to_owned(),
            patient_exists: true,
            consent: vec![("opted_in", 30)],
            kind: "booking_confirmation",
            job_state: "enqueued",
            job_generation: 1,
            appointment_generation: 1,
            appointment_status: "booked",
            starts_at: None,
            due_ago: ChronoDuration::zero(),
        }
    }
}

/// A distinct valid Indian mobile number per `n`.
pub fn phone(n: u32) -> String {
    format!("+9198{n:08}")
}

/// Waits until `check` holds (panics after `within`).
pub async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
