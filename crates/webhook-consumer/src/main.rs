#![forbid(unsafe_code)]
//! `webhook-consumer`: receives Meta's webhooks and records what they say.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_consumer::{Application, SERVICE, Settings};

#[derive(Parser)]
#[command(name = "webhook-consumer", about = "Receives WhatsApp webhooks for Careline")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook endpoint and process stored webhooks (the default).
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Exit 0 if the admin listener's /healthz answers 200, else 1.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
        Command::Migrate => {
            let _telemetry = careline_telemetry::init_tracing(SERVICE);
            let url: String = careline_telemetry::env_or(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned(),
            )?;
            let pool = careline_store::connect_lazy(&url, 1).context("DATABASE_URL")?;
            careline_store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Healthcheck => {
            let default: SocketAddr = webhook_consumer::settings::DEFAULT_ADMIN_LISTEN_ADDR.parse()?;
            let mut addr: SocketAddr = careline_telemetry::env_or("ADMIN_LISTEN_ADDR", default)?;
            if addr.ip().is_unspecified() {
                addr.set_ip([127, 0, 0, 1].into());
            }
            if healthz(addr).await.unwrap_or(false) { Ok(()) } else { std::process::exit(1) }
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let _telemetry = careline_telemetry::init_tracing(SERVICE);
    let settings = Settings::from_env()?;
    let shutdown = careline_telemetry::shutdown_signal();
    let app = Application::build(settings).await?;
    tracing::info!(public = %app.public_addr(), admin = %app.admin_addr(), "webhook-consumer listening");
    app.run_until_stopped(shutdown).await
}

/// A minimal HTTP/1.0 GET, so the probe needs no HTTP client.
async fn healthz(addr: SocketAddr) -> std::io::Result<bool> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(3), probe).await.unwrap_or(Ok(false))
}
