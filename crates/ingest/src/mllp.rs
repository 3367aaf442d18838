//! HL7 v2 SIU over MLLP: the interface-engine door into Careline.
//!
//! Off unless `INGEST_MLLP_LISTEN_ADDR` is set. Each TCP (or TLS) connection carries any
//! number of MLLP frames; each frame is answered with one acknowledgement, in order, on the
//! same connection, which stays open whatever the answer was:
//!
//! 1. the frame is parsed and its MSH checked (an SIU message, a supported trigger, HL7 2.x,
//!    the expected processing id) — otherwise `AR`;
//! 2. the facility (AIL-3, else MSH-4) must allow the peer's address when `INGEST_MLLP_ALLOW`
//!    is set — otherwise `AR`;
//! 3. the SIU content is read ([`careline_hl7::siu`]) and checked by the very rules the JSON
//!    API applies ([`crate::api::validate_patient`], [`crate::api::validate_appointment`]),
//!    every problem reported at once as ERR segments naming the HL7 field — otherwise `AE`;
//! 4. the events (the patient when a mobile number was found, then the appointment) are
//!    published with the API's confirmed publisher; only when RabbitMQ has confirmed every
//!    one of them is `AA` sent. No confirm in time: `AE` with ERR-3 `207`, and nothing should
//!    be assumed, so the engine re-sends — which is harmless, as the appointment's version
//!    (MSH-7) makes a replay stale.
//!
//! Enhanced acknowledgement mode (MSH-15/16 valued) answers `CA`/`CE`/`CR` instead, as
//! [`careline_hl7::ack`] explains. A frame larger than `INGEST_MLLP_MAX_MESSAGE_BYTES` is
//! answered `AR` (control id echoed when its MSH could be read) and its bytes are discarded.
//!
//! Connections are bounded (`INGEST_MLLP_MAX_CONNECTIONS`: further clients wait in the
//! kernel's accept backlog), idle ones are closed after `INGEST_MLLP_IDLE_TIMEOUT_SECONDS`, and
//! a peer address that no facility allows is disconnected at once. On shutdown the listener
//! stops accepting; each connection finishes the message it is handling (publish, ACK) and
//! closes. Logs carry the control id, trigger, facility and appointment id, never names or
//! phone numbers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use careline_domain::events::{AppointmentUpserted, Event, PatientUpserted};
use careline_hl7::ack::{Ack, AckCode, ErrorCode, Issue};
use careline_hl7::message::{Location, Message};
use careline_hl7::mllp::{self, Decoder, FrameError};
use careline_hl7::siu::{self, SiuReport, Trigger};
use careline_telemetry::{EnvError, env_opt, env_or};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::AppState;
use crate::api::{AppointmentBody, PatientBody, validate_appointment, validate_patient};
use crate::problem::FieldError;

/// How many bytes are read from a socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A TLS handshake must complete within this (or the idle timeout, if shorter).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the accept loop pauses after an accept error (out of file descriptors, …).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The MLLP listener's settings (`INGEST_MLLP_*`).
#[derive(Debug, Clone)]
pub struct MllpSettings {
    /// `INGEST_MLLP_LISTEN_ADDR` (default unset: no MLLP listener), e.g. `0.0.0.0:2575`.
    pub listen_addr: Option<SocketAddr>,
    /// `INGEST_MLLP_MAX_MESSAGE_BYTES` (default 1048576): a larger message is answered `AR`.
    pub max_message_bytes: usize,
    /// `INGEST_MLLP_IDLE_TIMEOUT_SECONDS` (default 300): a connection silent this long is closed.
    pub idle_timeout: Duration,
    /// `INGEST_MLLP_MAX_CONNECTIONS` (default 64): connections served at once.
    pub max_connections: usize,
    /// `INGEST_MLLP_ALLOW` (default unset: any source, with a warning at start-up), e.g.
    /// `city-general=10.0.0.0/8;north-clinic=192.168.1.7/32,192.168.2.0/24`.
    pub allow: Option<SourceAllowlist>,
    /// `INGEST_MLLP_TLS_CERT` and `INGEST_MLLP_TLS_KEY` (PEM files; both or neither): serve
    /// MLLP over TLS.
    pub tls: Option<TlsFiles>,
    /// `INGEST_MLLP_PROCESSING_ID` (default `P`; `*` accepts any): the MSH-11 processing id
    /// accepted, so training (`T`) or debugging (`D`) traffic never reaches patients by mistake.
    pub processing_id: Option<String>,
}

