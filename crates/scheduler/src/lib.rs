//! The scheduler owns time: it persists what hospitals report (patients, appointments, consent
//! statements), plans each appointment's messages, and hands them to the sender when they fall
//! due.
//!
//! * [`planner`] applies events from `{prefix}.scheduler.events` in one transaction each.
//! * [`dispatcher`] claims due jobs with a lease and publishes them with confirms.
#![forbid(unsafe_code)]

pub mod dispatcher;
pub mod planner;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use careline_bus::{ConsumerSettings, Publisher};
use careline_domain::Clock;
use careline_domain::facility::NetworkConfig;
use careline_store::PgPool;
use careline_telemetry::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use dispatcher::Dispatcher;
pub use planner::Planner;
pub use settings::Settings;

/// A built scheduler: listeners bound, nothing running yet.
pub struct Application {
    settings: Settings,
    admin: TcpListener,
    readiness: Readiness,
    planner: Planner,
    dispatcher: Dispatcher,
    pool: PgPool,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(careline_domain::SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Install the metrics recorder now, so work done before the first scrape counts.
        careline_telemetry::metrics_handle();
        describe_metrics();
        let text = std::fs::read_to_string(&settings.config_path)
            .with_context(|| format!("reading CARELINE_CONFIG {}", settings.config_path.display()))?;
        let network = Arc::new(NetworkConfig::from_toml(&text).context("CARELINE_CONFIG")?);
        let pool = careline_store::connect_lazy(&settings.database_url, settings.db_max_connections)?;
        let publisher = Arc::new(Publisher::new(settings.bus.clone(), "scheduler"));
        let admin = TcpListener::bind(settings.admin_addr).await.context("binding ADMIN_LISTEN_ADDR")?;
        let planner = Planner::new(pool.clone(), network, clock.clone());
        let dispatcher = Dispatcher::new(pool.clone(), publisher, clock, &settings);
        Ok(Self { settings, admin, readiness: Readiness::new(&["database", "broker"]), planner, dispatcher, pool })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }

    /// The planner, for tests that drive it one event at a time.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The dispatcher, for tests that drive it one step at a time.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Runs the event consumer, the dispatch loop and the admin listener until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { settings, admin, readiness, planner, dispatcher, pool } = self;
        if settings.migrate_on_start {
            migrate_with_retry(&pool, &shutdown).await?;
        }
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch_database(pool.clone(), readiness.clone(), shutdown.clone()));
        let consumer = ConsumerSettings {
            name: "scheduler".into(),
            queue: careline_bus::Topology::new(&settings.bus.prefix).scheduler_events(),
            prefetch: settings.prefetch,
            concurrency: settings.concurrency,
        };
        let planner = Arc::new(planner);
        tasks.spawn(careline_bus::run_consumer(settings.bus.clone(), consumer, readiness.clone(), shutdown.clone(), {
            move |envelope, _redelivered| {
                let planner = planner.clone();
                async move { planner.handle(envelope).await }
            }
        }));
        tasks.spawn(dispatcher.run(shutdown.clone()));
        let admin_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = careline_telemetry::serve_admin(admin, readiness, admin_shutdown).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        while tasks.join_next().await.is_some() {
            // Any task ending early means the others should stop too.
            shutdown.cancel();
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }
}

/// Applies migrations, waiting for PostgreSQL if it is not up yet.
pub async fn migrate_with_retry(pool: &PgPool, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match careline_store::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e)) if careline_store::is_transient(&e) => {
                tracing::warn!(error = %e, "database not reachable for migrations; retrying");
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped before the database was reachable"),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn watch_database(pool: PgPool, readiness: Readiness, shutdown: CancellationToken) {
    loop {
        readiness.set("database", careline_store::ping(&pool).await);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// HELP text for the scheduler's metrics (the recorder must be installed first).
fn describe_metrics() {
    metrics::describe_counter!(
        "careline_scheduler_patients_total",
        "Patient reports applied, by outcome (applied, stale)."
    );
    metrics::describe_counter!(
        "careline_scheduler_consent_recorded_total",
        "Consent log entries written from hospital reports, by state."
    );
    metrics::describe_counter!(
        "careline_scheduler_appointments_total",
        "Appointment events applied, by outcome (created, replanned, cancelled, updated, stale)."
    );
    metrics::describe_counter!(
        "careline_scheduler_jobs_planned_total",
        "Message jobs planned, by kind and state (planned, or skipped with a reason)."
    );
    metrics::describe_counter!(
        "careline_scheduler_jobs_dispatched_total",
        "Due jobs published to the sender as job.due."
    );
    metrics::describe_counter!(
        "careline_scheduler_dispatch_failures_total",
        "Dispatch rounds that failed (database or broker); their claims are released and retried."
    );
    metrics::describe_counter!(
        "careline_scheduler_replies_total",
        "Patient replies applied to appointments, by response."
    );
}
