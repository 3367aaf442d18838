//! Careline's front door: hospital systems report patients and appointments over a JSON API;
//! ingest authenticates them (per-source bearer tokens), validates and normalises what they
//! send, and answers `202 Accepted` only after RabbitMQ has confirmed the resulting event.
//! A 2xx therefore means the event can no longer be lost; anything else means nothing was
//! published and the client should fix the request (4xx) or retry (503).
//!
//! The same operations are served as FHIR R4 under `/fhir` ([`fhir`]) and as HL7 v2 SIU over
//! MLLP ([`mllp`]); `GET /openapi.json` describes the HTTP API ([`openapi`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod body;
pub mod fhir;
pub mod mllp;
pub mod openapi;
pub mod problem;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use careline_bus::{BusSettings, PublishError, Publisher};
use careline_domain::events::{Envelope, Event};
use careline_domain::facility::NetworkConfig;
use careline_domain::{Clock, SystemClock};
use careline_telemetry::{EnvError, Readiness, env_or};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::TokenVerifier;
use crate::problem::Problem;

/// How often readiness re-checks PostgreSQL and (re)connects the publisher.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// Everything ingest reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `INGEST_LISTEN_ADDR` (default `0.0.0.0:8080`): the public API.
    pub listen_addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR` (default `0.0.0.0:9080`): `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// `DATABASE_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/careline`): API tokens.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub database_max_connections: u32,
    /// `AMQP_URL`, `AMQP_PREFIX`, `AMQP_QUEUE_EXPIRES_MS` (see `careline_bus::BusSettings`).
    pub bus: BusSettings,
    /// `CARELINE_CONFIG` (default `careline.toml`): the facilities file; requests for a facility
    /// not in it are refused (422).
    pub config_path: PathBuf,
    /// `INGEST_MAX_BODY_BYTES` (default 65536): larger bodies get 413.
    pub max_body_bytes: usize,
    /// `INGEST_PUBLISH_TIMEOUT_MS` (default 10000): how long a request waits for the broker's
    /// confirm before answering 503.
    pub publish_timeout: Duration,
    /// `INGEST_TOKEN_CACHE_SECONDS` (default 10, at most 30, 0 disables): how long a token
    /// lookup is reused, hence how long a revoked token may keep working.
    pub token_cache_ttl: Duration,
    /// `MIGRATE_ON_START` (default true): apply database migrations when `run` starts.
    pub migrate_on_start: bool,
    /// `INGEST_MLLP_*`: the HL7 v2 listener, off unless `INGEST_MLLP_LISTEN_ADDR` is set.
    pub mllp: mllp::MllpSettings,
}

