//! `careline`: the operator's command line. Thin: each command group lives in its own module
//! (dead letters and jobs in the library, privacy here) and calls the library crates; output
//! goes to stdout (JSON where a program will read it), problems to stderr with a non-zero exit
//! code.
#![forbid(unsafe_code)]

mod privacy;

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
    /// The hash-chained audit trail.
    #[command(subcommand)]
    Audit(privacy::AuditCommand),
    /// One patient's data: subject-access export, erasure.
    #[command(subcommand)]
    Patient(privacy::PatientCommand),
    /// A patient's consent history with its provenance.
    #[command(subcommand)]
    Consent(privacy::ConsentCommand),
    /// Removes contact data and message parameters older than the retention period.
    Purge(privacy::PurgeArgs),
    /// Checks template parameter mappings against the PHI whitelist.
    #[command(subcommand)]
    Templates(privacy::TemplatesCommand),
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
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        let queues = |command| async move {
            let context = careline_cli::Context::from_env()?;
            let mut out = std::io::stdout().lock();
            match command {
                Command::DeadLetters(command) => careline_cli::deadletters::run(command, &context, &mut out).await?,
                Command::Jobs(command) => careline_cli::jobs::run(command, &context, &mut out).await?,
                _ => unreachable!("only queue and job commands come here"),
            }
            anyhow::Ok(ExitCode::SUCCESS)
        };
        match cli.command {
            command @ (Command::DeadLetters(_) | Command::Jobs(_)) => queues(command).await,
            Command::Audit(command) => privacy::audit(command).await,
            Command::Patient(command) => privacy::patient(command).await,
            Command::Consent(command) => privacy::consent(command).await,
            Command::Purge(args) => privacy::purge(args).await,
            Command::Templates(command) => privacy::templates(command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("careline: {e:#}");
            ExitCode::from(2)
        }
    }
}
