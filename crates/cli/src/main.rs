//! `careline`: the operator's command line. See the library's docs for each command group.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Careline operator tools. Reads DATABASE_URL, AMQP_URL and AMQP_PREFIX like the services.
#[derive(Debug, Parser)]
#[command(name = "careline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The dead-letter queue: list without losing anything, redrive.
    #[command(subcommand)]
    DeadLetters(careline_cli::deadletters::Command),
    /// Message jobs: timeline, resend after a failed send.
    #[command(subcommand)]
    Jobs(careline_cli::jobs::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("careline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let context = careline_cli::Context::from_env()?;
        let mut out = std::io::stdout().lock();
        match cli.command {
            Command::DeadLetters(command) => careline_cli::deadletters::run(command, &context, &mut out).await,
            Command::Jobs(command) => careline_cli::jobs::run(command, &context, &mut out).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("careline: {e:#}");
            ExitCode::FAILURE
        }
    }
}
