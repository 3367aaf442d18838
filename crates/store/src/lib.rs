//! Careline's PostgreSQL store: the connection pool, the embedded migrations, and the queries
//! of each table's single writer (see the README's "Who writes what").
//!
//! Functions take an executor (`&PgPool`, `&mut PgConnection` or a transaction) so a service
//! composes one transaction out of several calls.
#![forbid(unsafe_code)]

pub mod appointments;
pub mod audit;
pub mod consent;
pub mod jobs;
pub mod patients;
pub mod privacy;
pub mod sends;
pub mod service_replies;
pub mod testing;
pub mod tokens;
pub mod webhooks;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
pub use sqlx::{PgPool, Postgres, Transaction};

/// Every migration in `migrations/`, compiled into each binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool lazily: the service starts even if PostgreSQL is down and connects when it
/// comes back (each query waits up to `acquire_timeout` for a connection).
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name("careline")))
}

/// Applies pending migrations (idempotent; concurrent runs are serialised by sqlx's lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A cheap round trip, for readiness.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Whether an error is worth retrying (connection trouble) rather than a bug or bad data.
pub fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_))
        || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"))
}
