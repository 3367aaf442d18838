//! wa-sandbox: a WhatsApp Cloud API simulator, so Careline runs, demos and is tested with no
//! Meta account.
//!
//! It answers `POST /{version}/{phone_number_id}/messages` like Meta — same validation, error
//! codes and JSON shapes, same throughput (130429) and pair-rate (131056) limits — and then
//! plays the message's life back as signed status webhooks (sent → delivered → read, or
//! failed), optionally duplicated, reordered and batched as Meta does. Patients can be made
//! to tap quick-reply buttons or type STOP, by hand or by a seeded policy, and faults
//! (500s before or after acceptance, slow answers, forced error codes) can be injected to
//! exercise every branch of Careline's sender.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wa_sandbox::SandboxError> {
//! use wa_sandbox::{Sandbox, SandboxSettings};
//! let settings = SandboxSettings {
//!     listen_addr: "127.0.0.1:0".parse().unwrap(),
//!     ..SandboxSettings::default()
//! };
//! let sandbox = Sandbox::build(settings).await?;
//! let handle = sandbox.handle(); // counters, faults, patient replies
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(sandbox.run_until_stopped(shutdown.clone()));
//! # let _ = handle; shutdown.cancel(); Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod engine;
pub mod faults;
pub mod graph_error;
mod http;
pub mod limits;
pub mod registry;
pub mod replies;
pub mod settings;
pub mod validate;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use engine::{Injected, MessageButton, NumberStats, SandboxMessage, Stats, Violations, WebhookStats};
pub use faults::{FaultSettings, FaultState, FaultUpdate, ForcedError, RecipientFault};
pub use registry::{PhoneNumberSpec, Registry, RegistryFile, TemplateSpec, TemplateStatus};
pub use replies::{AutoReplyPolicy, ReplyError, ReplyReceipt, ReplyRequest};
pub use settings::{SandboxSettings, SettingsError};

use engine::Engine;

