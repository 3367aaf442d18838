//! `GET /openapi.json`: the OpenAPI 3.1 document of ingest's HTTP API (the JSON API and the
//! FHIR endpoints), kept beside the crate as `openapi.json` and compiled in. A test checks
//! that every route the router serves is described and every described route is served.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
