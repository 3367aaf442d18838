//! `careline-bench`: Careline's benchmark (`make bench`) and fault run (`make fault-run`).
//!
//! It drives the release binaries (sender, wa-sandbox, webhook-consumer, ingest) only through
//! their public interfaces: environment settings, the network file, `job.due` envelopes
//! published with `careline_bus::Publisher`, wa-sandbox's admin API and the `sends` /
//! `send_attempts` tables. Each scenario gets a fresh database and a fresh AMQP prefix; the
//! fixtures (patients, consent, appointments, jobs) are seeded straight into PostgreSQL in
//! bulk. See the README's "Benchmarks" section for what each line measures.
#![forbid(unsafe_code)]

mod fault;
mod fixtures;
mod hl7;
mod procs;
mod raw;
mod senders;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::fixtures::{Env, Number, fresh_prefix};
use crate::senders::{Outcome, Scenario};

#[derive(Parser)]
#[command(name = "careline-bench", about = "Careline's benchmark table and fault run")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// Where the release binaries are (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Logs and network files of the run, one directory per scenario.
    #[arg(long, global = true, default_value = "target/bench")]
    work_dir: PathBuf,
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/careline"
    )]
    database_url: String,
    #[arg(long, global = true, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// RUST_LOG of the processes started.
    #[arg(long, global = true, default_value = "warn")]
    rust_log: String,
    /// Extra environment variable for every sender process, `NAME=VALUE` (repeatable).
    #[arg(long = "sender-env", global = true, value_parser = parse_key_value)]
    sender_env: Vec<(String, String)>,
    /// Keep the databases of the run (their names are printed).
    #[arg(long, global = true)]
    keep: bool,
    /// PostgreSQL connections all sender replicas may hold together (the server is shared).
    #[arg(long, global = true, default_value_t = 48)]
    db_connections: usize,
    /// RabbitMQ's management API (lists the run's queues so that all of them are deleted).
    #[arg(long, global = true, env = "RABBITMQ_MANAGEMENT_URL", default_value = "http://guest:guest@127.0.0.1:15672/")]
    management_url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Every benchmark line, measured in one run, printed as one table.
    All(AllArgs),
    /// Faults from wa-sandbox, many jobs, then what became of each job.
    FaultRun(FaultArgs),
}

#[derive(Args)]
struct AllArgs {
    /// Only these lines (comma-separated): raw, lifted, 80, 1000, shared, latency, hl7.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Prefetch of the raw consumer and SENDER_PREFETCH of every sender.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Messages of the raw lapin baseline.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Jobs of the limits-lifted run.
    #[arg(long, default_value_t = 10_000)]
    lifted_jobs: usize,
    /// Jobs at 80 mps (30 s at the ceiling).
    #[arg(long, default_value_t = 2_400)]
    jobs_80: usize,
    /// Jobs at 1,000 mps (20 s at the ceiling).
    #[arg(long, default_value_t = 20_000)]
    jobs_1000: usize,
    /// Ceiling of each of the two shared numbers.
    #[arg(long, default_value_t = 80)]
    shared_mps: u32,
    /// Jobs of the shared run (both numbers together; 20 s at the ceilings by default).
    #[arg(long, default_value_t = 3_200)]
    shared_jobs: usize,
    /// Sender replicas of the shared run.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Jobs published per second in the latency run (one number at 1,000 mps).
    #[arg(long, default_value_t = 200)]
    latency_rate: u32,
    /// Jobs of the latency run.
    #[arg(long, default_value_t = 3_000)]
    latency_jobs: usize,
    /// SIU messages per MLLP measurement (over 1, then over 8 connections).
    #[arg(long, default_value_t = 2_000)]
    hl7_messages: usize,
}