/// The certificate chain and private key of the MLLP TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for MllpSettings {
    /// No listener; every other setting at its default.
    fn default() -> Self {
        Self {
            listen_addr: None,
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_connections: 64,
            allow: None,
            tls: None,
            processing_id: Some("P".to_owned()),
        }
    }
}

impl MllpSettings {
    pub fn from_env() -> Result<Self, EnvError> {
        let defaults = Self::default();
        let tls = match (env_opt::<PathBuf>("INGEST_MLLP_TLS_CERT")?, env_opt::<PathBuf>("INGEST_MLLP_TLS_KEY")?) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(EnvError::Missing { name: "INGEST_MLLP_TLS_KEY" }),
            (None, Some(_)) => return Err(EnvError::Missing { name: "INGEST_MLLP_TLS_CERT" }),
        };
        let processing_id = env_or("INGEST_MLLP_PROCESSING_ID", "P".to_owned())?;
        Ok(Self {
            listen_addr: env_opt("INGEST_MLLP_LISTEN_ADDR")?,
            max_message_bytes: env_or("INGEST_MLLP_MAX_MESSAGE_BYTES", defaults.max_message_bytes)?,
            idle_timeout: Duration::from_secs(env_or("INGEST_MLLP_IDLE_TIMEOUT_SECONDS", 300)?),
            max_connections: env_or("INGEST_MLLP_MAX_CONNECTIONS", defaults.max_connections)?.max(1),
            allow: env_opt("INGEST_MLLP_ALLOW")?,
            tls,
            processing_id: (processing_id != "*").then_some(processing_id),
        })
    }
}

/// Which source addresses may send messages for which facility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAllowlist {
    entries: Vec<(String, Vec<Cidr>)>,
}

impl SourceAllowlist {
    /// Whether `peer` may send messages for `facility`.
    pub fn allows(&self, facility: &str, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.entries.iter().filter(|(f, _)| f == facility).any(|(_, nets)| nets.iter().any(|n| n.contains(peer)))
    }

    /// Whether `peer` may send messages for any facility (else it is disconnected at once).
    pub fn allows_any(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.entries.iter().any(|(_, nets)| nets.iter().any(|n| n.contains(peer)))
    }
}

impl FromStr for SourceAllowlist {
    type Err = String;

    /// `facility=cidr[,cidr…][;facility=cidr…]`; a bare address is a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = Vec::new();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (facility, nets) =
                entry.split_once('=').ok_or_else(|| format!("'{entry}' is not facility=address/prefix"))?;
            let facility = facility.trim();
            if facility.is_empty() {
                return Err(format!("'{entry}' names no facility"));
            }
            let nets = nets
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<Cidr>, _>>()?;
            if nets.is_empty() {
                return Err(format!("'{entry}' names no address"));
            }
            entries.push((facility.to_owned(), nets));
        }
        if entries.is_empty() {
            return Err("names no facility".to_owned());
        }
        Ok(Self { entries })
    }
}

/// An address block: `10.0.0.0/8`, `192.168.1.7` (a /32), `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| format!("'{s}' is not an IP address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("'{s}': bad prefix"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A bound MLLP listener, ready to serve.
pub struct MllpListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    max_connections: usize,
}

