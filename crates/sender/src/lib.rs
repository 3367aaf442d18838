//! The sender: owns the WhatsApp Cloud API.
//!
//! It consumes `{p}.sender.jobs` (`job.due`), re-checks consent and job validity right before
//! sending, enforces the per-recipient pair rate and the per-business-number throughput
//! ([`limits`]), sends the facility's approved template, classifies Meta's answer (retry, back
//! off, fail for good, or outcome unknown) and never sends the same job twice ([`worker`]).
//! Every job ends in one `sends` row; every call in one `send_attempts` row.
#![forbid(unsafe_code)]

pub mod limits;
pub mod settings;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use careline_bus::{ConsumerSettings, Topology, run_consumer};
use careline_domain::clock::{Clock, SystemClock};
use careline_store::PgPool;
use careline_telemetry::Readiness;
use careline_whatsapp::client::{ClientSettings, DEFAULT_CONNECT_TIMEOUT, WhatsAppClient};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::{Settings, SettingsError};
pub use worker::{JobOutcome, RetryPolicy, SendJobError, Worker};

/// How often the database check of `/readyz` runs.
const DATABASE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often recipients whose pair limiter is back to fresh are forgotten.
const FORGET_IDLE_RECIPIENTS_EVERY: Duration = Duration::from_secs(60);
/// Pause between migration attempts while PostgreSQL is unreachable at start.
const MIGRATE_RETRY_EVERY: Duration = Duration::from_secs(2);

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
}

impl Application {
    /// Builds with the wall clock.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds with `clock` as "now" (tests move it). Needs neither PostgreSQL nor RabbitMQ
    /// to be up: the pool and the consumer connect when they can.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
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
        let retry = RetryPolicy {
            max_attempts: settings.max_attempts,
            min_delay: settings.retry_min_delay,
            max_delay: settings.retry_max_delay,
        };
        let worker =
            Arc::new(Worker::new(pool.clone(), settings.network.clone(), client, clock, settings.pair_interval, retry));
        let admin = TcpListener::bind(settings.admin_listen_addr)
            .await
            .map_err(|source| BuildError::Bind { addr: settings.admin_listen_addr, source })?;
        let admin_addr =
            admin.local_addr().map_err(|source| BuildError::Bind { addr: settings.admin_listen_addr, source })?;
        let readiness = Readiness::new(&["database", "broker"]);
        Ok(Self { settings, pool, readiness, admin, admin_addr, worker })
    }

    /// The bound admin address (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The job worker (tests drive single jobs through it).
    pub fn worker(&self) -> Arc<Worker> {
        Arc::clone(&self.worker)
    }

    /// Serves the admin endpoints, migrates (if `MIGRATE_ON_START`), and consumes jobs until
    /// `shutdown` fires; then stops taking jobs, lets jobs in progress finish, and returns.
    /// Every task lives inside this future, so dropping it (a crash, in tests) stops them all.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_admin(self.admin, self.readiness.clone(), shutdown.clone()));
        tasks.spawn(watch_database(self.pool.clone(), self.readiness.clone(), shutdown.clone()));
        let worker = Arc::clone(&self.worker);
        let housekeeping = shutdown.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(FORGET_IDLE_RECIPIENTS_EVERY);
            loop {
                tokio::select! {
                    _ = housekeeping.cancelled() => return,
                    _ = every.tick() => worker.limits().forget_idle_recipients(),
                }
            }
        });

        if self.settings.migrate_on_start && !migrate_until_done(&self.pool, &shutdown).await {
            return Ok(());
        }

        let consumer = ConsumerSettings {
            name: "sender".to_owned(),
            queue: Topology::new(&self.settings.bus.prefix).sender_jobs(),
            prefetch: self.settings.prefetch,
            concurrency: self.settings.concurrency,
        };
        let worker = Arc::clone(&self.worker);
        run_consumer(
            self.settings.bus.clone(),
            consumer,
            self.readiness.clone(),
            shutdown.clone(),
            move |envelope, _| {
                let worker = Arc::clone(&worker);
                async move { worker.handle(envelope).await }
            },
        )
        .await;
        tracing::info!("sender stopped consuming");
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
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
