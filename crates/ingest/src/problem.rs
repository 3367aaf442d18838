//! RFC 9457 problem details: every error ingest returns is `application/problem+json` with a
//! stable `type`, a human `title`, the HTTP `status`, a `detail`, and, for input errors, one
//! entry per offending field so a hospital integrator can fix all of them in one go.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a client should wait before retrying when a dependency is down.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// One offending field: a JSON path (`consent.recorded_at`) or a path parameter name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// What went wrong with a request, decided by the handler; rendered as problem+json.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No token, or one that is unknown, revoked or expired.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid token that does not cover the facility.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The body is not JSON, or a field has the wrong JSON type.
    #[error("malformed request: {detail}")]
    Malformed { detail: String, errors: Vec<FieldError> },
    /// The body is larger than `INGEST_MAX_BODY_BYTES`.
    #[error("request body too large")]
    TooLarge { limit: usize },
    /// Not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Well-formed JSON whose content is not acceptable.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldError>),
    /// A dependency (broker, database) is unavailable; the client should retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// (type slug, title)
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => ("unauthorized", "Missing or invalid API token"),
            Self::Forbidden(_) => ("forbidden", "Token does not cover this facility"),
            Self::Malformed { .. } => ("malformed-request", "Request body is not valid JSON for this endpoint"),
            Self::TooLarge { .. } => ("body-too-large", "Request body too large"),
            Self::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            Self::Invalid(_) => ("validation-failed", "Request failed validation"),
            Self::Unavailable(_) => ("service-unavailable", "Service temporarily unavailable"),
            Self::NotFound => ("not-found", "Not found"),
            Self::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Unauthorized(d) | Self::Forbidden(d) | Self::Unavailable(d) => d.clone(),
            Self::Malformed { detail, .. } => detail.clone(),
            Self::TooLarge { limit } => format!("the request body must not exceed {limit} bytes"),
            Self::UnsupportedMediaType => "send the body as application/json".to_owned(),
            Self::Invalid(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("invalid fields: {}", fields.join(", "))
            }
            Self::NotFound => "no such endpoint".to_owned(),
            Self::MethodNotAllowed => "this endpoint does not accept that method".to_owned(),
        }
    }

    fn errors(&self) -> &[FieldError] {
        match self {
            Self::Malformed { errors, .. } | Self::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let (slug, title) = self.kind();
        let kind = format!("https://careline.dev/problems/{slug}");
        let body = Body { kind: &kind, title, status: status.as_u16(), detail: self.detail(), errors: self.errors() };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}
