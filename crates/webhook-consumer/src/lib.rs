//! The webhook-consumer: owns what comes back from Meta.
//!
//! A public listener takes Meta's webhooks (`GET /webhook` handshake, `POST /webhook` signed
//! events), verifies each signature over the raw bytes and stores the body before answering
//! 200. A processor then turns stored bodies into delivery statuses (which only move forward),
//! patient replies and keyword consent changes, and publishes `patient.replied` and
//! `consent.changed` through an outbox. See [`http`] and [`processor`] for the protocols.
#![forbid(unsafe_code)]

pub mod audit_trail;
pub mod http;
pub mod inbound;
pub mod processor;
pub mod reconcile;
pub mod service_replies;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use careline_bus::Publisher;
use careline_store::PgPool;
use careline_telemetry::Readiness;
use careline_whatsapp::client::WhatsAppClient;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use inbound::InboundContext;
pub use processor::Processor;
pub use service_replies::ServiceReplier;
pub use settings::{Secret, Settings};

/// The service name, used for logs, the broker connection and consent provenance.
pub const SERVICE: &str = "webhook-consumer";
/// How often readiness re-checks PostgreSQL and RabbitMQ.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);
/// How long to wait between failed start-up migrations.
const MIGRATE_RETRY: Duration = Duration::from_secs(2);

/// A built, not yet running, webhook-consumer.
pub struct Application {
    settings: Settings,
    public: TcpListener,
    admin: TcpListener,
    pool: PgPool,
    publisher: Arc<Publisher>,
    readiness: Readiness,
    inbox_wake: Arc<Notify>,
}