#[derive(Args)]
struct FaultArgs {
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Business numbers the jobs are spread over.
    #[arg(long, default_value_t = 2)]
    numbers: usize,
    /// Ceiling of each number (enforced by wa-sandbox).
    #[arg(long, default_value_t = 1000)]
    mps: u32,
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// SENDER_HTTP_TIMEOUT_MS; slow answers come one second later.
    #[arg(long, default_value_t = 2000)]
    http_timeout_ms: u64,
    /// Share of sends answered 5xx (half before acceptance, half after).
    #[arg(long, default_value_t = 0.20)]
    http_5xx: f64,
    /// Share of accepted sends answered after the sender's timeout.
    #[arg(long, default_value_t = 0.05)]
    slow: f64,
    /// A burst of forced 130429, then of 131056, … every this many milliseconds.
    #[arg(long, default_value_t = 5_000)]
    burst_every_ms: u64,
    /// How long each burst refuses every send.
    #[arg(long, default_value_t = 250)]
    burst_ms: u64,
    /// Stop waiting for settlement after this many seconds.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
    /// Stop waiting when nothing moved for this many seconds.
    #[arg(long, default_value_t = 180)]
    stall_secs: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("'{s}' names no variable"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("careline-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let c = cli.common;
    let bin_dir = match c.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?.parent().context("no directory for this binary")?.to_path_buf(),
    };
    let run_dir = c.work_dir.join(chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let env = Env {
        bin_dir,
        work_dir: std::path::absolute(&run_dir)?,
        database_url: c.database_url,
        amqp_url: c.amqp_url,
        rust_log: c.rust_log,
        sender_env: c.sender_env,
        keep: c.keep,
        queue_expires_ms: match &cli.command {
            Command::All(_) => 600_000,
            Command::FaultRun(a) => u32::try_from((a.deadline_secs + 600) * 1000).unwrap_or(u32::MAX),
        },
        management_url: c.management_url,
        db_connections: c.db_connections,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
    };
    eprintln!("careline-bench: logs in {}", env.work_dir.display());
    match cli.command {
        Command::All(args) => all(&env, &args).await.map(|()| true),
        Command::FaultRun(a) => {
            let opts = fault::FaultOptions {
                jobs: a.jobs,
                replicas: a.replicas,
                numbers: a.numbers,
                mps: a.mps,
                prefetch: a.prefetch,
                http_timeout_ms: a.http_timeout_ms,
                http_5xx: a.http_5xx,
                slow: a.slow,
                burst_every_ms: a.burst_every_ms,
                burst_ms: a.burst_ms,
                deadline: Duration::from_secs(a.deadline_secs),
                stall: Duration::from_secs(a.stall_secs),
            };
            fault::run(&env, &opts).await
        }
    }
}

/// One line of the table.
struct Row {
    what: String,
    measured: String,
    ratio: String,
    goal: String,
    met: String,
}

fn row(what: impl Into<String>, measured: impl Into<String>) -> Row {
    Row { what: what.into(), measured: measured.into(), ratio: "—".into(), goal: "—".into(), met: "".into() }
}

fn yes_no(ok: bool) -> String {
    if ok { "yes".into() } else { "**no**".into() }
}

fn mib(kib: &[u64]) -> String {
    if kib.is_empty() {
        return "?".into();
    }
    kib.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(" / ")
}

fn rate(r: Option<f64>) -> String {
    r.map_or("?".into(), |r| format!("{r:.1}"))
}

/// A note for outcomes that did not finish or did not all go out.
fn incomplete(o: &Outcome) -> String {
    let mut notes = Vec::new();
    if o.timed_out {
        notes.push(format!("timed out after {:.0} s", o.elapsed.as_secs_f64()));
    }
    let accepted = o.accepted();
    if accepted < o.jobs as i64 {
        notes.push(format!("{accepted}/{} accepted", o.jobs));
    }
    if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) }
}

fn ceiling_rows(label: &str, o: &Outcome, rss: &mut Vec<String>) -> Vec<Row> {
    let mut rows = Vec::new();
    for n in &o.numbers {
        let ratio = n.steady_rate.map(|r| r / f64::from(n.mps));
        let violations = n.throughput_violations + n.pair_violations;
        let ok = ratio.is_some_and(|r| r >= 0.98) && violations == 0;
        let what = if o.numbers.len() > 1 { format!("{label}: number {}", n.id) } else { label.to_owned() };
        rows.push(Row {
            what,
            measured: format!(
                "{} msg/s; violations {} throughput / {} pair{}",
                rate(n.steady_rate),
                n.throughput_violations,
                n.pair_violations,
                incomplete(o)
            ),
            ratio: ratio.map_or("?".into(), |r| format!("{r:.3} of ceiling")),
            goal: "≥ 0.98, 0 violations".into(),
            met: yes_no(ok),
        });
    }
    rss.push(format!("{label}: {}", mib(&o.rss_kib)));
    rows
}

