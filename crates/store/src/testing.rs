//! Test support: a fresh, migrated database per test, so tests run in parallel.

use sqlx::{Connection, PgConnection, PgPool};

/// Creates `careline_test_<random>` next to the database named in `base_url`, migrates it and
/// returns a pool and its URL. Databases are left behind for inspection; `make
/// clean-test-dbs` drops them.
pub async fn fresh_database(base_url: &str) -> (PgPool, String) {
    let name = format!("careline_test_{}", uuid::Uuid::new_v4().simple());
    let (server, _) = base_url.rsplit_once('/').expect("DATABASE_URL has a database name");
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.expect("connect to PostgreSQL");
    // The name is generated here from a UUID, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = format!("{server}/{name}");
    let pool = crate::connect_lazy(&url, 10).expect("pool");
    crate::migrate(&pool).await.expect("migrate test database");
    (pool, url)
}

/// `DATABASE_URL`, or the local default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned())
}
