//! The public listener: exactly Meta's two endpoints.
//!
//! - `GET /webhook` answers the subscription handshake.
//! - `POST /webhook` checks `X-Hub-Signature-256` over the raw bytes (before any parsing: a
//!   parsed and re-serialised body no longer matches), stores the bytes in `webhook_inbox` and
//!   answers 200. Nothing is parsed here, so a body Careline cannot read is still kept; if the
//!   store is down the answer is 503 and Meta retries.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use careline_store::PgPool;
use careline_whatsapp::signature::{SignatureError, verify_signature};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::settings::Secret;

/// `X-Hub-Signature-256`, lower-cased as HTTP/2 and `HeaderMap` spell it.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct WebhookState {
    pub app_secret: Secret,
    pub verify_token: Secret,
    pub pool: PgPool,
    /// Woken after each stored POST so the processor does not wait for its next poll.
    pub inbox_wake: Arc<Notify>,
}

/// The public router: `/webhook` only; every other path is 404.
pub(crate) fn router(state: WebhookState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/webhook", get(verify_subscription).post(receive_webhook))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(axum::middleware::from_fn(careline_telemetry::trace_context::trace_http_request))
        .with_state(state)
}

fn count_request(outcome: &'static str) {
    metrics::counter!("careline_webhook_requests_total", "outcome" => outcome).increment(1);
}

async fn verify_subscription(
    State(state): State<WebhookState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mode_ok = params.get("hub.mode").is_some_and(|m| m == "subscribe");
    let token_ok = params
        .get("hub.verify_token")
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(state.verify_token.expose().as_bytes())));
    if !(mode_ok && token_ok) {
        tracing::warn!(mode_ok, token_ok, "webhook verification refused");
        count_request("verify_refused");
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(challenge) = params.get("hub.challenge") else {
        return (StatusCode::BAD_REQUEST, "hub.challenge is missing").into_response();
    };
    tracing::info!("webhook subscription verified");
    count_request("verified");
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.clone()).into_response()
}

#[tracing::instrument(skip_all, fields(inbox_id))]
async fn receive_webhook(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("webhook body over the limit");
            count_request("too_large");
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        Err(rejection) => {
            count_request("unreadable");
            return rejection.into_response();
        }
    };
    // A header that is not visible ASCII is present but cannot be a valid signature.
    let signature = headers.get(SIGNATURE_HEADER).map(|v| v.to_str().unwrap_or(""));
    match verify_signature(state.app_secret.expose().as_bytes(), &body, signature) {
        Ok(()) => {}
        Err(SignatureError::Missing) => {
            tracing::warn!("webhook without signature refused");
            count_request("missing_signature");
            return StatusCode::UNAUTHORIZED.into_response();
        }
        Err(error) => {
            tracing::warn!(%error, "webhook with bad signature refused");
            count_request("bad_signature");
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    match careline_store::webhooks::insert_inbox(&state.pool, &body).await {
        Ok(inbox_id) => {
            tracing::Span::current().record("inbox_id", inbox_id);
            state.inbox_wake.notify_one();
            count_request("accepted");
            StatusCode::OK.into_response()
        }
        Err(error) => {
            // Meta retries anything but 200, so nothing is lost by refusing now.
            tracing::error!(%error, "could not store webhook; answering 503");
            count_request("store_unavailable");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