impl MllpListener {
    /// Binds `INGEST_MLLP_LISTEN_ADDR` and loads the TLS files; `None` when MLLP is off.
    pub async fn bind(settings: &MllpSettings, state: AppState) -> anyhow::Result<Option<Self>> {
        let Some(addr) = settings.listen_addr else { return Ok(None) };
        let tls = settings.tls.as_ref().map(load_tls).transpose()?;
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("binding INGEST_MLLP_LISTEN_ADDR {addr}"))?;
        Ok(Some(Self {
            listener,
            tls,
            max_connections: settings.max_connections,
            service: Arc::new(Service {
                state,
                allow: settings.allow.clone(),
                processing_id: settings.processing_id.clone(),
                max_message_bytes: settings.max_message_bytes,
                idle_timeout: settings.idle_timeout,
            }),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Accepts connections until `shutdown` fires, then waits for open connections to finish
    /// their current message.
    pub async fn run(self, shutdown: CancellationToken) {
        match &self.service.allow {
            None => tracing::warn!(
                "INGEST_MLLP_ALLOW is not set: HL7 messages are accepted from any address for any facility"
            ),
            Some(allow) => tracing::info!(facilities = allow.entries.len(), "MLLP source allowlist in force"),
        }
        tracing::info!(addr = %self.local_addr(), tls = self.tls.is_some(), "MLLP listening");
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let connections = TaskTracker::new();
        loop {
            // Waiting for a permit before accepting leaves further clients in the backlog:
            // backpressure instead of unbounded tasks.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "MLLP accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            if let Some(allow) = &self.service.allow
                && !allow.allows_any(peer.ip())
            {
                tracing::warn!(%peer, "MLLP connection from an address no facility allows; closed");
                metrics::counter!("careline_ingest_mllp_connections_total", "outcome" => "refused").increment(1);
                continue;
            }
            metrics::counter!("careline_ingest_mllp_connections_total", "outcome" => "accepted").increment(1);
            let service = self.service.clone();
            let tls = self.tls.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("mllp_connection", %peer);
            connections.spawn(
                async move {
                    let _permit = permit;
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => service.serve(stream, peer, shutdown).await,
                        Some(acceptor) => {
                            let handshake = service.idle_timeout.min(TLS_HANDSHAKE_TIMEOUT);
                            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => service.serve(stream, peer, shutdown).await,
                                Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::info!("TLS handshake timed out"),
                            }
                        }
                    }
                }
                .instrument(span),
            );
        }
        connections.close();
        connections.wait().await;
        tracing::info!("MLLP listener stopped");
    }
}

fn load_tls(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading INGEST_MLLP_TLS_CERT {}", files.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "INGEST_MLLP_TLS_CERT {} holds no certificate", files.cert.display());
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading INGEST_MLLP_TLS_KEY {}", files.key.display()))?;
    // The provider is named rather than taken from the process default, so the choice does
    // not depend on which other crates happen to enable which rustls backend.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("INGEST_MLLP_TLS_CERT and INGEST_MLLP_TLS_KEY do not form a usable certificate and key")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What every connection shares.
struct Service {
    state: AppState,
    allow: Option<SourceAllowlist>,
    processing_id: Option<String>,
    max_message_bytes: usize,
    idle_timeout: Duration,
}

/// What became of one message, for the ACK, the metric and the log.
struct Handled {
    trigger: Option<Trigger>,
    decision: AckCode,
    outcome: &'static str,
    issues: Vec<Issue>,
    text: Option<&'static str>,
}

impl Handled {
    fn rejected(trigger: Option<Trigger>, issue: Issue, text: &'static str) -> Self {
        Self { trigger, decision: AckCode::Reject, outcome: "rejected", issues: vec![issue], text: Some(text) }
    }
}

impl Service {
    /// Reads frames and answers each one until the peer leaves, goes idle, or shutdown fires.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let mut decoder = Decoder::new(self.max_message_bytes);
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            while let Some(frame) = decoder.next_frame() {
                if let Some(ack) = self.answer(frame, peer.ip()).await {
                    let framed = mllp::frame(ack.as_bytes());
                    match tokio::time::timeout(self.idle_timeout, stream.write_all(&framed)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "MLLP peer went away before its ACK");
                            return;
                        }
                        Err(_) => {
                            tracing::info!("MLLP peer does not read its ACKs; closed");
                            return;
                        }
                    }
                }
                if shutdown.is_cancelled() {
                    tracing::info!("MLLP connection closed for shutdown");
                    return;
                }
            }
            let read = tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::info!("MLLP connection closed for shutdown");
                    return;
                }
                read = tokio::time::timeout(self.idle_timeout, stream.read(&mut buf)) => read,
            };
            match read {
                Ok(Ok(0)) => {
                    if decoder.has_partial_frame() {
                        tracing::warn!("MLLP peer closed the connection in the middle of a message");
                    }
                    tracing::debug!(discarded_bytes = decoder.discarded_bytes(), "MLLP peer closed");
                    return;
                }
                Ok(Ok(n)) => decoder.feed(&buf[..n]),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "MLLP read failed");
                    return;
                }
                Err(_) => {
                    tracing::info!("MLLP connection idle; closed");
                    return;
                }
            }
        }
    }

    /// The ACK for one frame (`None` when the sender asked for no answer in this case).
    async fn answer(&self, frame: Result<Vec<u8>, FrameError>, peer: IpAddr) -> Option<String> {
        let span = tracing::info_span!(
            "hl7_message",
            control_id = tracing::field::Empty,
            trigger = tracing::field::Empty,
            facility_id = tracing::field::Empty,
            appointment_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        async {
            let (request, handled) = match frame {
                Ok(bytes) => match Message::parse(&bytes) {
                    Ok(message) => {
                        let handled = self.handle(&message, peer).await;
                        (Some(message), handled)
                    }
                    Err(e) => {
                        let issue = Issue::error(
                            ErrorCode::SegmentSequenceError,
                            Some(Location::segment("MSH")),
                            e.to_string(),
                        );
                        (None, Handled::rejected(None, issue, "not an HL7 v2 message"))
                    }
                },
                Err(FrameError::TooLarge { size, limit, head }) => {
                    let request = Message::parse(&head).ok();
                    let trigger = request
                        .as_ref()
                        .and_then(|m| m.header().field(9).component(2))
                        .and_then(|t| Trigger::parse(&t));
                    tracing::warn!(size, limit, "HL7 message over INGEST_MLLP_MAX_MESSAGE_BYTES");
                    let issue = Issue::error(
                        ErrorCode::ApplicationInternalError,
                        None,
                        format!("the message is {size} bytes; this interface accepts at most {limit}"),
                    );
                    (request, Handled::rejected(trigger, issue, "message too large"))
                }
            };
            let span = tracing::Span::current();
            if let Some(control_id) = request.as_ref().and_then(|m| m.header().field(10).value()) {
                span.record("control_id", loggable(&control_id));
            }
            span.record("outcome", handled.outcome);
            let trigger = handled.trigger.map_or("unknown", Trigger::as_str);
            span.record("trigger", trigger);
            metrics::counter!("careline_ingest_hl7_messages_total", "trigger" => trigger, "outcome" => handled.outcome)
                .increment(1);
            let codes: Vec<String> = handled
                .issues
                .iter()
                .map(|i| format!("{}:{}", i.location.map(|l| l.to_string()).unwrap_or_default(), i.code.code()))
                .collect();
            match handled.decision {
                AckCode::Accept => tracing::info!(warnings = ?codes, "HL7 message accepted"),
                AckCode::Error | AckCode::Reject => tracing::warn!(errors = ?codes, "HL7 message not accepted"),
            }
            let control_id = ack_control_id();
            Ack {
                request: request.as_ref(),
                decision: handled.decision,
                issues: &handled.issues,
                text: handled.text,
                control_id: &control_id,
                now: self.state.clock.now(),
            }
            .to_hl7()
        }
        .instrument(span)
        .await
    }

    async fn handle(&self, message: &Message, peer: IpAddr) -> Handled {
        let trigger = match siu::check_header(message, self.processing_id.as_deref()) {
            Ok(trigger) => trigger,
            Err(issue) => {
                let trigger = message.header().field(9).component(2).and_then(|t| Trigger::parse(&t));
                return Handled::rejected(trigger, issue, "message not accepted by this interface");
            }
        };
        let report = siu::read_siu(message, trigger, &self.state.network);
        let span = tracing::Span::current();
        if let Some(facility) = &report.facility_id {
            span.record("facility_id", loggable(facility));
        }
        if let Some(appointment) = &report.appointment.appointment_id {
            span.record("appointment_id", loggable(appointment));
        }
        // Checked before the content, so a source learns nothing about messages it may not send.
        if let (Some(allow), Some(facility)) = (&self.allow, &report.facility_id)
            && self.state.network.facility(facility).is_some()
            && !allow.allows(facility, peer)
        {
            tracing::warn!(%peer, "HL7 source address not allowed for the facility");
            let issue = Issue::error(
                ErrorCode::ApplicationInternalError,
                report.location_of(siu::fields::FACILITY_ID),
                "the sending address is not allowed to report for this facility",
            );
            return Handled::rejected(Some(trigger), issue, "source not allowed for this facility");
        }
        let (events, issues) = events_of(&report, &self.state.network, self.state.clock.now());
        let Some((patient, appointment)) = events else {
            return Handled {
                trigger: Some(trigger),
                decision: AckCode::Error,
                outcome: "error",
                issues,
                text: Some("the message cannot be applied as sent; see ERR"),
            };
        };
        let events = patient.map(Event::PatientUpserted).into_iter().chain([Event::AppointmentUpserted(appointment)]);
        for event in events {
            if self.state.publish(event).await.is_err() {
                return Handled {
                    trigger: Some(trigger),
                    decision: AckCode::Error,
                    outcome: "unavailable",
                    issues: vec![Issue::error(
                        ErrorCode::ApplicationInternalError,
                        None,
                        "the message broker did not confirm; nothing can be assumed stored, re-send the message",
                    )],
                    text: Some("temporarily unavailable; re-send"),
                };
            }
        }
        Handled { trigger: Some(trigger), decision: AckCode::Accept, outcome: "accepted", issues, text: None }
    }
}

