//! `careline-demo`: `prepare` writes the run's network configuration, `run` tells the story
//! against a running fleet (see scripts/demo.sh, started by `make demo`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use careline_demo::population::DEFAULT_PATIENTS;
use careline_demo::prepare::prepare_config;
use careline_demo::run::{RunSettings, run};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "careline-demo", about = "Drives the Careline demo against a running fleet and wa-sandbox")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the network configuration with quiet hours moved away from now (local time of each
    /// facility), so the demo does not depend on the wall clock.
    Prepare {
        #[arg(long, default_value = "deploy/demo/careline.toml")]
        template: PathBuf,
        #[arg(long, default_value = ".demo/careline.toml")]
        out: PathBuf,
    },
    /// Load patients and appointments through ingest, answer as the patients on wa-sandbox,
    /// print progress and a summary; exit 1 if nothing was sent or a limit was violated.
    Run {
        #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8080")]
        ingest_url: String,
        #[arg(long, env = "INGEST_TOKEN", hide_env_values = true)]
        ingest_token: String,
        #[arg(
            long,
            env = "DATABASE_URL",
            hide_env_values = true,
            default_value = "postgres://postgres:postgres@127.0.0.1:5432/careline"
        )]
        database_url: String,
        #[arg(long, env = "SANDBOX_URL", default_value = "http://127.0.0.1:8090")]
        sandbox_url: String,
        #[arg(long, env = "CARELINE_CONFIG", default_value = ".demo/careline.toml")]
        config: PathBuf,
        /// Seed of the population and of the patients' answers.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = DEFAULT_PATIENTS)]
        patients: usize,
        /// Requests to ingest in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Stop waiting after this many seconds.
        #[arg(long, default_value_t = 150)]
        max_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("careline-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Prepare { template, out } => {
            let text =
                std::fs::read_to_string(&template).with_context(|| format!("cannot read {}", template.display()))?;
            let prepared = prepare_config(&text, &template.display().to_string(), chrono::Utc::now())?;
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&out, prepared).with_context(|| format!("cannot write {}", out.display()))?;
            println!("careline-demo: wrote {} (quiet hours moved away from now)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            ingest_url,
            ingest_token,
            database_url,
            sandbox_url,
            config,
            seed,
            patients,
            concurrency,
            max_seconds,
        } => {
            let settings = RunSettings {
                ingest_url,
                ingest_token,
                database_url,
                sandbox_url,
                config_path: config,
                seed,
                patients,
                concurrency,
                max_duration: Duration::from_secs(max_seconds),
                poll_interval: Duration::from_secs(2),
                follow_up_after: Duration::from_secs(8),
                stable_polls: 3,
            };
            let report = run(settings).await?;
            Ok(if report.verdict.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
