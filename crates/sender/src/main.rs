//! `sender`: sends due jobs through the WhatsApp Cloud API.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Careline sender: sends due reminders through the WhatsApp Cloud API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume due jobs and send them (the default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Exit 0 if the admin listener answers /healthz (for container probes).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let _telemetry = careline_telemetry::init_tracing("sender");
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let settings = sender::Settings::from_env()?;
            let app = sender::Application::build(settings).await?;
            tracing::info!(admin = %app.admin_addr(), "sender started");
            let outcome = app.run_until_stopped(careline_telemetry::shutdown_signal()).await;
            match &outcome {
                Ok(()) => tracing::info!("sender stopped"),
                Err(e) => tracing::error!(error = %e, "sender stopped with an error"),
            }
            outcome.map(|()| ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let url: String = careline_telemetry::env_or(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned(),
            )?;
            let pool = careline_store::connect_lazy(&url, 1)?;
            careline_store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck => {
            let mut addr: SocketAddr =
                careline_telemetry::env_or("ADMIN_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 9083)))?;
            if addr.ip().is_unspecified() {
                addr.set_ip(Ipv4Addr::LOCALHOST.into());
            }
            let healthy = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
