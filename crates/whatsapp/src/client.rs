//! The HTTP client for `POST /{version}/{phone-number-id}/messages`.
//!
//! The one thing this client must get right is *what a failure means*, because the Cloud API
//! has no idempotency key: resending after a lost answer may message a patient twice. So
//! [`SendError`] separates
//! - [`SendError::Api`]: Meta answered with its error body — the request was refused and the
//!   code says what to do ([`crate::errors`]);
//! - [`SendError::Connect`]: no connection was made — nothing was sent, retrying is safe;
//! - [`SendError::OutcomeUnknown`]: the request may have been accepted (timeout after sending,
//!   connection lost mid-answer, HTTP 5xx, 429 without a Graph body, an unreadable 200) — the
//!   caller must wait for a status webhook carrying its `biz_opaque_callback_data` before
//!   deciding to resend.
//!
//! A separate, shorter connect timeout keeps "could not connect" distinguishable from "sent
//! but no answer": a single overall timeout would fold both into the unknown case.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::errors::{ErrorClass, classify};
use crate::redact::mask_phone;
use crate::types::{AcceptanceStatus, ErrorResponse, SendRequest, SendResponse};

/// Meta's Graph host.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The Graph version this crate was written against.
pub const DEFAULT_API_VERSION: &str = "v23.0";
/// Default overall timeout of one send.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default TCP+TLS connect timeout; shorter than [`DEFAULT_TIMEOUT`] on purpose (see module doc).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A Graph API access token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl From<String> for AccessToken {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for AccessToken {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Where and how to reach the Cloud API.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `https://graph.facebook.com`, or the sandbox's address.
    pub base_url: String,
    /// `v23.0`; pin one version and track Graph deprecations.
    pub api_version: String,
    /// System-user token, sent as `Authorization: Bearer`.
    pub access_token: AccessToken,
    /// Overall time allowed for one send; past it the outcome is unknown.
    pub timeout: Duration,
    /// Time allowed to connect; past it nothing was sent.
    pub connect_timeout: Duration,
}

impl ClientSettings {
    /// Settings with the default timeouts.
    pub fn new(
        base_url: impl Into<String>,
        api_version: impl Into<String>,
        access_token: impl Into<AccessToken>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            api_version: api_version.into(),
            access_token: access_token.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// The client could not be constructed (TLS backend initialisation).
#[derive(Debug, thiserror::Error)]
#[error("could not build the WhatsApp HTTP client")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// A message Meta accepted. Accepted is not delivered: delivery truth comes from webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The wamid that status webhooks and reply `context.id` will carry.
    pub wamid: String,
    /// `accepted`, `held_for_quality_assessment`, `paused`…
    pub status: AcceptanceStatus,
    /// Meta's normalised recipient id, when returned.
    pub wa_id: Option<String>,
}

/// Why the outcome of a send is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownOutcome {
    /// No complete answer within the timeout (or HTTP 408).
    Timeout,
    /// The connection broke after the request may have been written.
    ConnectionLost,
    /// HTTP 5xx: Meta may have accepted the message before failing.
    ServerError,
    /// HTTP 429 without a Graph error body to tell which limit.
    RateLimitedWithoutBody,
    /// A success status whose body has no wamid.
    UnreadableAnswer,
}

impl fmt::Display for UnknownOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timed out waiting for the answer",
            Self::ConnectionLost => "connection lost after sending",
            Self::ServerError => "server error",
            Self::RateLimitedWithoutBody => "HTTP 429 without an error body",
            Self::UnreadableAnswer => "success answer without a message id",
        })
    }
}

/// A send that did not end in an [`Accepted`]. See the module doc for the three families.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Meta answered with a Graph error body: the message was refused.
    #[error("WhatsApp API error {code} (HTTP {http_status}): {message}")]
    Api {
        /// The HTTP status (informative; branch on `code`).
        http_status: u16,
        /// Meta's error code.
        code: i64,
        /// `OAuthException`, …
        error_type: String,
        /// `error.message`.
        message: String,
        /// `error.error_data.details`.
        details: Option<String>,
        /// Meta's trace id for support.
        fbtrace_id: Option<String>,
    },
    /// The request may have been accepted; reconcile through webhooks before resending.
    #[error("outcome of the send is unknown: {reason}")]
    OutcomeUnknown {
        /// What happened.
        reason: UnknownOutcome,
        /// The HTTP status, when there was one.
        http_status: Option<u16>,
        /// The Graph error code of a 5xx body, when there was one.
        api_code: Option<i64>,
        /// The transport error, when there was one.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// No connection could be made: the request was certainly not delivered.
    #[error("could not connect to the WhatsApp API")]
    Connect(#[source] reqwest::Error),
    /// A 4xx without a Graph error body: not Meta answering (wrong base URL, a proxy) —
    /// configuration to fix, nothing was accepted.
    #[error("unexpected HTTP {http_status} without a Graph error body")]
    UnexpectedStatus {
        /// The HTTP status.
        http_status: u16,
    },
    /// Refused locally before sending (e.g. a phone number id that is not digits).
    #[error("invalid send request: {0}")]
    InvalidRequest(String),
}

impl SendError {
    /// What the sender should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { code, .. } => classify(*code),
            Self::OutcomeUnknown { .. } => ErrorClass::OutcomeUnknown,
            Self::Connect(_) => ErrorClass::Retry,
            Self::UnexpectedStatus { .. } => ErrorClass::PauseNumber,
            Self::InvalidRequest(_) => ErrorClass::Permanent,
        }
    }

    /// Meta's error code, when Meta gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => Some(*code),
            Self::OutcomeUnknown { api_code, .. } => *api_code,
            _ => None,
        }
    }

    /// Whether the message may have been accepted despite this error.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }
}

