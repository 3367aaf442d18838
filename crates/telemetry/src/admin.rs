//! The admin listener: `/healthz` (the process is alive), `/readyz` (every dependency is up, so
//! Kubernetes may route work here) and `/metrics` (Prometheus text format). It binds its own
//! address so probes and scrapes never share a port with a public API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Named readiness checks, each flipped by the task that owns the dependency.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl Readiness {
    /// Readiness with these checks, all not ready yet.
    pub fn new(checks: &[&'static str]) -> Self {
        Self(Arc::new(Mutex::new(checks.iter().map(|c| (*c, false)).collect())))
    }

    pub fn set(&self, check: &'static str, ready: bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let previous = map.insert(check, ready);
        if previous != Some(ready) {
            tracing::info!(check, ready, "readiness changed");
            metrics::gauge!("careline_dependency_up", "dependency" => check).set(if ready { 1.0 } else { 0.0 });
        }
    }

    pub fn is_ready(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().all(|v| *v)
    }

    fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` fires.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { crate::metrics_handle().render() }))
        .with_state(readiness);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness.snapshot()))
}

/// The `healthcheck` verb of every binary: GET `/healthz` on the admin address, for probes that
/// exec a command (the runtime image has no shell or curl). 0.0.0.0 is reached on loopback.
pub async fn healthcheck(mut addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), check).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => anyhow::bail!("{addr}/healthz did not answer 200"),
        Ok(Err(e)) => Err(e.context(format!("{addr}/healthz unreachable"))),
        Err(_) => anyhow::bail!("{addr}/healthz timed out"),
    }
}
