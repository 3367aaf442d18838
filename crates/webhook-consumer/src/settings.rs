//! The webhook-consumer's configuration, from environment variables (unset or empty means the
//! default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use careline_bus::BusSettings;
use careline_domain::facility::NetworkConfig;
use careline_telemetry::{EnvError, env_opt, env_or, env_required};
use careline_whatsapp::client::{AccessToken, ClientSettings, DEFAULT_API_VERSION};

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Everything the webhook-consumer needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WHATSAPP_APP_SECRET` (required, non-empty): the Meta app secret, HMAC key of
    /// `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// `WHATSAPP_VERIFY_TOKEN` (required): the token Meta echoes in the `GET /webhook`
    /// subscription handshake.
    pub verify_token: Secret,
    /// `WEBHOOK_LISTEN_ADDR` (default `0.0.0.0:8081`): the public listener, serving only
    /// `GET /webhook` and `POST /webhook`.
    pub webhook_listen_addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR` (default `0.0.0.0:9081`): `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen_addr: SocketAddr,
    /// `WEBHOOK_MAX_BODY_BYTES` (default 1048576): larger POST bodies are answered 413.
    pub max_body_bytes: usize,
    /// `DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/careline`).
    pub database_url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub database_max_connections: u32,
    /// `AMQP_URL`, `AMQP_PREFIX`, `AMQP_QUEUE_EXPIRES_MS` (see [`BusSettings::from_env`]).
    pub bus: BusSettings,
    /// `MIGRATE_ON_START` (default `true`): apply migrations before processing.
    pub migrate_on_start: bool,
    /// `WEBHOOK_BATCH_SIZE` (default 100): inbox rows processed per round before the outbox is
    /// flushed.
    pub batch_size: usize,
    /// `WEBHOOK_POLL_INTERVAL_MS` (default 1000): how often the processor looks at the inbox
    /// when no POST woke it (other replicas' rows, retries, the outbox).
    pub poll_interval: Duration,
    /// The network file named by `CARELINE_CONFIG` (optional): extra STOP / START / HELP words,
    /// the facility of each business number and its contact details (the answer to HELP).
    /// Without it the built-in keywords apply and HELP names no contact details.
    pub network: Option<Arc<NetworkConfig>>,
    /// How to send STOP / START acknowledgements and HELP answers: `WHATSAPP_ACCESS_TOKEN`
    /// (unset: answers are queued in `service_replies` but not sent, and a warning is logged),
    /// `WHATSAPP_API_BASE_URL` (default `https://graph.facebook.com`), `WHATSAPP_API_VERSION`
    /// (default `v23.0`).
    pub whatsapp: Option<ClientSettings>,
}

/// The default public listener.
pub const DEFAULT_WEBHOOK_LISTEN_ADDR: &str = "0.0.0.0:8081";
/// The default admin listener.
pub const DEFAULT_ADMIN_LISTEN_ADDR: &str = "0.0.0.0:9081";
/// The default body limit: 1 MiB, far above any webhook Meta sends.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

impl Settings {
    /// Reads the settings; errors name the variable.
    pub fn from_env() -> Result<Self, EnvError> {
        let default_addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|_| unreachable!("valid default address"));
        Ok(Self {
            app_secret: env_required("WHATSAPP_APP_SECRET")?,
            verify_token: env_required("WHATSAPP_VERIFY_TOKEN")?,
            webhook_listen_addr: env_or("WEBHOOK_LISTEN_ADDR", default_addr(DEFAULT_WEBHOOK_LISTEN_ADDR))?,
            admin_listen_addr: env_or("ADMIN_LISTEN_ADDR", default_addr(DEFAULT_ADMIN_LISTEN_ADDR))?,
            max_body_bytes: env_or("WEBHOOK_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            database_url: env_or("DATABASE_URL", Secret::new("postgres://postgres:postgres@127.0.0.1:5432/careline"))?,
            database_max_connections: env_or("DATABASE_MAX_CONNECTIONS", 10)?,
            bus: BusSettings::from_env()?,
            migrate_on_start: env_or("MIGRATE_ON_START", true)?,
            batch_size: env_or("WEBHOOK_BATCH_SIZE", 100usize)?.max(1),
            poll_interval: Duration::from_millis(env_or("WEBHOOK_POLL_INTERVAL_MS", 1000u64)?.max(10)),
            network: read_network()?,
            whatsapp: match env_opt::<String>("WHATSAPP_ACCESS_TOKEN")? {
                None => None,
                Some(token) => Some(ClientSettings::new(
                    env_or("WHATSAPP_API_BASE_URL", "https://graph.facebook.com".to_owned())?,
                    env_or("WHATSAPP_API_VERSION", DEFAULT_API_VERSION.to_owned())?,
                    AccessToken::new(token),
                )),
            },
        })
    }
}

/// The network file named by `CARELINE_CONFIG`, when set.
fn read_network() -> Result<Option<Arc<NetworkConfig>>, EnvError> {
    let Some(path) = env_opt::<String>("CARELINE_CONFIG")? else {
        return Ok(None);
    };
    let invalid = |problem: String| EnvError::Invalid { name: "CARELINE_CONFIG", problem };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
    let network = NetworkConfig::from_toml(&text).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(Arc::new(network)))
}
