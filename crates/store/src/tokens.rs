//! Owned by ingest: `api_tokens`.
//!
//! A token is stored only as its SHA-256 digest, so a leaked table cannot be replayed against
//! the API. Several tokens may be active for one source at a time: rotation means creating the
//! new token, moving the client over, then revoking the old one. A token is active while it is
//! neither revoked nor past its `expires_at`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A token row, without anything that could be replayed (the digest is not returned).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub token_id: Uuid,
    /// Who holds it (a hospital system); reported as `reported_by` on the events it sends.
    pub source: String,
    /// Facility ids the token may write for; `*` covers every facility.
    pub facilities: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether the token may be used at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewApiToken<'a> {
    pub token_id: Uuid,
    pub source: &'a str,
    pub token_sha256: &'a [u8],
    pub facilities: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a new token.
pub async fn insert(db: impl PgExecutor<'_>, token: &NewApiToken<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (token_id, source, token_sha256, facilities, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.token_id)
    .bind(token.source)
    .bind(token.token_sha256)
    .bind(token.facilities)
    .bind(token.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The token with this digest if it is active at `now` (not revoked, not expired).
pub async fn find_active(
    db: impl PgExecutor<'_>,
    token_sha256: &[u8],
    now: DateTime<Utc>,
) -> sqlx::Result<Option<ApiToken>> {
    sqlx::query_as(
        "SELECT token_id, source, facilities, created_at, expires_at, revoked_at
         FROM api_tokens
         WHERE token_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(token_sha256)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Every token, newest first (revoked and expired ones included, for the audit).
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ApiToken>> {
    sqlx::query_as(
        "SELECT token_id, source, facilities, created_at, expires_at, revoked_at
         FROM api_tokens
         ORDER BY created_at DESC, token_id",
    )
    .fetch_all(db)
    .await
}

/// Revokes a token. Returns `false` if no such token exists or it was already revoked
/// (the first revocation time is kept).
pub async fn revoke(db: impl PgExecutor<'_>, token_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL")
        .bind(token_id)
        .bind(now)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}