/// A Cloud API client for one access token. Cheap to clone (shares a connection pool).
#[derive(Debug, Clone)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
    access_token: AccessToken,
}

impl WhatsAppClient {
    /// Builds a client; fails only if the HTTP/TLS stack cannot initialise.
    pub fn new(settings: ClientSettings) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("careline-whatsapp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientBuildError)?;
        Ok(Self {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_version: settings.api_version.trim_matches('/').to_owned(),
            access_token: settings.access_token,
        })
    }

    /// `{base}/{version}/{phone_number_id}/messages`.
    pub fn messages_url(&self, phone_number_id: &str) -> String {
        format!("{}/{}/{}/messages", self.base_url, self.api_version, phone_number_id)
    }

    /// Sends one message from business number `phone_number_id`.
    ///
    /// The call has a `CLIENT` span (`POST`, with `http.request.method`, `url.full`,
    /// `server.address`, `server.port`, `http.response.status_code`, and `error.type` /
    /// `whatsapp.error.code` when Meta refuses) and carries its W3C `traceparent`, so a
    /// collector in front of the API (or the sandbox) joins the sender's trace. The URL holds no
    /// secret: the token travels in the `Authorization` header, which is never recorded.
    pub async fn send(&self, phone_number_id: &str, req: &SendRequest) -> Result<Accepted, SendError> {
        let url = self.messages_url(phone_number_id);
        let span = http_client_span(&url, req);
        self.send_in_span(phone_number_id, url, req).instrument(span).await
    }

    async fn send_in_span(&self, phone_number_id: &str, url: String, req: &SendRequest) -> Result<Accepted, SendError> {
        if phone_number_id.is_empty() || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
            let error = SendError::InvalidRequest("phone_number_id must be a non-empty string of digits".to_owned());
            record_failure(&error);
            return Err(error);
        }
        let response = self
            .http
            .post(url)
            .headers(trace_headers())
            .bearer_auth(self.access_token.expose())
            .json(req)
            .send()
            .await
            .map_err(transport_error)
            .inspect_err(record_failure)?;
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) if status.is_success() || status.is_server_error() => {
                return Err(SendError::OutcomeUnknown {
                    reason: if err.is_timeout() { UnknownOutcome::Timeout } else { UnknownOutcome::ConnectionLost },
                    http_status: Some(status.as_u16()),
                    api_code: None,
                    source: Some(err),
                });
            }
            Err(_) => Default::default(),
        };
        let outcome = interpret(status, &body);
        if let Err(error) = &outcome {
            record_failure(error);
        }
        match &outcome {
            Ok(accepted) => {
                tracing::debug!(wamid = %accepted.wamid, status = accepted.status.as_str(), "accepted")
            }
            Err(err) => tracing::debug!(
                error = %err,
                code = err.code(),
                class = err.class().as_str(),
                "send failed"
            ),
        }
        outcome
    }
}

/// The `CLIENT` span of one call to the Cloud API (OpenTelemetry HTTP conventions). The
/// recipient is masked; no message content is recorded.
fn http_client_span(url: &str, req: &SendRequest) -> tracing::Span {
    let parsed = reqwest::Url::parse(url).ok();
    let mut full = parsed.clone();
    if let Some(full) = &mut full {
        // Never a query string or credentials in a span (none are used today; keep it so).
        full.set_query(None);
        let _ = full.set_password(None);
        let _ = full.set_username("");
    }
    tracing::info_span!(
        "whatsapp.send",
        otel.name = "POST",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        url.full = full.as_ref().map(|u| u.as_str()).unwrap_or(""),
        server.address = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or(""),
        server.port = parsed.as_ref().and_then(reqwest::Url::port_or_known_default),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        whatsapp.error.code = tracing::field::Empty,
        to = %mask_phone(&req.to),
        message_type = req.message_type(),
    )
}