async fn all(env: &Env, a: &AllArgs) -> anyhow::Result<()> {
    let wanted = |line: &str| a.only.is_empty() || a.only.iter().any(|o| o == line);
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    let started = std::time::Instant::now();

    let mut raw = None;
    if wanted("raw") || wanted("lifted") || wanted("hl7") {
        eprintln!("raw lapin baseline: {} messages", a.raw_messages);
        let prefix = fresh_prefix();
        let r = raw::measure(&env.amqp_url, &prefix, a.raw_messages, a.prefetch).await?;
        rows.push(row(
            format!("raw lapin consume + ack (quorum queue, prefetch {}, one ack per message)", a.prefetch),
            format!("{:.0} msg/s", r.consume_ack),
        ));
        rows.push(row(
            "raw lapin confirmed publish (quorum queue, 1,000 in flight)",
            format!("{:.0} msg/s", r.publish),
        ));
        raw = Some(r);
    }

    let scenario = |name: &str, numbers: Vec<Number>, limits: bool, replicas: usize, jobs: usize| Scenario {
        name: name.to_owned(),
        numbers,
        sandbox_limits: limits,
        replicas,
        jobs,
        paced: None,
        pair_interval_ms: None,
        prefetch: a.prefetch,
        deadline: Duration::from_secs(120),
    };

    if wanted("lifted") {
        eprintln!("sender, limits lifted: {} jobs", a.lifted_jobs);
        let mut sc = scenario("lifted", vec![Number::nth(0, 1_000_000)], false, 1, a.lifted_jobs);
        sc.pair_interval_ms = Some(1);
        sc.deadline = Duration::from_secs(60 + a.lifted_jobs as u64 / 20);
        let o = senders::run(env, &sc).await?;
        let ratio = match (o.steady_rate, raw) {
            (Some(r), Some(raw)) => Some(r / raw.consume_ack),
            _ => None,
        };
        rows.push(Row {
            what: "sender, limits lifted (1 replica; ceiling 1,000,000 mps, pair interval 1 ms, sandbox unlimited)"
                .into(),
            measured: format!("{} jobs/s{}", rate(o.steady_rate), incomplete(&o)),
            ratio: ratio.map_or("?".into(), |r| format!("{r:.3} of raw consume + ack")),
            goal: "≥ 0.5".into(),
            met: yes_no(ratio.is_some_and(|r| r >= 0.5)),
        });
        rss.push(format!("limits lifted: {}", mib(&o.rss_kib)));
    }

    for (line, mps, jobs) in [("80", 80u32, a.jobs_80), ("1000", 1000, a.jobs_1000)] {
        if !wanted(line) {
            continue;
        }
        eprintln!("one number at {mps} mps: {jobs} jobs");
        let mut sc = scenario(&format!("ceiling-{mps}"), vec![Number::nth(0, mps)], true, 1, jobs);
        sc.deadline = Duration::from_secs(60 + 3 * jobs as u64 / u64::from(mps));
        let o = senders::run(env, &sc).await?;
        rows.extend(ceiling_rows(&format!("1 number at {mps} mps (1 replica)"), &o, &mut rss));
    }

    if wanted("shared") {
        eprintln!("{} replicas sharing 2 numbers at {} mps: {} jobs", a.replicas, a.shared_mps, a.shared_jobs);
        let numbers = vec![Number::nth(0, a.shared_mps), Number::nth(1, a.shared_mps)];
        let mut sc = scenario("shared", numbers, true, a.replicas, a.shared_jobs);
        sc.deadline = Duration::from_secs(60 + 6 * a.shared_jobs as u64 / (2 * u64::from(a.shared_mps)));
        let o = senders::run(env, &sc).await?;
        rows.extend(ceiling_rows(
            &format!("{} replicas sharing 2 numbers at {} mps", a.replicas, a.shared_mps),
            &o,
            &mut rss,
        ));
    }

    if wanted("latency") {
        eprintln!("latency: {} jobs at {} jobs/s", a.latency_jobs, a.latency_rate);
        let mut sc = scenario("latency", vec![Number::nth(0, 1000)], true, 1, a.latency_jobs);
        sc.paced = Some(a.latency_rate);
        sc.deadline = Duration::from_secs(60 + 3 * a.latency_jobs as u64 / u64::from(a.latency_rate.max(1)));
        let o = senders::run(env, &sc).await?;
        rows.push(row(
            format!("due-to-sent latency, {} jobs/s published onto one 1,000 mps number (1 replica)", a.latency_rate),
            match o.latency {
                Some((p50, p99)) => format!("p50 {:.0} ms, p99 {:.0} ms{}", p50 * 1000.0, p99 * 1000.0, incomplete(&o)),
                None => format!("?{}", incomplete(&o)),
            },
        ));
        rss.push(format!("latency: {}", mib(&o.rss_kib)));
    }

    if !rss.is_empty() {
        rows.push(row("peak RSS (VmHWM) per sender replica, MiB", rss.join("; ")));
    }

    if wanted("hl7") {
        eprintln!("HL7 SIU over MLLP: {} messages over 1, then over 8 connections", a.hl7_messages);
        let h = hl7::measure(env, a.hl7_messages).await?;
        for (label, value) in [("1 MLLP connection", h.one), ("8 MLLP connections", h.eight)] {
            let ratio = raw.map(|r| value / r.publish);
            rows.push(Row {
                what: format!("HL7 SIU^S12 through ingest, {label} (ACK after the broker's confirm)"),
                measured: format!("{value:.0} msg/s"),
                ratio: ratio.map_or("?".into(), |r| format!("{r:.3} of raw publish")),
                goal: "≥ 0.5".into(),
                met: yes_no(ratio.is_some_and(|r| r >= 0.5)),
            });
        }
    }

    println!();
    println!(
        "Careline benchmark, one run ({}, {} cores, {:.0} s)",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("| line | measured | ratio | goal | met |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} | {} |", r.what, r.measured, r.ratio, r.goal, r.met);
    }
    Ok(())
}