type Events = (Option<PatientUpserted>, AppointmentUpserted);

/// Turns a report into events with the JSON API's own validation; every problem (the
/// reading's and the validation's) as an issue located in the HL7 message. Events only when
/// no issue is an error: a message is applied whole or not at all.
pub fn events_of(
    report: &SiuReport,
    network: &careline_domain::facility::NetworkConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> (Option<Events>, Vec<Issue>) {
    let reported_by = reported_by(report.sending_application.as_deref());
    let mut issues = report.issues.clone();
    let appointment = validate_appointment(
        network,
        report.appointment.appointment_id.as_deref().unwrap_or_default(),
        AppointmentBody {
            facility_id: report.facility_id.clone(),
            patient_id: report.patient.patient_id.clone(),
            version: report.version,
            status: Some(report.appointment.status.as_str().to_owned()),
            starts_at: report.appointment.starts_at.map(|at| at.to_rfc3339()),
            duration_minutes: report.appointment.duration_minutes,
            clinician: report.appointment.clinician.clone(),
            department: report.appointment.department.clone(),
            instructions: None,
        },
        &reported_by,
        None,
    );
    // No mobile number: the appointment alone (the reading has already warned about PID-13).
    let patient = report.patient.phone.as_ref().map(|phone| {
        validate_patient(
            network,
            report.patient.patient_id.as_deref().unwrap_or_default(),
            PatientBody {
                facility_id: report.facility_id.clone(),
                first_name: report.patient.first_name.clone(),
                phone: Some(phone.clone()),
                language: report.patient.language.clone(),
                // SIU carries no WhatsApp consent; none is invented.
                consent: None,
            },
            &reported_by,
            now,
        )
    });
    let mut add = |errors: Vec<FieldError>| {
        for e in errors {
            let location = report.location_of(&e.field);
            // The reading already explained this field (an unreadable date, say).
            if issues.iter().any(|i| i.is_error() && i.location.is_some() && i.location == location) {
                continue;
            }
            let code = match e.message.as_str() {
                "is required" | "must not be empty" => ErrorCode::RequiredFieldMissing,
                m if m.contains("not a facility") => ErrorCode::TableValueNotFound,
                _ => ErrorCode::DataTypeError,
            };
            issues.push(Issue::error(code, location, e.message));
        }
    };
    let appointment = appointment.map_err(&mut add).ok();
    let patient = match patient {
        None => Some(None),
        Some(Ok(p)) => Some(Some(p)),
        Some(Err(errors)) => {
            add(errors);
            None
        }
    };
    let events = match (patient, appointment) {
        (Some(patient), Some(appointment)) if !issues.iter().any(Issue::is_error) => Some((patient, appointment)),
        _ => None,
    };
    (events, issues)
}

/// `hl7:<MSH-3>`: who reported the events, bounded and printable.
fn reported_by(sending_application: Option<&str>) -> String {
    match sending_application.map(loggable).filter(|s| !s.is_empty()) {
        Some(app) => format!("hl7:{app}"),
        None => "hl7".to_owned(),
    }
}

/// An identifier from a message, safe for a log line or a label: printable, at most 64 chars.
fn loggable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A fresh MSH-10 for an ACK: 20 characters (the v2.5 limit), 68 of its bits random.
fn ack_control_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("CL{}", &id[..18])
}

