//! W3C trace context across hops: HTTP headers, AMQP headers (see `careline_bus`) and
//! PostgreSQL rows (a job planned now and sent two days later stays in the trace that planned
//! it).
//!
//! Everything here goes through the global text-map propagator, which [`crate::init_tracing`]
//! sets to W3C `traceparent`/`tracestate`. When no OpenTelemetry layer is installed the spans
//! carry no context: nothing is injected, extracted parents are ignored, and these helpers
//! cost a map lookup.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";

/// `traceparent` of `span`, when it belongs to a valid (exported) trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// `traceparent` of the current span, to store next to work that continues later.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The remote parent a stored `traceparent` names (an empty context when it is malformed).
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// Makes `span` a child of the stored `traceparent`, if there is one. Call before the span is
/// first entered: afterwards the parent can no longer change.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let _ = span.set_parent(context_from_traceparent(traceparent));
    }
}

/// Writes the current span's context into outgoing HTTP headers.
pub fn inject_http_headers(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// The caller's context from incoming HTTP headers.
pub fn extract_http_headers(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Axum middleware: one `SERVER` span per request, named `{method} {route}` and carrying the
/// OpenTelemetry HTTP attributes (`http.request.method`, `http.route`, `url.path`,
/// `http.response.status_code`), child of the caller's `traceparent` when it sent one. The route
/// is the template (`/v1/appointments/{appointment_id}`), never the ids; no query string is
/// recorded (it may carry tokens).
pub async fn trace_http_request(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    // A server span's only parent is the remote caller's (`traceparent`), never whatever span
    // the listener task happens to run in.
    let span = tracing::info_span!(
        parent: None,
        "http.server.request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = request.uri().path(),
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(extract_http_headers(request.headers()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_propagated() {
        let span = tracing::info_span!("work");
        assert_eq!(traceparent_of(&span), None);
        let mut headers = HeaderMap::new();
        let _entered = span.enter();
        inject_http_headers(&mut headers);
        assert!(headers.get(TRACEPARENT).is_none());
    }

    #[test]
    fn a_stored_traceparent_becomes_a_remote_parent() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let context = context_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let span_context = context.span().span_context().clone();
        assert!(span_context.is_remote());
        assert_eq!(span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(!context_from_traceparent("not-a-traceparent").span().span_context().is_valid());
    }
}
