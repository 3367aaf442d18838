//! The sender's typed configuration, from environment variables (12-factor) and the network
//! file named by `CARELINE_CONFIG`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use careline_bus::BusSettings;
use careline_domain::facility::NetworkConfig;
use careline_telemetry::{EnvError, env_or, env_required};
use careline_whatsapp::client::{AccessToken, DEFAULT_API_VERSION, DEFAULT_BASE_URL};

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("CARELINE_CONFIG: cannot read {path}: {source}")]
    ConfigRead { path: String, source: std::io::Error },
    #[error("CARELINE_CONFIG: {0}")]
    Config(#[from] careline_domain::facility::ConfigError),
    #[error("environment variable {name} has an invalid value: {problem}")]
    Invalid { name: &'static str, problem: &'static str },
}

/// Everything the sender is told. `Debug` leaves out the database URL (it carries a password).
#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/careline`).
    pub database_url: String,
    /// `SENDER_DB_MAX_CONNECTIONS` (default 16): the bookkeeping is batched, so a few
    /// connections serve hundreds of jobs in flight.
    pub database_max_connections: u32,
    /// `MIGRATE_ON_START` (default `true`): apply migrations before consuming.
    pub migrate_on_start: bool,
    /// `AMQP_URL`, `AMQP_PREFIX`, `AMQP_QUEUE_EXPIRES_MS` (see `careline_bus::BusSettings`).
    pub bus: BusSettings,
    /// `ADMIN_LISTEN_ADDR` (default `0.0.0.0:9083`): `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen_addr: SocketAddr,
    /// The network file named by `CARELINE_CONFIG` (required): facilities, business numbers,
    /// throughput ceilings, templates.
    pub network: Arc<NetworkConfig>,
    /// `SENDER_PREFETCH` (default 256): unacked jobs the broker may push to one sender, per lane.
    pub prefetch: u16,
    /// `SENDER_CONCURRENCY` (default 256): jobs worked on at once, per lane. Most of them wait
    /// for a send slot; the more are in flight, the larger the bookkeeping batches.
    pub concurrency: usize,
    /// `SENDER_PAIR_INTERVAL_MS` (default 6000): at most one message per recipient per interval.
    pub pair_interval: Duration,
    /// `SENDER_HEADROOM_PERCENT` (default 1.5): how far inside both limits the sender stays.
    pub headroom: f64,
    /// `SENDER_MAX_ATTEMPTS` (default 5): WhatsApp calls per job, first one included.
    pub max_attempts: u32,
    /// `SENDER_RETRY_MIN_DELAY_MS` (default 500): first backoff of a retryable error (doubles,
    /// with jitter).
    pub retry_min_delay: Duration,
    /// `SENDER_RETRY_MAX_DELAY_MS` (default 30000): backoff ceiling.
    pub retry_max_delay: Duration,
    /// `WHATSAPP_API_BASE_URL` (default `https://graph.facebook.com`).
    pub whatsapp_base_url: String,
    /// `WHATSAPP_API_VERSION` (default `v23.0`).
    pub whatsapp_api_version: String,
    /// `WHATSAPP_ACCESS_TOKEN` (required): system-user token; never logged.
    pub whatsapp_access_token: AccessToken,
    /// `SENDER_HTTP_TIMEOUT_MS` (default 10000): past it a call's outcome is unknown.
    pub http_timeout: Duration,
    /// `SENDER_UNKNOWN_WINDOW_MS` (default 600000, 10 min): how long a job whose call's outcome
    /// is unknown waits for a status webhook carrying its id before it is sent again.
    pub unknown_window: Duration,
    /// `SENDER_UNKNOWN_MAX_RESENDS` (default 1): resends after unknown outcomes, in all; past
    /// them the job fails with the reason `outcome_unknown`. 0 never resends.
    pub unknown_max_resends: u32,
    /// `SENDER_PAUSED_RECHECK_MS` (default 600000): how long jobs of a paused number wait in
    /// the delay queue before they look again.
    pub paused_recheck: Duration,
    /// `SENDER_TIER_RECHECK_MS` (default 3600000): how long a job past its portfolio's
    /// messaging tier waits before it looks again.
    pub tier_recheck: Duration,
}

