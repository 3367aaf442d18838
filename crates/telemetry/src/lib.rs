//! What every Careline binary needs to be operated: JSON logs (and OpenTelemetry traces when
//! an OTLP endpoint is configured), Prometheus metrics, `/healthz` and `/readyz` on an admin
//! address separate from any public API, graceful shutdown on SIGTERM, and typed settings read
//! from environment variables.
#![forbid(unsafe_code)]

pub mod admin;
pub mod env;
pub mod shutdown;
pub mod trace_context;
pub mod tracing_setup;

pub use admin::{Readiness, healthcheck, serve_admin};
pub use env::{EnvError, env_opt, env_or, env_required};
pub use shutdown::shutdown_signal;
pub use tracing_setup::{SpanExport, TelemetryGuard, init_tracing, init_tracing_with, metrics_handle};
