//! The sender: owns the WhatsApp Cloud API.
//!
//! It consumes `{p}.sender.jobs.urgent` and `{p}.sender.jobs` (`job.due`), re-checks consent
//! and job validity right before sending, holds each business number's throughput ceiling and
//! each recipient's pair interval across every replica ([`limits`]), sends the facility's
//! approved template, applies Meta's error taxonomy, and never sends the same job twice except
//! through the documented unknown-outcome resend ([`worker`]). Its bookkeeping is batched
//! ([`batch`]). Every job ends in one `sends` row; every call in one `send_attempts` row.
#![forbid(unsafe_code)]

pub mod batch;
pub mod limits;
pub mod settings;
pub mod tier;
pub mod worker;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use careline_bus::{ConsumerSettings, Publisher, Topology, run_consumer};
use careline_domain::clock::{Clock, SystemClock};
use careline_domain::events::{Envelope, Event, JobDue};
use careline_store::PgPool;
use careline_telemetry::Readiness;
use careline_whatsapp::client::{ClientSettings, DEFAULT_CONNECT_TIMEOUT, WhatsAppClient};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::{Settings, SettingsError};
pub use worker::{JobOutcome, Policy, SendJobError, Worker};

/// How often the database check of `/readyz` runs.
const DATABASE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often recipients whose pair interval is over are forgotten, and old limit rows purged.
const FORGET_IDLE_RECIPIENTS_EVERY: Duration = Duration::from_secs(60);
/// How often paused numbers and the messaging tier's count are read again.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Unknown outcomes looked at per sweep.
const SWEEP_BATCH: i64 = 500;
/// Pause between migration attempts while PostgreSQL is unreachable at start.
const MIGRATE_RETRY_EVERY: Duration = Duration::from_secs(2);

/// HELP text for the sender's metrics (the recorder must be installed first).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    careline_bus::describe_metrics();
    describe_counter!(
        "careline_sender_messages_total",
        "Jobs settled, by kind, facility and outcome (accepted, failed, suppressed, unknown)."
    );
    describe_counter!(
        "careline_sender_meta_errors_total",
        "Error answers from the WhatsApp Cloud API, by Meta error code."
    );
    describe_counter!(
        "careline_sender_retries_total",
        "Calls to be retried later through a delay queue, by error class."
    );
    describe_counter!(
        "careline_sender_deferred_total",
        "Jobs put in a delay queue instead of being sent now, by reason."
    );
    describe_counter!(
        "careline_sender_outcome_unknown_total",
        "Calls whose outcome is unknown (timeout, reset, 5xx, interrupted)."
    );
    describe_counter!(
        "careline_sender_resends_total",
        "Jobs sent again after an unknown outcome's wait for a status webhook ended."
    );
    describe_counter!(
        "careline_sender_redeliveries_settled_total",
        "Deliveries of jobs already settled (acknowledged, nothing sent)."
    );
    describe_counter!(
        "careline_sender_late_claims_total",
        "Claims committed too late for their slot, moved to the next slot."
    );
    describe_counter!("careline_sender_number_sends_total", "Send slots used, by business number.");
    describe_counter!(
        "careline_sender_number_slots_unused_total",
        "Send slots leased but not used (no job waiting in time), by business number."
    );
    describe_gauge!(
        "careline_sender_number_limit_mps",
        "Configured throughput ceiling, by business number (messages per second)."
    );
    describe_gauge!(
        "careline_sender_number_paused",
        "1 while a business number is paused after an error every send would get."
    );
    describe_gauge!(
        "careline_sender_tier_recipients",
        "Unique recipients messaged in the last 24 h, by business portfolio."
    );
    describe_gauge!(
        "careline_sender_template_paused",
        "1 after Meta refused a template translation as paused or disabled (132015, 132016), 0 once it accepts it again."
    );
    describe_gauge!(
        "careline_sender_tier_limit",
        "Messaging tier limit (unique recipients per 24 h), by business portfolio."
    );
    describe_histogram!(
        "careline_sender_due_to_sent_seconds",
        Unit::Seconds,
        "Time from a job's due time to Meta's acceptance."
    );
    describe_histogram!(
        "careline_sender_limiter_wait_seconds",
        Unit::Seconds,
        "Time a job waited for its send slot, by lane."
    );
    describe_counter!(
        "careline_sender_batches_total",
        "Bookkeeping statements run, by statement (load, settle, claim, record)."
    );
    describe_counter!(
        "careline_sender_batched_jobs_total",
        "Jobs in bookkeeping statements, by statement (÷ batches = batch size)."
    );
}

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error(transparent)]
    HttpClient(#[from] careline_whatsapp::client::ClientBuildError),
    #[error("cannot listen on ADMIN_LISTEN_ADDR {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built sender, bound to its admin address, not running yet.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    readiness: Readiness,
    admin: TcpListener,
    admin_addr: SocketAddr,
    worker: Arc<Worker>,
    publisher: Arc<Publisher>,
    /// Stops the number pacers; fired when the application stops or its run is dropped.
    internal: CancellationToken,
}