#[cfg(test)]
mod tests {
    use super::*;
    use careline_domain::events::AppointmentStatus;
    use careline_domain::facility::NetworkConfig;
    use careline_hl7::Severity;

    const NETWORK: &str = r#"
        [templates.booking_confirmation]
        name = "appointment_booked"
        languages = { en = "en" }
        body = ["first_name", "date_time", "facility"]
        [templates.reminder]
        name = "appointment_reminder"
        languages = { en = "en" }
        body = ["first_name", "date_time", "facility"]
        [[facility]]
        id = "city"
        name = "City General"
        time_zone = "Asia/Kolkata"
        phone_number_id = "1001"
    "#;

    fn report(text: &str) -> SiuReport {
        let network = NetworkConfig::from_toml(NETWORK).unwrap();
        let message = Message::parse(text.as_bytes()).unwrap();
        let trigger = siu::check_header(&message, Some("P")).unwrap();
        siu::read_siu(&message, trigger, &network)
    }

    fn events(text: &str) -> (Option<Events>, Vec<Issue>) {
        let network = NetworkConfig::from_toml(NETWORK).unwrap();
        events_of(&report(text), &network, "2026-03-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn a_booking_becomes_a_patient_without_consent_and_an_appointment_versioned_by_msh_7() {
        let (events, issues) = events(concat!(
            "MSH|^~\\&|EPIC|city|||20260301091500||SIU^S12|M1|P|2.5\r",
            "SCH||A-1|||||||20|min|^^^202603050930\r",
            "PID|1||P-1^^^^MR||Sharma^Asha||||||||^PRN^CP^^91^98123^45678|||en\r",
        ));
        assert!(issues.is_empty(), "{issues:?}");
        let (patient, appointment) = events.unwrap();
        let patient = patient.unwrap();
        assert_eq!(patient.consent, None);
        assert_eq!(patient.phone, "+919812345678");
        assert_eq!(patient.reported_by, "hl7:EPIC");
        assert_eq!(appointment.appointment_id, "A-1");
        assert_eq!(appointment.patient_id, "P-1");
        assert_eq!(appointment.status, AppointmentStatus::Booked);
        assert_eq!(
            appointment.version,
            "2026-03-01T03:45:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp_millis()
        );
        assert_eq!(appointment.duration_minutes, Some(20));
    }

    #[test]
    fn without_a_mobile_number_only_the_appointment_is_sent_with_a_warning() {
        let (events, issues) = events(concat!(
            "MSH|^~\\&|EPIC|city|||20260301091500||SIU^S15|M1\r",
            "SCH||A-1|||||||||^^^202603050930\r",
            "PID|1||P-1\r",
        ));
        let (patient, appointment) = events.unwrap();
        assert!(patient.is_none());
        assert_eq!(appointment.status, AppointmentStatus::Cancelled);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].severity, Severity::Warning);
    }

    #[test]
    fn validation_errors_name_hl7_fields_once_each() {
        let (events, issues) = events(concat!(
            "MSH|^~\\&|EPIC|atlantis|||20260301091500||SIU^S12|M1\r",
            "SCH|||||||||2000|min|^^^2026030509\r",
            "PID|1||||Sharma^\\X07\\||||||||+919812345678^PRN^CP||english-please\r",
        ));
        assert!(events.is_none());
        let located: Vec<(String, u16)> =
            issues.iter().map(|i| (i.location.map(|l| l.to_string()).unwrap_or_default(), i.code.code())).collect();
        assert_eq!(
            located,
            [
                ("SCH-2".to_owned(), 101),
                ("MSH-4".to_owned(), 103),
                ("PID-3".to_owned(), 101),
                ("SCH-9".to_owned(), 102),
                ("PID-5.2".to_owned(), 102),
                ("PID-15".to_owned(), 102),
            ]
        );
    }

    #[test]
    fn a_date_the_reading_refused_is_not_reported_twice() {
        let (events, issues) = events(concat!(
            "MSH|^~\\&|EPIC|city|||20260301091500||SIU^S12|M1\r",
            "SCH||A-1|||||||||^^^tomorrow\r",
            "PID|1||P-1\r",
        ));
        assert!(events.is_none());
        let errors: Vec<String> =
            issues.iter().filter(|i| i.is_error()).map(|i| i.location.unwrap().to_string()).collect();
        assert_eq!(errors, ["SCH-11.4"]);
    }

    #[test]
    fn allowlists_match_addresses_per_facility() {
        let allow: SourceAllowlist = "city=10.0.0.0/8, 192.168.1.7 ; north=fd00::/8".parse().unwrap();
        assert!(allow.allows("city", "10.1.2.3".parse().unwrap()));
        assert!(allow.allows("city", "192.168.1.7".parse().unwrap()));
        assert!(allow.allows("city", "::ffff:10.9.9.9".parse().unwrap()), "IPv4-mapped IPv6 peers");
        assert!(!allow.allows("city", "192.168.1.8".parse().unwrap()));
        assert!(!allow.allows("north", "10.1.2.3".parse().unwrap()));
        assert!(allow.allows("north", "fd12::1".parse().unwrap()));
        assert!(!allow.allows("elsewhere", "10.1.2.3".parse().unwrap()));
        assert!(allow.allows_any("fd00::5".parse().unwrap()));
        assert!(!allow.allows_any("8.8.8.8".parse().unwrap()));
        let everything: SourceAllowlist = "city=0.0.0.0/0".parse().unwrap();
        assert!(everything.allows("city", "1.2.3.4".parse().unwrap()));
        for bad in ["", "city", "=10.0.0.0/8", "city=10.0.0.0/33", "city=not-an-ip", "city="] {
            assert!(bad.parse::<SourceAllowlist>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ack_control_ids_fit_msh_10_and_differ() {
        let (a, b) = (ack_control_id(), ack_control_id());
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