impl Settings {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self {
            listen_addr: env_or("INGEST_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            admin_addr: env_or("ADMIN_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9080)))?,
            database_url: env_or("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned())?,
            database_max_connections: env_or("DATABASE_MAX_CONNECTIONS", 10)?,
            bus: BusSettings::from_env()?,
            config_path: env_or("CARELINE_CONFIG", PathBuf::from("careline.toml"))?,
            max_body_bytes: env_or("INGEST_MAX_BODY_BYTES", 65_536)?,
            publish_timeout: Duration::from_millis(env_or("INGEST_PUBLISH_TIMEOUT_MS", 10_000)?),
            token_cache_ttl: Duration::from_secs(env_or("INGEST_TOKEN_CACHE_SECONDS", 10)?),
            migrate_on_start: env_or("MIGRATE_ON_START", true)?,
            mllp: mllp::MllpSettings::from_env()?,
        })
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub network: NetworkConfig,
    /// API tokens, and the consent log a FHIR `Consent` is appended to.
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub verifier: TokenVerifier,
    pub clock: Arc<dyn Clock>,
    pub max_body_bytes: usize,
    pub publish_timeout: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Publishes one event and waits for the broker's confirm; the event id on success.
    pub async fn publish(&self, event: Event) -> Result<Uuid, Problem> {
        self.publish_at(event, self.clock.now()).await
    }

    /// [`Shared::publish`] for an event that occurred at `occurred_at` (a FHIR resource's
    /// `meta.lastUpdated`): consumers that order by it (patient profiles) see the source's time.
    #[tracing::instrument(name = "ingest.publish_event", skip_all, fields(event = event.routing_key(), event_id))]
    pub async fn publish_at(&self, event: Event, occurred_at: chrono::DateTime<chrono::Utc>) -> Result<Uuid, Problem> {
        let envelope = Envelope::new(event, occurred_at);
        tracing::Span::current().record("event_id", tracing::field::display(envelope.message_id));
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.publish_timeout, self.publisher.publish(&envelope)).await;
        metrics::histogram!("careline_ingest_publish_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(())) => {
                tracing::info!("event published");
                Ok(envelope.message_id)
            }
            Ok(Err(e)) => {
                match &e {
                    PublishError::Unavailable(_) => tracing::warn!(error = %e, "publish failed"),
                    _ => tracing::error!(error = %e, "publish refused"),
                }
                Err(Problem::Unavailable("the message broker is unavailable; nothing was accepted, retry later".into()))
            }
            Err(_) => {
                tracing::warn!(timeout_ms = self.publish_timeout.as_millis() as u64, "publish timed out");
                Err(Problem::Unavailable(
                    "the message broker did not confirm in time; retry later (a retry is safe)".into(),
                ))
            }
        }
    }
}

