#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ingest::{Application, Settings, tokens_cli};
use uuid::Uuid;

/// Careline ingest: the JSON API hospital systems report patients and appointments to.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// GET the admin /healthz; exit 0 when healthy (for container probes).
    Healthcheck,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; the token itself is printed once, as the last line of stdout.
    Create {
        /// Who will hold it (reported as `reported_by` on its events).
        #[arg(long)]
        source: String,
        /// Comma-separated facility ids, or '*' for every facility.
        #[arg(long, value_delimiter = ',', required = true)]
        facilities: Vec<String>,
        /// Expire the token after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List every token (never the secrets).
    List,
    /// Revoke a token by its id.
    Revoke { token_id: Uuid },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run().await,
            Command::Migrate => migrate().await,
            Command::Healthcheck => healthcheck().await,
            Command::Token(command) => token(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingest failed");
            eprintln!("ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let _telemetry = careline_telemetry::init_tracing("ingest");
    let settings = Settings::from_env()?;
    let shutdown = careline_telemetry::shutdown_signal();
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown).await
}

async fn migrate() -> anyhow::Result<()> {
    let _telemetry = careline_telemetry::init_tracing("ingest");
    let settings = Settings::from_env()?;
    let pool = careline_store::connect_lazy(&settings.database_url, 1)?;
    careline_store::migrate(&pool).await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn healthcheck() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let mut addr = settings.admin_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .context("healthcheck timed out")?
        .with_context(|| format!("connecting to the admin listener at {addr}"))?;
    anyhow::ensure!(response.starts_with(b"HTTP/1.1 200"), "admin /healthz did not answer 200");
    Ok(())
}

/// Token verbs keep stdout for their result (a token, a table) and log to stderr.
async fn token(command: TokenCommand) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let settings = Settings::from_env()?;
    let pool = careline_store::connect_lazy(&settings.database_url, 1)?;
    match command {
        TokenCommand::Create { source, facilities, expires_in_days } => {
            let created = tokens_cli::create_token(&pool, &source, &facilities, expires_in_days).await?;
            eprintln!(
                "token_id {} created for source '{}'; the token is shown only once:",
                created.token_id,
                source.trim()
            );
            println!("{}", created.token);
        }
        TokenCommand::List => {
            let tokens = tokens_cli::list(&pool).await.context("listing tokens")?;
            let now = chrono::Utc::now();
            println!(
                "{:<36}  {:<20}  {:<8}  {:<32}  {:<32}  facilities",
                "token_id", "source", "state", "created_at", "expires_at"
            );
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.is_active(now) {
                    "active"
                } else {
                    "expired"
                };
                let expires = t.expires_at.map_or("never".to_owned(), |at| at.to_rfc3339());
                println!(
                    "{:<36}  {:<20}  {:<8}  {:<32}  {:<32}  {}",
                    t.token_id,
                    t.source,
                    state,
                    t.created_at.to_rfc3339(),
                    expires,
                    t.facilities.join(",")
                );
            }
        }
        TokenCommand::Revoke { token_id } => {
            let revoked = tokens_cli::revoke(&pool, token_id, chrono::Utc::now()).await.context("revoking token")?;
            anyhow::ensure!(revoked, "no active token with id {token_id}");
            eprintln!("token {token_id} revoked (cached lookups expire within INGEST_TOKEN_CACHE_SECONDS)");
        }
    }
    Ok(())
}
