//! A small OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, the way the OpenTelemetry Collector receives what Careline
//! exports. It keeps every span in memory so a test can assert the parent/child chain of a
//! trace and print it as a tree.
//!
//! The receiver runs on a thread and runtime of its own, so it outlives the runtime of any one
//! test (the exporter's batch thread may send after a test's runtime is gone).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One exported span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: &'static str,
    /// Whether the span ended with an error status.
    pub error: bool,
    pub start_unix_nanos: u64,
    pub attributes: BTreeMap<String, String>,
    /// `(trace id, span id)` of each linked span.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// An attribute's value as text, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver.
#[derive(Clone)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    /// Binds `127.0.0.1:0` and serves on a thread of its own until the process ends.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        std::thread::Builder::new()
            .name("otlp-receiver".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = axum::serve(listener, router).await;
                });
            })
            .expect("spawn the OTLP receiver thread");
        Self { addr, spans }
    }

    /// The URL to export traces to (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every span of one trace, oldest first.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let mut spans: Vec<ReceivedSpan> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        spans.sort_by_key(|s| s.start_unix_nanos);
        spans
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> impl IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an ExportTraceServiceRequest: {e}")).into_response(),
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(ReceivedSpan {
                service: service.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id)),
                name: span.name,
                kind: match span.kind {
                    2 => "server",
                    3 => "client",
                    4 => "producer",
                    5 => "consumer",
                    _ => "internal",
                },
                error: span.status.is_some_and(|s| s.code == 2),
                start_unix_nanos: span.start_time_unix_nano,
                attributes: attributes(&span.attributes),
                links: span.links.iter().map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id))).collect(),
            });
        }
    }
    spans.lock().unwrap_or_else(|p| p.into_inner()).extend(received);
    let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The spans of one trace as an indented tree (children in start order), with the attributes
/// named in `shown` after each span.
pub fn render_tree(spans: &[ReceivedSpan], shown: &[&str]) -> String {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        // A parent not in this set (remote, or not exported) makes the span a root here.
        let parent = span.parent_span_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nanos);
    }
    let mut out = String::new();
    if let Some(first) = spans.first() {
        let _ = writeln!(out, "trace {}", first.trace_id);
    }
    fn walk(
        out: &mut String,
        children: &BTreeMap<Option<&str>, Vec<&ReceivedSpan>>,
        parent: Option<&str>,
        depth: usize,
        shown: &[&str],
    ) {
        for span in children.get(&parent).into_iter().flatten() {
            let attrs: Vec<String> =
                shown.iter().filter_map(|k| span.attribute(k).map(|v| format!("{k}={v}"))).collect();
            let _ = writeln!(
                out,
                "{}└─ {} [{}] {}{}",
                "   ".repeat(depth),
                span.name,
                span.kind,
                attrs.join(" "),
                if span.error { " ERROR" } else { "" }
            );
            walk(out, children, Some(span.span_id.as_str()), depth + 1, shown);
        }
    }
    walk(&mut out, &children, None, 0, shown);
    out
}
