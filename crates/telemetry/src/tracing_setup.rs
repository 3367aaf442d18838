//! Logs, traces and the metrics recorder.
//!
//! Logs are JSON lines on stdout (`RUST_LOG` filters, default `info`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are also
//! exported over OTLP/HTTP protobuf; otherwise no exporter runs at all. Trace context crosses
//! hops as W3C `traceparent` (see [`crate::trace_context`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes exported spans when dropped; keep it alive for the life of `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn exports_spans(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now (tests, and before a short-lived command exits).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Where finished spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanExport {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`/v1/traces` appended), over OTLP/HTTP protobuf; neither set: no exporter at all.
    FromEnv,
    /// This OTLP/HTTP traces URL, used as is (`http://collector:4318/v1/traces`).
    Endpoint(String),
}

/// Installs the global subscriber for a binary named `service`, exporting spans when the
/// environment names an OTLP endpoint. Safe to call more than once (later calls only return a
/// guard), so tests that build several services in one process work.
pub fn init_tracing(service: &'static str) -> TelemetryGuard {
    init_tracing_with(service, SpanExport::FromEnv)
}

/// [`init_tracing`] with an explicit span export (tests point it at their own receiver).
///
/// The subscriber, the tracer provider and the W3C propagator are process-global: the first
/// call wins, so one process exports under one `service.name`.
pub fn init_tracing_with(service: &'static str, export: SpanExport) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false);
    let endpoint = match export {
        SpanExport::Endpoint(url) => Some(url),
        SpanExport::FromEnv => ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .into_iter()
            .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
            .then(String::new),
    };
    let provider = endpoint.and_then(|url| match build_provider(service, &url) {
        Ok(provider) => Some(provider),
        Err(e) => {
            // Logs still work; say so once the subscriber is up.
            eprintln!("{service}: OpenTelemetry export disabled: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    metrics_handle();
    TelemetryGuard { provider }
}

/// An OTLP/HTTP protobuf exporter behind a batch processor. An empty `url` lets the exporter
/// read `OTEL_EXPORTER_OTLP_*` itself (endpoint, headers, timeout).
fn build_provider(service: &'static str, url: &str) -> Result<SdkTracerProvider, String> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !url.is_empty() {
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("otlp-export")
        .build()
        .map_err(|e| format!("export runtime: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(OwnRuntimeExporter { inner: exporter, runtime })
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build())
}

/// Runs the OTLP exporter's HTTP calls on a runtime of its own.
///
/// The SDK's batch processor exports from a plain thread of its own (`futures` `block_on`),
/// where the async `reqwest` client finds no Tokio reactor and panics, so every span would be
/// lost. Driving each export on this small current-thread runtime fixes that without tying
/// export to the service's runtime (whose workers it would otherwise block at shutdown). Only
/// ever called from the batch thread, never from inside a runtime; the runtime is dropped with
/// the exporter, on that thread too.
#[derive(Debug)]
struct OwnRuntimeExporter {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
}

impl SpanExporter for OwnRuntimeExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.runtime.block_on(self.inner.export(batch)))
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_gauge!(
                "careline_dependency_up",
                "Whether a dependency this process needs (database, broker) is reachable: 1 up, 0 down."
            );
            handle
        })
        .clone()
}