/// Marks the current (client) span failed, with the error's class and Meta's code.
fn record_failure(error: &SendError) {
    let span = tracing::Span::current();
    span.record("otel.status_code", "error");
    span.record("error.type", error.class().as_str());
    if let Some(code) = error.code() {
        span.record("whatsapp.error.code", code);
    }
}

/// The current span's W3C trace context as HTTP headers (empty when tracing is off).
fn trace_headers() -> reqwest::header::HeaderMap {
    struct Carrier<'a>(&'a mut reqwest::header::HeaderMap);
    impl opentelemetry::propagation::Injector for Carrier<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) =
                (reqwest::header::HeaderName::try_from(key), reqwest::header::HeaderValue::try_from(value))
            {
                self.0.insert(name, value);
            }
        }
    }
    let mut headers = reqwest::header::HeaderMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Carrier(&mut headers)));
    headers
}

fn transport_error(err: reqwest::Error) -> SendError {
    if err.is_connect() {
        SendError::Connect(err)
    } else if err.is_builder() {
        SendError::InvalidRequest(err.to_string())
    } else {
        SendError::OutcomeUnknown {
            reason: if err.is_timeout() { UnknownOutcome::Timeout } else { UnknownOutcome::ConnectionLost },
            http_status: None,
            api_code: None,
            source: Some(err),
        }
    }
}

