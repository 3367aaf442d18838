//! `careline`, the operator's command line: what a platform engineer needs at 3 a.m. that the
//! services do not do by themselves. Each command group is a module with its clap subcommand
//! and the functions behind it (tests call those directly):
//!
//! - [`deadletters`]: look at the dead-letter queue without losing anything, and redrive.
//! - [`jobs`]: a job's whole timeline from PostgreSQL, and re-sending a job whose send failed.
//!
//! It reads the same environment as the services: `DATABASE_URL`, `AMQP_URL`, `AMQP_PREFIX`.
//! Nothing it prints carries PHI: ids, types, states, codes and timestamps only.
#![forbid(unsafe_code)]

pub mod deadletters;
pub mod jobs;

use careline_bus::BusSettings;
use careline_telemetry::{EnvError, env_or};

/// Where the fleet's state lives, from the services' environment variables.
#[derive(Debug, Clone)]
pub struct Context {
    /// `DATABASE_URL` (default the local `careline` database).
    pub database_url: String,
    /// `AMQP_URL`, `AMQP_PREFIX`.
    pub bus: BusSettings,
}

impl Context {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            database_url: env_or("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned())?,
            bus: BusSettings::from_env()?,
        })
    }

    /// A small pool: one command, a few statements.
    pub fn pool(&self) -> anyhow::Result<careline_store::PgPool> {
        use anyhow::Context as _;
        careline_store::connect_lazy(&self.database_url, 2).context("DATABASE_URL is not a valid PostgreSQL URL")
    }
}