impl Application {
    /// Binds both listeners; connects to nothing yet (PostgreSQL and RabbitMQ may be down).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        careline_telemetry::metrics_handle();
        describe_metrics();
        let public = TcpListener::bind(settings.webhook_listen_addr)
            .await
            .with_context(|| format!("binding WEBHOOK_LISTEN_ADDR {}", settings.webhook_listen_addr))?;
        let admin = TcpListener::bind(settings.admin_listen_addr)
            .await
            .with_context(|| format!("binding ADMIN_LISTEN_ADDR {}", settings.admin_listen_addr))?;
        let pool = careline_store::connect_lazy(settings.database_url.expose(), settings.database_max_connections)
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        let publisher = Arc::new(Publisher::new(settings.bus.clone(), SERVICE));
        Ok(Self {
            settings,
            public,
            admin,
            pool,
            publisher,
            readiness: Readiness::new(&["database", "broker"]),
            inbox_wake: Arc::new(Notify::new()),
        })
    }

    /// Where Meta's webhooks are received.
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or(self.settings.webhook_listen_addr)
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.settings.admin_listen_addr)
    }

    /// The pool the application uses (tests inspect the database through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves and processes until `shutdown` fires: the listeners stop taking requests and
    /// finish those in flight, the processor finishes its row and publishes its outbox.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { settings, public, admin, pool, publisher, readiness, inbox_wake } = self;
        let mut tasks = JoinSet::new();

        let state = http::WebhookState {
            app_secret: settings.app_secret.clone(),
            verify_token: settings.verify_token.clone(),
            pool: pool.clone(),
            inbox_wake: inbox_wake.clone(),
        };
        let router = http::router(state, settings.max_body_bytes);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(public, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("public listener failed")
                .map(|()| "public listener")
        });

        let stop = shutdown.clone();
        let admin_readiness = readiness.clone();
        tasks.spawn(async move {
            careline_telemetry::serve_admin(admin, admin_readiness, stop)
                .await
                .context("admin listener failed")
                .map(|()| "admin listener")
        });

        tasks.spawn(watch_readiness(pool.clone(), publisher.clone(), readiness, shutdown.clone()));

        let inbound = InboundContext::new(settings.network.clone());
        let processor = Processor::new(pool.clone(), publisher, settings.batch_size).with_inbound(inbound);
        match &settings.whatsapp {
            Some(client_settings) => {
                let client = WhatsAppClient::new(client_settings.clone()).context("building the WhatsApp client")?;
                // Answers follow Meta's pair interval like the sender's messages, so they read
                // the same variable.
                let pair_interval: u64 = careline_telemetry::env_or("SENDER_PAIR_INTERVAL_MS", 6000)?;
                let replier = ServiceReplier::new(pool.clone(), client, settings.network.clone())
                    .with_pair_interval(Duration::from_millis(pair_interval.max(1)));
                let (poll, stop) = (settings.poll_interval, shutdown.clone());
                tasks.spawn(async move {
                    replier.run(poll, stop).await;
                    Ok("service replier")
                });
            }
            None => tracing::warn!(
                "WHATSAPP_ACCESS_TOKEN unset: STOP/START acknowledgements and HELP answers are queued, not sent"
            ),
        }
        let (migrate, poll_interval, stop) = (settings.migrate_on_start, settings.poll_interval, shutdown.clone());
        tasks.spawn(async move {
            if migrate && !migrate_until_done(&pool, &stop).await {
                return Ok("processor");
            }
            processor.run(inbox_wake, poll_interval, stop).await;
            Ok("processor")
        });

        tracing::info!("webhook-consumer running");
        let mut first_error = None;
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(task)) => tracing::info!(task, "task finished"),
                Ok(Err(error)) => {
                    tracing::error!(error = format!("{error:#}"), "task failed; shutting down");
                    shutdown.cancel();
                    first_error.get_or_insert(error);
                }
                Err(join_error) => {
                    tracing::error!(%join_error, "task panicked; shutting down");
                    shutdown.cancel();
                    first_error.get_or_insert(anyhow::anyhow!("task panicked: {join_error}"));
                }
            }
            if !shutdown.is_cancelled() {
                // A listener or the processor stopped on its own: stop the rest too.
                shutdown.cancel();
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Applies migrations, retrying while PostgreSQL is unreachable. `false` if stopped first.
async fn migrate_until_done(pool: &PgPool, shutdown: &CancellationToken) -> bool {
    loop {
        match careline_store::migrate(pool).await {
            Ok(()) => return true,
            Err(error) => tracing::warn!(%error, "migration failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(MIGRATE_RETRY) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

async fn watch_readiness(
    pool: PgPool,
    publisher: Arc<Publisher>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<&'static str> {
    loop {
        readiness.set("database", careline_store::ping(&pool).await);
        // A broker that swallows packets must not stall the probe loop.
        let broker = tokio::time::timeout(READINESS_INTERVAL * 2, publisher.ensure_connected()).await;
        readiness.set("broker", matches!(broker, Ok(Ok(()))));
        tokio::select! {
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
            _ = shutdown.cancelled() => return Ok("readiness"),
        }
    }
}

/// HELP text for the webhook-consumer's metrics (the recorder must be installed first).
fn describe_metrics() {
    metrics::describe_counter!(
        "careline_webhook_reconciled_total",
        "Status webhooks that changed a send: unknown outcome accepted, duplicate, retried, number paused, failed."
    );
    metrics::describe_counter!(
        "careline_webhook_duplicate_sends_total",
        "Second messages found for one job (only possible after a resend that followed an unknown outcome)."
    );
    metrics::describe_counter!(
        "careline_webhook_requests_total",
        "Requests to /webhook, by outcome (accepted, bad_signature, missing_signature, too_large, ...)."
    );
    metrics::describe_counter!(
        "careline_webhook_statuses_total",
        "Message statuses recorded from webhooks, by status (sent, delivered, read, failed, other)."
    );
    metrics::describe_counter!(
        "careline_webhook_inbound_total",
        "Inbound patient messages recorded, by action (confirm, reschedule, cancel, stop, start, help, other)."
    );
    metrics::describe_counter!(
        "careline_webhook_inbound_duplicates_total",
        "Inbound messages seen before (Meta repeats webhooks); no side effects."
    );
    metrics::describe_counter!(
        "careline_webhook_processing_failures_total",
        "Inbox rows whose processing failed and was scheduled for a retry."
    );
    metrics::describe_gauge!(
        "careline_webhook_inbox_lag_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest stored webhook not yet processed (0 when the inbox is empty)."
    );
}