/// Turns a complete HTTP answer into the send's outcome.
fn interpret(status: StatusCode, body: &[u8]) -> Result<Accepted, SendError> {
    let http_status = status.as_u16();
    if status.is_success() {
        let accepted = serde_json::from_slice::<SendResponse>(body).ok().and_then(|resp| {
            let message = resp.messages.into_iter().find(|m| !m.id.is_empty())?;
            Some(Accepted {
                wamid: message.id,
                status: AcceptanceStatus::parse(message.message_status.as_deref()),
                wa_id: resp.contacts.into_iter().find_map(|c| c.wa_id),
            })
        });
        return accepted.ok_or(SendError::OutcomeUnknown {
            reason: UnknownOutcome::UnreadableAnswer,
            http_status: Some(http_status),
            api_code: None,
            source: None,
        });
    }
    let api_error = serde_json::from_slice::<ErrorResponse>(body).ok().map(|r| r.error);
    if status.is_server_error() {
        return Err(SendError::OutcomeUnknown {
            reason: UnknownOutcome::ServerError,
            http_status: Some(http_status),
            api_code: api_error.map(|e| e.code),
            source: None,
        });
    }
    match api_error {
        Some(error) => Err(SendError::Api {
            http_status,
            code: error.code,
            details: error.details().map(str::to_owned),
            error_type: error.error_type,
            message: error.message,
            fbtrace_id: error.fbtrace_id,
        }),
        None if status == StatusCode::TOO_MANY_REQUESTS => Err(SendError::OutcomeUnknown {
            reason: UnknownOutcome::RateLimitedWithoutBody,
            http_status: Some(http_status),
            api_code: None,
            source: None,
        }),
        None if status == StatusCode::REQUEST_TIMEOUT => Err(SendError::OutcomeUnknown {
            reason: UnknownOutcome::Timeout,
            http_status: Some(http_status),
            api_code: None,
            source: None,
        }),
        None => Err(SendError::UnexpectedStatus { http_status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Template;
    use axum::Router;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "test-token";

    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    fn client(addr: SocketAddr, timeout: Duration) -> WhatsAppClient {
        let mut settings = ClientSettings::new(format!("http://{addr}/"), "v23.0", TOKEN);
        settings.timeout = timeout;
        WhatsAppClient::new(settings).unwrap()
    }

    fn request() -> SendRequest {
        SendRequest::template("919812345678", Template::new("appointment_reminder", "en").with_body_text(["Asha"]))
            .with_callback_data("outbox-1")
    }

    async fn send_to(status: u16, body: &'static str) -> Result<Accepted, SendError> {
        let router = Router::new().route(
            "/v23.0/{id}/messages",
            post(move || async move { (StatusCode::from_u16(status).unwrap(), body).into_response() }),
        );
        let addr = serve(router).await;
        client(addr, Duration::from_secs(5)).send("106540352242922", &request()).await
    }

    #[tokio::test]
    async fn an_accepted_send_returns_the_wamid_and_sends_bearer_auth_and_json() {
        let router = Router::new().route(
            "/v23.0/{id}/messages",
            post(|axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap, body: String| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(id, "106540352242922");
                assert_eq!(auth, Some("Bearer test-token"));
                assert_eq!(json["biz_opaque_callback_data"], "outbox-1");
                assert_eq!(json["template"]["name"], "appointment_reminder");
                r#"{"messaging_product":"whatsapp","contacts":[{"input":"919812345678","wa_id":"919812345678"}],
                        "messages":[{"id":"wamid.OK","message_status":"accepted"}]}"#
            }),
        );
        let addr = serve(router).await;
        let accepted = client(addr, Duration::from_secs(5)).send("106540352242922", &request()).await.unwrap();
        assert_eq!(accepted.wamid, "wamid.OK");
        assert_eq!(accepted.status, AcceptanceStatus::Accepted);
        assert_eq!(accepted.wa_id.as_deref(), Some("919812345678"));
    }

    #[tokio::test]
    async fn a_graph_error_body_is_an_api_error_classified_by_code() {
        let err = send_to(
            400,
            r#"{"error":{"message":"(#131056) Pair rate limit hit","type":"OAuthException","code":131056,
                "error_data":{"messaging_product":"whatsapp","details":"too many"},"fbtrace_id":"T"}}"#,
        )
        .await
        .unwrap_err();
        match &err {
            SendError::Api { http_status, code, details, fbtrace_id, .. } => {
                assert_eq!(*http_status, 400);
                assert_eq!(*code, 131056);
                assert_eq!(details.as_deref(), Some("too many"));
                assert_eq!(fbtrace_id.as_deref(), Some("T"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.class(), ErrorClass::RetryRecipientLater);
        assert_eq!(err.code(), Some(131056));
    }

    #[tokio::test]
    async fn a_429_with_a_graph_body_is_an_api_error_but_without_is_unknown() {
        let with_body = send_to(
            429,
            r#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4}}"#,
        )
        .await
        .unwrap_err();
        assert_eq!(with_body.class(), ErrorClass::Retry);
        let without = send_to(429, "Too Many Requests").await.unwrap_err();
        assert!(matches!(without, SendError::OutcomeUnknown { reason: UnknownOutcome::RateLimitedWithoutBody, .. }));
        assert_eq!(without.class(), ErrorClass::OutcomeUnknown);
    }

    #[tokio::test]
    async fn a_5xx_is_an_unknown_outcome_even_with_a_graph_body() {
        let err = send_to(
            500,
            r#"{"error":{"message":"An unexpected error has occurred.","type":"OAuthException","code":2,"is_transient":true}}"#,
        )
        .await
        .unwrap_err();
        match err {
            SendError::OutcomeUnknown { reason, http_status, api_code, .. } => {
                assert_eq!(reason, UnknownOutcome::ServerError);
                assert_eq!(http_status, Some(500));
                assert_eq!(api_code, Some(2));
            }
            other => panic!("unexpected {other:?}"),
        }
        let bare = send_to(503, "").await.unwrap_err();
        assert!(bare.outcome_unknown());
    }

    #[tokio::test]
    async fn a_200_without_a_wamid_is_an_unknown_outcome() {
        for body in ["", "{}", r#"{"messages":[]}"#, "<html>", r#"{"messages":[{"id":""}]}"#] {
            let err = send_to(200, body).await.unwrap_err();
            assert!(
                matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::UnreadableAnswer, .. }),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn a_4xx_without_a_graph_body_is_unexpected() {
        let err = send_to(404, "Not Found").await.unwrap_err();
        assert!(matches!(err, SendError::UnexpectedStatus { http_status: 404 }));
        assert_eq!(err.class(), ErrorClass::PauseNumber);
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_as_an_unknown_outcome() {
        let router = Router::new().route(
            "/v23.0/{id}/messages",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        );
        let addr = serve(router).await;
        let err = client(addr, Duration::from_millis(200)).send("1", &request()).await.unwrap_err();
        assert!(matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::Timeout, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_an_unknown_outcome() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.shutdown().await;
            }
        });
        let err = client(addr, Duration::from_secs(5)).send("1", &request()).await.unwrap_err();
        assert!(matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::ConnectionLost, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client(addr, Duration::from_secs(5)).send("1", &request()).await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Retry);
    }

    #[tokio::test]
    async fn a_phone_number_id_that_is_not_digits_is_refused_locally() {
        let c = client("127.0.0.1:9".parse().unwrap(), Duration::from_secs(1));
        for id in ["", "../admin", "12 3", "abc"] {
            let err = c.send(id, &request()).await.unwrap_err();
            assert!(matches!(err, SendError::InvalidRequest(_)), "{id}");
            assert_eq!(err.class(), ErrorClass::Permanent);
        }
    }

    #[test]
    fn settings_never_print_the_token() {
        let settings = ClientSettings::new(DEFAULT_BASE_URL, DEFAULT_API_VERSION, "EAAG-secret");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("EAAG-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