impl Application {
    /// Builds with the wall clock.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds with `clock` as "now" (tests move it). Needs neither PostgreSQL nor RabbitMQ
    /// to be up: the pool and the consumers connect when they can.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        careline_telemetry::metrics_handle();
        describe_metrics();
        let pool = careline_store::connect_lazy(&settings.database_url, settings.database_max_connections)
            .map_err(BuildError::DatabaseUrl)?;
        let client = WhatsAppClient::new(ClientSettings {
            base_url: settings.whatsapp_base_url.clone(),
            api_version: settings.whatsapp_api_version.clone(),
            access_token: settings.whatsapp_access_token.clone(),
            timeout: settings.http_timeout,
            // Shorter than the overall timeout so "could not connect" (safe to retry) stays
            // distinguishable from "sent, no answer" (unknown).
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(settings.http_timeout / 2),
        })?;
        let policy = settings.policy();
        let publisher = Arc::new(Publisher::new(settings.bus.clone(), "sender"));
        let internal = CancellationToken::new();
        let pacers = limits::NumberPacers::start(&settings.network, settings.headroom, pool.clone(), internal.clone());
        let worker = Arc::new(Worker::new(
            pool.clone(),
            settings.network.clone(),
            client,
            clock,
            policy,
            Arc::clone(&publisher),
            pacers,
        ));
        let admin = TcpListener::bind(settings.admin_listen_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: settings.admin_listen_addr, source })?;
        let admin_addr =
            admin.local_addr().map_err(|source| BuildError::Bind { addr: settings.admin_listen_addr, source })?;
        let readiness = Readiness::new(&["database", "broker"]);
        Ok(Self { settings, pool, readiness, admin, admin_addr, worker, publisher, internal })
    }

    /// The bound admin address (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The job worker (tests drive single jobs through it).
    pub fn worker(&self) -> Arc<Worker> {
        Arc::clone(&self.worker)
    }

    /// Serves the admin endpoints, migrates (if `MIGRATE_ON_START`), and consumes both lanes
    /// until `shutdown` fires; then stops taking jobs, hands back jobs still waiting for a slot,
    /// lets calls in progress finish and be recorded, and returns. Every task lives inside this
    /// future or stops with it, so dropping it (a crash, in tests) stops them all.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _stop_pacers_on_drop = self.internal.clone().drop_guard();
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_admin(self.admin, self.readiness.clone(), shutdown.clone()));
        tasks.spawn(watch_database(self.pool.clone(), self.readiness.clone(), shutdown.clone()));

        if self.settings.migrate_on_start && !migrate_until_done(&self.pool, &shutdown).await {
            return Ok(());
        }
        tasks.spawn(housekeeping(Arc::clone(&self.worker), self.pool.clone(), shutdown.clone()));
        tasks.spawn(sweep_unknown_outcomes(
            Arc::clone(&self.worker),
            self.pool.clone(),
            Arc::clone(&self.publisher),
            shutdown.clone(),
        ));
        // Stop the pacers with the consumers: a job still waiting for a slot is handed back.
        let pacers_stop = self.internal.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            stop.cancelled().await;
            pacers_stop.cancel();
        });

        let topology = Topology::new(&self.settings.bus.prefix);
        let lanes = [("sender-urgent", topology.sender_jobs_urgent()), ("sender", topology.sender_jobs())];
        let mut consumers = JoinSet::new();
        for (name, queue) in lanes {
            let consumer = ConsumerSettings {
                name: name.to_owned(),
                queue,
                prefetch: self.settings.prefetch,
                concurrency: self.settings.concurrency,
            };
            let worker = Arc::clone(&self.worker);
            consumers.spawn(run_consumer(
                self.settings.bus.clone(),
                consumer,
                self.readiness.clone(),
                shutdown.clone(),
                move |envelope, _| {
                    let worker = Arc::clone(&worker);
                    async move { worker.handle(envelope).await }
                },
            ));
        }
        while consumers.join_next().await.is_some() {
            // Either lane stopping (shutdown) stops the other.
            shutdown.cancel();
        }
        tracing::info!("sender stopped consuming");
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Forgets idle recipients, purges old limit rows, and re-reads paused numbers and the tier.
async fn housekeeping(worker: Arc<Worker>, pool: PgPool, shutdown: CancellationToken) {
    let mut forget = tokio::time::interval(FORGET_IDLE_RECIPIENTS_EVERY);
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = forget.tick() => {
                worker.guard().forget_idle();
                if let Err(e) = careline_store::sends::forget_old_limits(&pool, worker.policy().pair_interval).await {
                    tracing::warn!(error = %e, "cannot purge old limit rows");
                }
            }
            _ = refresh.tick() => refresh_shared_state(&worker, &pool).await,
        }
    }
}

