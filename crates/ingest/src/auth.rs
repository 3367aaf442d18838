//! API tokens: how they are made, stored and checked.
//!
//! A token is `clt_` followed by 64 hex digits (256 random bits). Only its SHA-256 digest is
//! stored, and a request's token is looked up by digest, so neither the table nor a timing
//! difference reveals a usable token. Several tokens can be active for one source, which is
//! how rotation works without downtime.
//!
//! Lookups are cached per digest for a short time (`INGEST_TOKEN_CACHE_SECONDS`, at most
//! [`MAX_CACHE_TTL`]): a revocation takes effect within that time on every replica. Unknown
//! tokens are never cached, so a newly created token works at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use careline_domain::Clock;
use careline_store::tokens::{self, ApiToken, NewApiToken};
use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::Problem;

/// What every token starts with, so a leaked one is easy to recognise (secret scanners).
pub const TOKEN_PREFIX: &str = "clt_";

/// The longest a revoked token may keep working on a replica that cached it.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30);

/// Beyond this many cached tokens the cache is emptied rather than grown (a bound, not an LRU:
/// real deployments have a handful of tokens).
const MAX_CACHED_TOKENS: usize = 10_000;

/// A fresh random token, shown once to the operator and never stored.
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The SHA-256 digest under which a token is stored and looked up.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    /// The token's source, reported on every event as `reported_by`.
    pub source: String,
    facilities: Vec<String>,
}

impl Caller {
    /// Whether the token may write for this facility.
    pub fn covers(&self, facility_id: &str) -> bool {
        self.facilities.iter().any(|f| f == "*" || f == facility_id)
    }
}

impl From<ApiToken> for Caller {
    fn from(token: ApiToken) -> Self {
        Self { token_id: token.token_id, source: token.source, facilities: token.facilities }
    }
}

/// Checks bearer tokens against `api_tokens`, with a short positive cache.
pub struct TokenVerifier {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, ApiToken)>>,
}

impl TokenVerifier {
    /// `ttl` is capped at [`MAX_CACHE_TTL`]; zero disables the cache.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self { pool, clock, ttl: ttl.min(MAX_CACHE_TTL), cache: Mutex::new(HashMap::new()) }
    }

    /// The caller for an `Authorization` header value, or why not.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Caller, Problem> {
        let token = bearer_token(authorization)?;
        let digest = hash_token(token);
        let now = self.clock.now();
        if let Some(cached) = self.cached(&digest)
            && cached.is_active(now)
        {
            return Ok(cached.into());
        }
        let found = tokens::find_active(&self.pool, &digest, now).await.map_err(|e| {
            tracing::warn!(error = %e, "token lookup failed");
            Problem::Unavailable("the token store is unavailable; retry later".to_owned())
        })?;
        let Some(token) = found else {
            return Err(Problem::Unauthorized("the API token is unknown, revoked or expired".to_owned()));
        };
        if !self.ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(digest, (Instant::now(), token.clone()));
        }
        Ok(token.into())
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<ApiToken> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(digest) {
            Some((at, token)) if at.elapsed() < self.ttl => Some(token.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(authorization: Option<&str>) -> Result<&str, Problem> {
    let missing = || Problem::Unauthorized("send the API token as 'Authorization: Bearer <token>'".to_owned());
    let value = authorization.ok_or_else(missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

impl FromRequestParts<crate::AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &crate::AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        state.verifier.verify(header).await
    }
}

/// A token just created: the secret (shown once) and its row.
#[derive(Debug)]
pub struct CreatedToken {
    pub token: String,
    pub token_id: Uuid,
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenAdminError {
    #[error("source must be non-empty")]
    EmptySource,
    #[error("facilities must list at least one facility id, or '*'")]
    NoFacilities,
    #[error("expires-in-days must be at least 1")]
    BadExpiry,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Creates and stores a token for `source`, covering `facilities` (`*` for all).
pub async fn create_token(
    pool: &PgPool,
    source: &str,
    facilities: &[String],
    expires_in_days: Option<u32>,
) -> Result<CreatedToken, TokenAdminError> {
    let source = source.trim();
    if source.is_empty() {
        return Err(TokenAdminError::EmptySource);
    }
    let facilities: Vec<String> = facilities.iter().map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect();
    if facilities.is_empty() {
        return Err(TokenAdminError::NoFacilities);
    }
    let expires_at = match expires_in_days {
        Some(0) => return Err(TokenAdminError::BadExpiry),
        Some(days) => Some(Utc::now() + chrono::Duration::days(i64::from(days))),
        None => None,
    };
    let token = generate_token();
    let token_id = Uuid::now_v7();
    let digest = hash_token(&token);
    tokens::insert(pool, &NewApiToken { token_id, source, token_sha256: &digest, facilities: &facilities, expires_at })
        .await?;
    tracing::info!(%token_id, source, "api token created");
    Ok(CreatedToken { token, token_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_the_sha256_of_the_token_text() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(hex::encode(hash_token("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(hash_token("clt_a"), hash_token("clt_b"));
    }

    #[test]
    fn generated_tokens_are_prefixed_random_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn bearer_header_is_parsed_case_insensitively_and_rejected_when_malformed() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer_token(None).is_err());
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(Some("abc")).is_err());
    }

    #[test]
    fn a_wildcard_token_covers_every_facility() {
        let caller = |f: &[&str]| Caller {
            token_id: Uuid::nil(),
            source: "his".into(),
            facilities: f.iter().map(|s| s.to_string()).collect(),
        };
        assert!(caller(&["*"]).covers("anything"));
        assert!(caller(&["a", "b"]).covers("b"));
        assert!(!caller(&["a", "b"]).covers("c"));
    }
}
