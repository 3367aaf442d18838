//! Routes: the Graph endpoint, `/_sandbox/*` administration and `/healthz`.
//!
//! Bodies are taken as raw bytes and parsed by hand so that a malformed request gets Meta's
//! error (or, on admin routes, a JSON `{"error": …}`), never a framework rejection or a panic.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::engine::Engine;
use crate::faults::FaultUpdate;
use crate::graph_error::GraphError;
use crate::registry::{PhoneNumberSpec, TemplateSpec};
use crate::replies::{ReplyError, ReplyRequest};

type App = State<Arc<Engine>>;

pub(crate) fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(send_message))
        .route("/healthz", get(|| async { "ok" }))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/callbacks", get(callbacks))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/faults", get(faults).post(update_faults))
        .route("/_sandbox/replies", post(reply))
        .route("/_sandbox/templates", get(templates).post(register_templates))
        .route("/_sandbox/phone_numbers", get(phone_numbers).post(register_phone_numbers))
        .fallback(|| async { GraphError::invalid_parameter("Unknown path components").into_response() })
        .with_state(engine)
}

async fn send_message(
    State(engine): App,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let decision = engine.handle_send(&version, &phone_number_id, authorization, &body);
    if let Some(delay) = decision.delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = engine.stopping.cancelled() => {}
        }
    }
    match decision.outcome {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

fn admin_error(status: StatusCode, message: impl ToString) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// One item or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::Many(v) => v,
            Self::One(t) => vec![t],
        }
    }
}

async fn stats(State(engine): App) -> Response {
    axum::Json(engine.stats()).into_response()
}

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    to: Option<String>,
    wamid: Option<String>,
    limit: Option<usize>,
}

async fn messages(State(engine): App, Query(query): Query<MessagesQuery>) -> Response {
    let to = query.to.as_deref().map(|t| crate::validate::normalise_phone(t).unwrap_or_else(|| t.to_owned()));
    let mut list: Vec<_> = engine
        .messages()
        .into_iter()
        .filter(|m| to.as_ref().is_none_or(|t| &m.wa_id == t))
        .filter(|m| query.wamid.as_ref().is_none_or(|w| &m.wamid == w))
        .collect();
    if let Some(limit) = query.limit {
        let skip = list.len().saturating_sub(limit);
        list.drain(..skip);
    }
    axum::Json(list).into_response()
}

async fn callbacks(State(engine): App) -> Response {
    axum::Json(engine.callbacks()).into_response()
}

async fn reset(State(engine): App) -> Response {
    engine.reset();
    axum::Json(json!({ "reset": true })).into_response()
}

async fn faults(State(engine): App) -> Response {
    axum::Json(engine.faults()).into_response()
}

async fn update_faults(State(engine): App, body: Bytes) -> Response {
    let update: FaultUpdate = match parse(&body) {
        Ok(u) => u,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    match engine.update_faults(update) {
        Ok(state) => axum::Json(state).into_response(),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn reply(State(engine): App, body: Bytes) -> Response {
    let request: ReplyRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    match engine.reply(request) {
        Ok(receipt) => (StatusCode::ACCEPTED, axum::Json(receipt)).into_response(),
        Err(e @ ReplyError::UnknownMessage(_)) => admin_error(StatusCode::NOT_FOUND, e),
        Err(e @ ReplyError::WebhooksDisabled) => admin_error(StatusCode::CONFLICT, e),
        Err(e) => admin_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn templates(State(engine): App) -> Response {
    axum::Json(engine.templates()).into_response()
}

async fn register_templates(State(engine): App, body: Bytes) -> Response {
    let specs: OneOrMany<TemplateSpec> = match parse(&body) {
        Ok(s) => s,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    for spec in specs.into_vec() {
        if let Err(e) = engine.register_template(spec) {
            return admin_error(StatusCode::BAD_REQUEST, e);
        }
    }
    (StatusCode::CREATED, axum::Json(engine.templates())).into_response()
}

async fn phone_numbers(State(engine): App) -> Response {
    axum::Json(engine.numbers()).into_response()
}

async fn register_phone_numbers(State(engine): App, body: Bytes) -> Response {
    let specs: OneOrMany<PhoneNumberSpec> = match parse(&body) {
        Ok(s) => s,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, e),
    };
    for spec in specs.into_vec() {
        if let Err(e) = engine.register_number(spec) {
            return admin_error(StatusCode::BAD_REQUEST, e);
        }
    }
    (StatusCode::CREATED, axum::Json(engine.numbers())).into_response()
}
