//! The scheduler's settings, from environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use careline_bus::BusSettings;
use careline_telemetry::{env_or, env_required};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/careline`).
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub db_max_connections: u32,
    /// `AMQP_URL`, `AMQP_PREFIX`.
    pub bus: BusSettings,
    /// `CARELINE_CONFIG`: the facilities file (required).
    pub config_path: PathBuf,
    /// `ADMIN_LISTEN_ADDR` (default `0.0.0.0:9082`): `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// `MIGRATE_ON_START` (default true).
    pub migrate_on_start: bool,
    /// `SCHEDULER_PREFETCH` (default 64): unacked events held at once.
    pub prefetch: u16,
    /// `SCHEDULER_CONCURRENCY` (default 16): events applied at once.
    pub concurrency: usize,
    /// `SCHEDULER_TICK_MS` (default 500): how often due jobs are looked for.
    pub tick_ms: u64,
    /// `SCHEDULER_BATCH` (default 500): jobs claimed per round.
    pub batch: i64,
    /// `SCHEDULER_LEASE_MS` (default 30000): how long a claim holds before another replica may
    /// take the job over.
    pub lease_ms: i64,
    /// `SCHEDULER_WORKER_ID` (default the host name and a random suffix): who holds a lease.
    pub worker_id: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, careline_telemetry::EnvError> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into());
        Ok(Self {
            database_url: env_or("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned())?,
            db_max_connections: env_or("DATABASE_MAX_CONNECTIONS", 10)?,
            bus: BusSettings::from_env()?,
            config_path: env_required("CARELINE_CONFIG")?,
            admin_addr: env_or("ADMIN_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9082)))?,
            migrate_on_start: env_or("MIGRATE_ON_START", true)?,
            prefetch: env_or("SCHEDULER_PREFETCH", 64)?,
            concurrency: env_or("SCHEDULER_CONCURRENCY", 16)?,
            tick_ms: env_or("SCHEDULER_TICK_MS", 500)?,
            batch: env_or("SCHEDULER_BATCH", 500)?,
            lease_ms: env_or("SCHEDULER_LEASE_MS", 30_000)?,
            worker_id: env_or(
                "SCHEDULER_WORKER_ID",
                format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            )?,
        })
    }
}
