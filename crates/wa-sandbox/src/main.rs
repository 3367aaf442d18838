//! `wa-sandbox`: runs the WhatsApp Cloud API simulator configured from the environment
//! (see `SandboxSettings` and the crate README), or probes a running one.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wa_sandbox::{Sandbox, SandboxSettings};

#[derive(Debug, Parser)]
#[command(name = "wa-sandbox", version, about = "WhatsApp Cloud API simulator for Careline")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and deliver webhooks (the default).
    Serve,
    /// Exit 0 if the sandbox at SANDBOX_LISTEN_ADDR answers /healthz (for container probes).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // JSON logs on stdout (`RUST_LOG`), OTLP traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    let _telemetry = careline_telemetry::init_tracing("wa-sandbox");
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Healthcheck => healthcheck().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "wa-sandbox failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = SandboxSettings::from_env().context("reading settings")?;
    let sandbox = Sandbox::build(settings).await.context("starting")?;
    sandbox.run_until_stopped(careline_telemetry::shutdown_signal()).await.context("serving")?;
    tracing::info!("wa-sandbox stopped");
    Ok(())
}

async fn healthcheck() -> anyhow::Result<()> {
    let settings = SandboxSettings::from_env().context("reading settings")?;
    let mut addr = settings.listen_addr;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .with_context(|| format!("GET http://{addr}/healthz"))?;
    anyhow::ensure!(response.status().is_success(), "healthz answered {}", response.status());
    Ok(())
}