async fn refresh_shared_state(worker: &Worker, pool: &PgPool) {
    match careline_store::sends::paused_numbers(pool).await {
        Ok(paused) => {
            let numbers: HashSet<String> = paused.into_iter().map(|(number, ..)| number).collect();
            for number in worker.paused_numbers_configured() {
                let value = if numbers.contains(&number) { 1.0 } else { 0.0 };
                metrics::gauge!("careline_sender_number_paused", "phone_number_id" => number).set(value);
            }
            worker.paused().replace(numbers);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read paused numbers"),
    }
    match careline_store::sends::tier_usage(pool).await {
        Ok(usage) => worker.tier().refresh(&usage),
        Err(e) => tracing::warn!(error = %e, "cannot read the messaging tier's use"),
    }
}

/// Unknown outcomes whose wait for a status webhook is over go back to the sender as `job.due`
/// (the worker decides: resend, or fail once the resends are used up). Every replica sweeps;
/// a job published twice is claimed once.
async fn sweep_unknown_outcomes(
    worker: Arc<Worker>,
    pool: PgPool,
    publisher: Arc<Publisher>,
    shutdown: CancellationToken,
) {
    let policy = worker.policy();
    let every = (policy.unknown_window / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = match careline_store::sends::unknown_outcomes_due(&pool, policy.unknown_window, SWEEP_BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read unknown outcomes");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        let now = chrono::Utc::now();
        let envelopes: Vec<Envelope> = due
            .into_iter()
            .map(|(job_id, appointment_id, generation, kind, due_at, _resends)| {
                Envelope::new(Event::JobDue(JobDue { job_id, appointment_id, generation, kind, due_at }), now)
            })
            .collect();
        match publisher.publish_all(&envelopes).await {
            Ok(()) => tracing::info!(jobs = envelopes.len(), "unknown outcomes past their window handed to the sender"),
            Err(e) => tracing::warn!(error = %e, "cannot hand unknown outcomes back; next sweep retries"),
        }
    }
}

async fn serve_admin(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) {
    if let Err(e) = careline_telemetry::serve_admin(listener, readiness, shutdown).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn watch_database(pool: PgPool, readiness: Readiness, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(DATABASE_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => readiness.set("database", careline_store::ping(&pool).await),
        }
    }
}

/// Applies migrations, retrying while PostgreSQL is unreachable; `false` if shut down first.
async fn migrate_until_done(pool: &PgPool, shutdown: &CancellationToken) -> bool {
    loop {
        match careline_store::migrate(pool).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "migrations not applied yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(MIGRATE_RETRY_EVERY) => {}
        }
    }
}
