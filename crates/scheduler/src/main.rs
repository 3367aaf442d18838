//! `scheduler`: plans appointment messages and dispatches them when due.
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Careline scheduler: plans reminders and dispatches due jobs")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler (the default).
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Exit 0 if the admin listener answers /healthz.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = careline_telemetry::init_tracing("scheduler");
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let settings = scheduler::Settings::from_env()?;
            let app = scheduler::Application::build(settings).await?;
            tracing::info!(admin = %app.admin_addr(), "scheduler started");
            app.run_until_stopped(careline_telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let url = careline_telemetry::env_or(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/careline".to_owned(),
            )?;
            let pool = careline_store::connect_lazy(&url, 1)?;
            careline_store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Healthcheck => {
            let addr: std::net::SocketAddr =
                careline_telemetry::env_or("ADMIN_LISTEN_ADDR", std::net::SocketAddr::from(([127, 0, 0, 1], 9082)))?;
            careline_telemetry::healthcheck(addr).await
        }
    }
}
