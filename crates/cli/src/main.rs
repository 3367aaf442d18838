//! `careline`: the operator command line. Thin: each command group lives in its own module
//! and calls the library crates; output goes to stdout (JSON where a program will read it),
//! problems to stderr with a non-zero exit code.
#![forbid(unsafe_code)]

mod privacy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "careline", version, about = "Careline operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audit(command) => privacy::audit(command).await,
        Command::Patient(command) => privacy::patient(command).await,
        Command::Consent(command) => privacy::consent(command).await,
        Command::Purge(args) => privacy::purge(args).await,
        Command::Templates(command) => privacy::templates(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