impl Settings {
    /// Reads the environment and the network file.
    pub fn from_env() -> Result<Self, SettingsError> {
        let config_path: String = env_required("CARELINE_CONFIG")?;
        let text = std::fs::read_to_string(&config_path)
            .map_err(|source| SettingsError::ConfigRead { path: config_path.clone(), source })?;
        let network = NetworkConfig::from_toml(&text)?;
        let concurrency: usize = env_or("SENDER_CONCURRENCY", 256)?;
        if concurrency == 0 {
            return Err(SettingsError::Invalid { name: "SENDER_CONCURRENCY", problem: "must be at least 1" });
        }
        let max_attempts: u32 = env_or("SENDER_MAX_ATTEMPTS", 5)?;
        if max_attempts == 0 {
            return Err(SettingsError::Invalid { name: "SENDER_MAX_ATTEMPTS", problem: "must be at least 1" });
        }
        let pair_interval_ms: u64 = env_or("SENDER_PAIR_INTERVAL_MS", 6000)?;
        if pair_interval_ms == 0 {
            return Err(SettingsError::Invalid { name: "SENDER_PAIR_INTERVAL_MS", problem: "must be at least 1" });
        }
        let headroom_percent: f64 = env_or("SENDER_HEADROOM_PERCENT", crate::limits::HEADROOM * 100.0)?;
        if !(0.0..50.0).contains(&headroom_percent) {
            return Err(SettingsError::Invalid { name: "SENDER_HEADROOM_PERCENT", problem: "must be from 0 to 50" });
        }
        let http_timeout_ms: u64 = env_or("SENDER_HTTP_TIMEOUT_MS", 10_000)?;
        if http_timeout_ms == 0 {
            return Err(SettingsError::Invalid { name: "SENDER_HTTP_TIMEOUT_MS", problem: "must be at least 1" });
        }
        let token: String = env_required("WHATSAPP_ACCESS_TOKEN")?;
        Ok(Self {
            database_url: env_or("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned())?,
            database_max_connections: env_or("SENDER_DB_MAX_CONNECTIONS", 16)?,
            migrate_on_start: env_or("MIGRATE_ON_START", true)?,
            bus: BusSettings::from_env()?,
            admin_listen_addr: env_or("ADMIN_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9083)))?,
            network: Arc::new(network),
            prefetch: env_or("SENDER_PREFETCH", 256)?,
            concurrency,
            pair_interval: Duration::from_millis(pair_interval_ms),
            headroom: headroom_percent / 100.0,
            max_attempts,
            retry_min_delay: Duration::from_millis(env_or("SENDER_RETRY_MIN_DELAY_MS", 500)?),
            retry_max_delay: Duration::from_millis(env_or("SENDER_RETRY_MAX_DELAY_MS", 30_000)?),
            whatsapp_base_url: env_or("WHATSAPP_API_BASE_URL", DEFAULT_BASE_URL.to_owned())?,
            whatsapp_api_version: env_or("WHATSAPP_API_VERSION", DEFAULT_API_VERSION.to_owned())?,
            whatsapp_access_token: AccessToken::new(token),
            http_timeout: Duration::from_millis(http_timeout_ms),
            unknown_window: Duration::from_millis(env_or("SENDER_UNKNOWN_WINDOW_MS", 600_000)?),
            unknown_max_resends: env_or("SENDER_UNKNOWN_MAX_RESENDS", 1)?,
            paused_recheck: Duration::from_millis(env_or("SENDER_PAUSED_RECHECK_MS", 600_000)?),
            tier_recheck: Duration::from_millis(env_or("SENDER_TIER_RECHECK_MS", 3_600_000)?),
        })
    }

    /// The worker's retry, resend and wait policy.
    pub fn policy(&self) -> crate::worker::Policy {
        crate::worker::Policy {
            max_attempts: self.max_attempts,
            retry_min_delay: self.retry_min_delay,
            retry_max_delay: self.retry_max_delay,
            unknown_window: self.unknown_window,
            unknown_max_resends: self.unknown_max_resends,
            paused_recheck: self.paused_recheck,
            tier_recheck: self.tier_recheck,
            pair_interval: self.pair_interval.mul_f64(1.0 + self.headroom),
            // Covers the slot hand-out lead, the call and its recording.
            lease: self.http_timeout + LEASE_MARGIN,
        }
    }
}

/// What a claim's lease covers beyond the HTTP timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bus", &self.bus)
            .field("admin_listen_addr", &self.admin_listen_addr)
            .field("facilities", &self.network.facilities.len())
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("pair_interval", &self.pair_interval)
            .field("max_attempts", &self.max_attempts)
            .field("whatsapp_base_url", &self.whatsapp_base_url)
            .field("whatsapp_api_version", &self.whatsapp_api_version)
            .field("http_timeout", &self.http_timeout)
            .field("unknown_window", &self.unknown_window)
            .field("unknown_max_resends", &self.unknown_max_resends)
            .finish_non_exhaustive()
    }
}
