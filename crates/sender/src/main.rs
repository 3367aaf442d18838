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
    /// Business numbers paused after an error every send would get (expired token, policy
    /// block, payment issue…), and resuming them once the cause is fixed.
    #[command(subcommand)]
    Numbers(Numbers),
}

#[derive(Subcommand)]
enum Numbers {
    /// List paused numbers.
    List,
    /// Pause a number by hand: its jobs wait in the delay queue until it is resumed.
    Pause {
        phone_number_id: String,
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Resume a paused number; every sender replica sees it within seconds.
    Resume { phone_number_id: String },
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
        Command::Numbers(verb) => {
            let url: String = careline_telemetry::env_or(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned(),
            )?;
            let pool = careline_store::connect_lazy(&url, 1)?;
            let sends = careline_store::sends::paused_numbers;
            match verb {
                Numbers::List => {
                    let paused = sends(&pool).await.context("reading paused numbers")?;
                    if paused.is_empty() {
                        println!("no business number is paused");
                    }
                    for (number, since, code, reason) in paused {
                        let code = code.map_or_else(|| "-".to_owned(), |c| c.to_string());
                        println!("{number}\tpaused since {since}\tcode {code}\t{}", reason.unwrap_or_default());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Numbers::Pause { phone_number_id, reason } => {
                    let paused = careline_store::sends::pause_number(&pool, &phone_number_id, None, &reason).await?;
                    println!("{phone_number_id}: {}", if paused { "paused" } else { "was already paused" });
                    Ok(ExitCode::SUCCESS)
                }
                Numbers::Resume { phone_number_id } => {
                    if careline_store::sends::resume_number(&pool, &phone_number_id).await? {
                        println!("{phone_number_id}: resumed");
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!("{phone_number_id} is not paused");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
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