/// Why the sandbox could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Settings out of range.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The template/number file.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A template or number refused by the registry.
    #[error("invalid registry entry: {0}")]
    RegistryEntry(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A sandbox bound to its address, ready to run.
pub struct Sandbox {
    listener: TcpListener,
    addr: SocketAddr,
    engine: Arc<Engine>,
    http: reqwest::Client,
}

impl Sandbox {
    /// Loads the registry, binds the listener (port 0 picks a free port) and builds the
    /// webhook client. Nothing runs until [`Sandbox::run_until_stopped`].
    pub async fn build(settings: SandboxSettings) -> Result<Self, SandboxError> {
        settings.validate()?;
        let mut registry = Registry::default();
        for number in &settings.phone_numbers {
            registry.register_number(number.clone()).map_err(SandboxError::RegistryEntry)?;
        }
        for template in &settings.templates {
            registry.register_template(template.clone()).map_err(SandboxError::RegistryEntry)?;
        }
        if let Some(path) = &settings.templates_file {
            registry.register_file(RegistryFile::load(path)?).map_err(SandboxError::RegistryEntry)?;
        }
        let http = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .connect_timeout(settings.delivery.timeout.min(Duration::from_secs(5)))
            .user_agent("facebookexternalua")
            .build()
            .map_err(SandboxError::HttpClient)?;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .map_err(|source| SandboxError::Bind { addr: settings.listen_addr, source })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind { addr: settings.listen_addr, source })?;
        Ok(Self { listener, addr, engine: Arc::new(Engine::new(settings, registry)), http })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`: the `base_url` for Careline's WhatsApp client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle for tests and tools: counters, messages, faults, replies.
    pub fn handle(&self) -> SandboxHandle {
        SandboxHandle { engine: Arc::clone(&self.engine) }
    }

    /// Serves the API and delivers webhooks until `shutdown` is cancelled; then stops
    /// accepting, lets requests in progress finish (slow answers are cut short) and abandons
    /// undelivered webhooks.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), SandboxError> {
        let engine = self.engine;
        let stopping = engine.stopping.clone();
        let link = {
            let stopping = stopping.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stopping.cancel();
            })
        };
        let dispatcher = tokio::spawn(webhooks::run_dispatcher(Arc::clone(&engine), self.http, stopping.clone()));
        tracing::info!(addr = %self.addr, webhooks = engine.settings.webhook_url.is_some(), "wa-sandbox listening");
        let served = axum::serve(self.listener, http::router(Arc::clone(&engine)))
            .with_graceful_shutdown(stopping.clone().cancelled_owned())
            .await;
        stopping.cancel();
        if let Err(error) = dispatcher.await {
            tracing::error!(%error, "webhook dispatcher ended abnormally");
        }
        link.abort();
        let pending = engine.pending_events();
        if pending > 0 {
            tracing::info!(pending, "undelivered webhook events abandoned at shutdown");
        }
        served.map_err(SandboxError::Serve)
    }
}

/// Control of a running (or built) sandbox from the same process.
#[derive(Clone)]
pub struct SandboxHandle {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle").finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// Acceptances per `biz_opaque_callback_data` (`GET /_sandbox/callbacks`).
    pub fn callbacks(&self) -> std::collections::BTreeMap<String, u32> {
        self.engine.callbacks()
    }

    /// Accepted messages, oldest first.
    pub fn messages(&self) -> Vec<SandboxMessage> {
        self.engine.messages()
    }

    /// One accepted message.
    pub fn message(&self, wamid: &str) -> Option<SandboxMessage> {
        self.engine.message(wamid)
    }

    /// Clears messages, counters, limits, windows, queued webhooks, runtime faults and
    /// registrations made since start.
    pub fn reset(&self) {
        self.engine.reset();
    }

    /// The faults in force.
    pub fn faults(&self) -> FaultState {
        self.engine.faults()
    }

    /// Changes the faults (same semantics as `POST /_sandbox/faults`).
    pub fn update_faults(&self, update: FaultUpdate) -> Result<FaultState, String> {
        self.engine.update_faults(update)
    }

    /// Answers the next `count` sends (whoever they are to) with Meta error `code`.
    pub fn force_next_error(&self, code: i64, count: u32) {
        let update = FaultUpdate {
            force_next: Some(ForcedError {
                code,
                http_status: None,
                count: Some(count),
                asynchronous: false,
                details: None,
            }),
            ..FaultUpdate::default()
        };
        // Only out-of-range probabilities or statuses can be refused; none are set here.
        let _ = self.engine.update_faults(update);
    }

    /// Fails sends to `to` with `error` (synchronously, or in a `failed` webhook when
    /// `error.asynchronous`).
    pub fn force_recipient_error(&self, to: &str, error: ForcedError) -> Result<(), String> {
        self.engine
            .update_faults(FaultUpdate {
                force_recipient: Some(RecipientFault { to: to.to_owned(), error }),
                ..FaultUpdate::default()
            })
            .map(|_| ())
    }

    /// Turns every fault off.
    pub fn clear_faults(&self) {
        let _ = self.engine.update_faults(FaultUpdate { clear: true, ..FaultUpdate::default() });
    }

    /// Simulates a patient's reply (same semantics as `POST /_sandbox/replies`).
    pub fn reply(&self, request: ReplyRequest) -> Result<ReplyReceipt, ReplyError> {
        self.engine.reply(request)
    }

    /// The recipient of `wamid` taps its button `index`.
    pub fn tap_button(&self, wamid: &str, index: usize) -> Result<ReplyReceipt, ReplyError> {
        self.reply(ReplyRequest { wamid: Some(wamid.to_owned()), button_index: Some(index), ..ReplyRequest::default() })
    }

    /// `from` types `text` to the business number that last messaged them.
    pub fn type_text(&self, from: &str, text: &str) -> Result<ReplyReceipt, ReplyError> {
        self.reply(ReplyRequest { from: Some(from.to_owned()), text: Some(text.to_owned()), ..ReplyRequest::default() })
    }

    /// Adds or replaces a template's translations.
    pub fn register_template(&self, spec: TemplateSpec) -> Result<(), String> {
        self.engine.register_template(spec)
    }

    /// Adds or replaces a business number.
    pub fn register_phone_number(&self, spec: PhoneNumberSpec) -> Result<(), String> {
        self.engine.register_number(spec)
    }

    /// Webhook events queued or in flight.
    pub fn pending_webhooks(&self) -> u64 {
        self.engine.pending_events()
    }

    /// Waits until no webhook event is queued or in flight; `false` on timeout.
    pub async fn wait_for_webhooks(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending_webhooks() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}