/// A built ingest service: listeners bound, dependencies not yet required.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    router: Router,
    state: AppState,
    pool: PgPool,
    readiness: Readiness,
    migrate_on_start: bool,
    mllp: Option<mllp::MllpListener>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Binds both listeners and reads the facilities file; connects to nothing yet.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Install the metrics recorder now, so requests served before the first scrape count.
        careline_telemetry::metrics_handle();
        describe_metrics();
        let text = std::fs::read_to_string(&settings.config_path)
            .with_context(|| format!("reading CARELINE_CONFIG file {}", settings.config_path.display()))?;
        let network = NetworkConfig::from_toml(&text)
            .with_context(|| format!("parsing CARELINE_CONFIG file {}", settings.config_path.display()))?;
        let pool = careline_store::connect_lazy(&settings.database_url, settings.database_max_connections)
            .context("DATABASE_URL")?;
        let publisher = Arc::new(Publisher::new(settings.bus.clone(), "ingest"));
        let state = AppState(Arc::new(Shared {
            network,
            pool: pool.clone(),
            publisher,
            verifier: TokenVerifier::new(pool.clone(), clock.clone(), settings.token_cache_ttl),
            clock,
            max_body_bytes: settings.max_body_bytes,
            publish_timeout: settings.publish_timeout,
        }));
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("binding INGEST_LISTEN_ADDR {}", settings.listen_addr))?;
        let admin_listener = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding ADMIN_LISTEN_ADDR {}", settings.admin_addr))?;
        let mllp = mllp::MllpListener::bind(&settings.mllp, state.clone()).await?;
        Ok(Self {
            listener,
            admin_listener,
            router: router(state.clone(), settings.max_body_bytes),
            state,
            pool,
            readiness: Readiness::new(&["database", "broker"]),
            migrate_on_start: settings.migrate_on_start,
            mllp,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener has an address")
    }

    /// The HL7 MLLP listener's address, when `INGEST_MLLP_LISTEN_ADDR` is set.
    pub fn mllp_addr(&self) -> Option<SocketAddr> {
        self.mllp.as_ref().map(mllp::MllpListener::local_addr)
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` fires, then lets in-flight requests finish (each waits at most
    /// the publish timeout) and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.migrate_on_start {
            // Ingest can serve without its own migration having run only if another service ran
            // it; failing here would make start-up order matter, so keep going and let
            // readiness report the database.
            if let Err(e) = careline_store::migrate(&self.pool).await {
                tracing::warn!(error = %e, "migration at start failed; continuing");
            }
        }
        let watcher = tokio::spawn(watch_dependencies(
            self.pool.clone(),
            self.state.publisher.clone(),
            self.readiness.clone(),
            shutdown.clone(),
        ));
        let admin = tokio::spawn(careline_telemetry::serve_admin(
            self.admin_listener,
            self.readiness.clone(),
            shutdown.clone(),
        ));
        let mllp = self.mllp.map(|listener| tokio::spawn(listener.run(shutdown.clone())));
        tracing::info!(addr = %self.listener.local_addr()?, "ingest listening");
        let served =
            axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
        shutdown.cancel();
        let _ = watcher.await;
        if let Some(mllp) = mllp {
            mllp.await.context("MLLP listener panicked")?;
        }
        let admin = admin.await;
        served.context("public listener failed")?;
        admin.context("admin task panicked")?.context("admin listener failed")?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/patients/{patient_id}", put(api::put_patient))
        .route("/v1/appointments/{appointment_id}", put(api::put_appointment))
        .route("/v1/appointments/{appointment_id}/cancel", post(api::cancel_appointment))
        .route("/fhir", post(fhir::post_bundle))
        .route("/fhir/Appointment", post(fhir::post_appointment))
        .route("/fhir/Appointment/{id}", put(fhir::put_appointment))
        .route("/fhir/Patient", post(fhir::post_patient))
        .route("/fhir/Patient/{id}", put(fhir::put_patient))
        .route("/fhir/Consent", post(fhir::post_consent))
        .route("/fhir/Consent/{id}", put(fhir::put_consent))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(count_requests))
        .route_layer(middleware::from_fn(careline_telemetry::trace_context::trace_http_request))
        .with_state(state)
}

/// 404 as problem+json, or as an OperationOutcome under `/fhir`.
async fn not_found(uri: Uri) -> Response {
    if fhir::is_fhir_path(uri.path()) { fhir::not_found() } else { api::not_found().await.into_response() }
}

async fn method_not_allowed(uri: Uri) -> Response {
    if fhir::is_fhir_path(uri.path()) {
        fhir::method_not_allowed()
    } else {
        api::method_not_allowed().await.into_response()
    }
}

/// HELP text for ingest's metrics (the recorder must be installed first).
fn describe_metrics() {
    metrics::describe_counter!(
        "careline_ingest_requests_total",
        "HTTP requests to the ingest API, by route template and status code."
    );
    metrics::describe_histogram!(
        "careline_ingest_publish_seconds",
        metrics::Unit::Seconds,
        "Time from a request's event being ready to the broker's confirm (or the timeout)."
    );
    metrics::describe_counter!(
        "careline_ingest_mllp_connections_total",
        "HL7 MLLP connections, by outcome (accepted, refused by the allowlist)."
    );
    metrics::describe_counter!(
        "careline_ingest_hl7_messages_total",
        "HL7 v2 messages received over MLLP, by trigger event and outcome (the ACK code sent)."
    );
    careline_bus::describe_metrics();
}

/// `careline_ingest_requests_total{route,status}`; the route is the template, never the ids.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        "careline_ingest_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

/// Keeps readiness current and the publisher connected, so the first request after a broker
/// outage does not pay for the reconnection.
async fn watch_dependencies(
    pool: PgPool,
    publisher: Arc<Publisher>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    loop {
        readiness.set("database", careline_store::ping(&pool).await);
        let broker = tokio::time::timeout(READINESS_INTERVAL * 2, publisher.ensure_connected()).await;
        readiness.set("broker", matches!(broker, Ok(Ok(()))));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
    }
}

/// Token administration for the CLI.
pub mod tokens_cli {
    pub use crate::auth::{CreatedToken, TokenAdminError, create_token};
    pub use careline_store::tokens::{ApiToken, list, revoke};
}
