//! Consent, privacy and audit commands: `audit verify`, `patient export|erase`,
//! `consent history`, `purge`, `templates lint`.
//!
//! Exit codes: 0 success, 1 the check failed (a broken chain, a template outside the
//! whitelist), 2 the command could not run (bad input, database unreachable).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use careline_store::{audit, consent, privacy};
use chrono::Utc;
use clap::{Args, Subcommand};
use sqlx::{Connection, PgConnection};

/// The database every command works on.
#[derive(Debug, Args)]
pub struct Database {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/careline",
        hide_env_values = true
    )]
    database_url: String,
}

impl Database {
    async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.database_url).await.context("connecting to PostgreSQL (DATABASE_URL)")
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walks the hash chain from the first row; reports the first broken row (exit 1) or the
    /// number of rows and the head hash.
    Verify {
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Prints everything Careline holds about the patient as JSON (subject-access request).
    Export {
        patient_id: String,
        #[command(flatten)]
        db: Database,
    },
    /// Removes the patient's contact data and message parameters; the audit chain stays
    /// verifiable. Prints what was removed.
    Erase {
        patient_id: String,
        /// Who asked for the erasure (an operator or ticket id, recorded in the audit trail).
        #[arg(long, default_value = "operator")]
        requested_by: String,
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Every consent entry of the patient (and of the patient's number), oldest first, as JSON.
    History {
        patient_id: String,
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Keep data for this many days.
    #[arg(long, env = "CARELINE_RETENTION_DAYS", default_value_t = 365)]
    retention_days: u32,
    /// Who runs the purge (recorded in the audit trail).
    #[arg(long, default_value = "retention-job")]
    requested_by: String,
    #[command(flatten)]
    db: Database,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Refuses template parameter mappings outside the whitelist (exit 1 with every problem).
    Lint {
        /// The network file.
        #[arg(env = "CARELINE_CONFIG")]
        config: PathBuf,
    },
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { db } = command;
    let mut conn = db.connect().await?;
    let report = audit::verify(&mut conn).await.context("reading the audit trail")?;
    match &report.first_broken {
        None => {
            println!("audit chain intact: {} rows, head {}", report.rows, report.head.as_deref().unwrap_or("(empty)"));
            Ok(ExitCode::SUCCESS)
        }
        Some(broken) => {
            println!(
                "audit chain BROKEN at seq {}: {} ({} rows verified before it)",
                broken.seq, broken.problem, report.rows
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn patient(command: PatientCommand) -> anyhow::Result<ExitCode> {
    match command {
        PatientCommand::Export { patient_id, db } => {
            let mut conn = db.connect().await?;
            let export = privacy::export_patient(&mut conn, &patient_id).await?;
            println!("{}", serde_json::to_string_pretty(&export)?);
        }
        PatientCommand::Erase { patient_id, requested_by, db } => {
            let mut conn = db.connect().await?;
            let mut tx = conn.begin().await?;
            let removed = privacy::erase_patient(&mut tx, &patient_id, &requested_by).await?;
            tx.commit().await?;
            println!("{}", serde_json::to_string_pretty(&removed)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn consent(command: ConsentCommand) -> anyhow::Result<ExitCode> {
    let ConsentCommand::History { patient_id, db } = command;
    let mut conn = db.connect().await?;
    let history = consent::history(&mut conn, &patient_id).await?;
    println!("{}", serde_json::to_string_pretty(&history)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn purge(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(args.retention_days));
    let mut conn = args.db.connect().await?;
    let mut tx = conn.begin().await?;
    let removed = privacy::purge(&mut tx, cutoff, &args.requested_by).await?;
    tx.commit().await?;
    println!("{}", serde_json::json!({ "cutoff": cutoff, "removed": removed }));
    Ok(ExitCode::SUCCESS)
}

pub fn templates(command: TemplatesCommand) -> anyhow::Result<ExitCode> {
    let TemplatesCommand::Lint { config } = command;
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let problems = careline_domain::template::lint(&text);
    if problems.is_empty() {
        println!("{}: every template carries whitelisted fields only", config.display());
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{}: {problem}", config.display());
    }
    Ok(ExitCode::from(1))
}
