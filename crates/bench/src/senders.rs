//! Sender scenarios: wa-sandbox plus N sender processes on a fresh database and prefix, jobs
//! seeded in bulk and published as `job.due`, measured from wa-sandbox's acceptances (Meta's
//! side) and from the `sends` / `send_attempts` tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use careline_bus::Publisher;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::fixtures::{
    ACCESS_TOKEN, Db, Env, Number, Sandbox, delete_queues, fresh_prefix, publish_all, publish_paced, seed, stat,
    write_network,
};
use crate::procs::{Proc, free_addr, stop_all};

/// Share of acceptances left out at each end when measuring the steady rate.
const TRIM: f64 = 0.1;

/// One sender scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub numbers: Vec<Number>,
    /// wa-sandbox enforces each number's ceiling and the 6 s pair rate; `false` lifts both.
    pub sandbox_limits: bool,
    pub replicas: usize,
    pub jobs: usize,
    /// Publish at this many jobs per second while the senders run; `None`: fill the queue
    /// first, then start the senders.
    pub paced: Option<u32>,
    /// `SENDER_PAIR_INTERVAL_MS`, when not the sender's default.
    pub pair_interval_ms: Option<u64>,
    pub prefetch: u16,
    pub deadline: Duration,
}

/// What one number achieved.
#[derive(Debug, Clone)]
pub struct NumberResult {
    pub id: String,
    pub mps: u32,
    /// Acceptances per second over the steady part (the middle 80 %).
    pub steady_rate: Option<f64>,
    pub throughput_violations: u64,
    pub pair_violations: u64,
}

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub jobs: usize,
    /// `sends` rows by state.
    pub states: BTreeMap<String, i64>,
    pub numbers: Vec<NumberResult>,
    /// All numbers together, steady part.
    pub steady_rate: Option<f64>,
    /// VmHWM of each replica, KiB.
    pub rss_kib: Vec<u64>,
    /// Due-to-sent latency of accepted jobs, seconds: p50, p99.
    pub latency: Option<(f64, f64)>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn accepted(&self) -> i64 {
        self.states.get("accepted").copied().unwrap_or(0)
    }
}

/// Rate over the middle of sorted times.
pub fn steady_rate(times: &mut [DateTime<Utc>]) -> Option<f64> {
    times.sort_unstable();
    let n = times.len();
    if n < 20 {
        return None;
    }
    let trim = (n as f64 * TRIM) as usize;
    let (first, last) = (trim, n - 1 - trim);
    let span = (times[last] - times[first]).to_std().ok()?.as_secs_f64();
    (span > 0.0).then(|| (last - first) as f64 / span)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The running processes of a scenario.
pub struct Fleet {
    pub sandbox: Proc,
    pub sandbox_api: Sandbox,
    pub sandbox_url: String,
    pub senders: Vec<Proc>,
    pub others: Vec<Proc>,
}

impl Fleet {
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.sandbox.ensure_running()?;
        for p in self.senders.iter_mut().chain(self.others.iter_mut()) {
            p.ensure_running()?;
        }
        Ok(())
    }

    pub async fn stop(self) {
        stop_all(self.senders).await;
        stop_all(self.others).await;
        self.sandbox.stop().await;
    }
}

/// The sender's default pool (`SENDER_DB_MAX_CONNECTIONS` 16; its bookkeeping is batched, so
/// the pool does not grow with its concurrency) times the replicas may take more PostgreSQL
/// connections than a shared server has (100 by default). Past `budget` connections in all,
/// each replica gets `budget / replicas` (at least 4). `--sender-env` still overrides it.
pub fn connection_budget(replicas: usize, budget: usize) -> Vec<(String, String)> {
    const DEFAULT_POOL: usize = 16;
    if replicas * DEFAULT_POOL <= budget {
        return Vec::new();
    }
    let pool = (budget / replicas.max(1)).max(4);
    vec![("SENDER_DB_MAX_CONNECTIONS".to_owned(), pool.to_string())]
}

/// Starts wa-sandbox with `extra` variables (limits, faults, webhooks).
pub async fn start_sandbox(
    env: &Env,
    dir: &std::path::Path,
    numbers: &[Number],
    limits: bool,
    max_stored: usize,
    extra: &[(String, String)],
) -> anyhow::Result<(Proc, Sandbox, String)> {
    let addr = free_addr()?;
    let phone_numbers: Vec<String> =
        numbers.iter().map(|n| format!("{}:{}:{}", n.id, n.id, if limits { n.mps } else { 0 })).collect();
    let mut vars: Vec<(String, String)> = vec![
        ("SANDBOX_LISTEN_ADDR".into(), addr.to_string()),
        ("WHATSAPP_ACCESS_TOKEN".into(), ACCESS_TOKEN.into()),
        ("SANDBOX_PHONE_NUMBERS".into(), phone_numbers.join(",")),
        ("SANDBOX_MAX_STORED_MESSAGES".into(), max_stored.max(1000).to_string()),
        ("RUST_LOG".into(), env.rust_log.clone()),
    ];
    if !limits {
        vars.push(("SANDBOX_DEFAULT_MPS".into(), "0".into()));
        vars.push(("SANDBOX_PAIR_INTERVAL_MS".into(), "0".into()));
    }
    vars.extend(extra.iter().cloned());
    let mut proc = Proc::spawn(&env.bin_dir, "wa-sandbox", "wa-sandbox", &[], &vars, dir)?;
    let url = format!("http://{addr}");
    proc.wait_ready(&env.http, &format!("{url}/healthz")).await?;
    Ok((proc, Sandbox::new(&env.http, url.clone()), url))
}

/// Starts `replicas` senders, each with its own admin port, and waits until each is ready.
#[allow(clippy::too_many_arguments)]
pub async fn start_senders(
    env: &Env,
    dir: &std::path::Path,
    db: &Db,
    prefix: &str,
    config: &std::path::Path,
    sandbox_url: &str,
    replicas: usize,
    extra: &[(String, String)],
) -> anyhow::Result<Vec<Proc>> {
    let mut senders = Vec::with_capacity(replicas);
    for r in 0..replicas {
        let admin = free_addr()?;
        let mut vars = env.common_env(db, prefix);
        vars.extend(connection_budget(replicas, env.db_connections));
        vars.extend([
            ("CARELINE_CONFIG".to_owned(), config.display().to_string()),
            ("ADMIN_LISTEN_ADDR".to_owned(), admin.to_string()),
            ("WHATSAPP_API_BASE_URL".to_owned(), sandbox_url.to_owned()),
            ("WHATSAPP_ACCESS_TOKEN".to_owned(), ACCESS_TOKEN.to_owned()),
        ]);
        vars.extend(extra.iter().cloned());
        vars.extend(env.sender_env.iter().cloned());
        let mut proc = Proc::spawn(&env.bin_dir, "sender", &format!("sender-{r}"), &[], &vars, dir)?;
        proc.wait_ready(&env.http, &format!("http://{admin}/readyz")).await?;
        senders.push(proc);
    }
    Ok(senders)
}

/// `sends` rows by state.
pub async fn states(db: &Db) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM sends GROUP BY state").fetch_all(&db.pool).await?;
    Ok(rows.into_iter().collect())
}

/// Final for the sender (settled or waiting for nothing more from it in a benchmark).
fn finished(states: &BTreeMap<String, i64>) -> i64 {
    states.iter().filter(|(s, _)| s.as_str() != "sending").map(|(_, n)| n).sum()
}

/// Due-to-sent latency (seconds, sorted) of accepted jobs: sent is the accepted attempt's
/// `attempted_at`, else the `sends` row's `updated_at`.
async fn latencies(db: &Db, due: &HashMap<Uuid, DateTime<Utc>>) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.job_id, COALESCE(a.at, s.updated_at)
         FROM sends s
         LEFT JOIN (SELECT job_id, min(attempted_at) AS at FROM send_attempts
                    WHERE outcome = 'accepted' GROUP BY job_id) a USING (job_id)
         WHERE s.state = 'accepted'",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut out: Vec<f64> = rows
        .into_iter()
        .filter_map(|(job, sent)| Some((sent - *due.get(&job)?).num_microseconds()? as f64 / 1e6))
        .collect();
    out.sort_unstable_by(f64::total_cmp);
    Ok(out)
}

pub async fn run(env: &Env, sc: &Scenario) -> anyhow::Result<Outcome> {
    let dir = env.scenario_dir(&sc.name)?;
    let prefix = fresh_prefix();
    let db = Db::create(env, &dir).await?;
    let result = run_in(env, sc, &dir, &db, &prefix).await;
    db.drop_unless(env.keep).await;
    delete_queues(env, &prefix).await;
    result.with_context(|| format!("scenario {} (logs in {})", sc.name, dir.display()))
}

async fn run_in(env: &Env, sc: &Scenario, dir: &std::path::Path, db: &Db, prefix: &str) -> anyhow::Result<Outcome> {
    let config = write_network(dir, &sc.numbers)?;
    let (sandbox, sandbox_api, sandbox_url) =
        start_sandbox(env, dir, &sc.numbers, sc.sandbox_limits, sc.jobs * 2, &[]).await?;
    let mut fleet = Fleet { sandbox, sandbox_api, sandbox_url, senders: Vec::new(), others: Vec::new() };
    let result = drive(env, sc, dir, db, prefix, &config, &mut fleet).await;
    fleet.stop().await;
    result
}

async fn drive(
    env: &Env,
    sc: &Scenario,
    dir: &std::path::Path,
    db: &Db,
    prefix: &str,
    config: &std::path::Path,
    fleet: &mut Fleet,
) -> anyhow::Result<Outcome> {
    let jobs = seed(&db.pool, &sc.numbers, sc.jobs).await?;
    let publisher = Arc::new(Publisher::new(env.bus(prefix), "careline-bench"));
    publisher.ensure_connected().await.context("RabbitMQ")?;
    let mut sender_env = vec![("SENDER_PREFETCH".to_owned(), sc.prefetch.to_string())];
    if let Some(ms) = sc.pair_interval_ms {
        sender_env.push(("SENDER_PAIR_INTERVAL_MS".to_owned(), ms.to_string()));
    }
    let started = tokio::time::Instant::now();
    let due = match sc.paced {
        None => {
            let due = publish_all(&publisher, &jobs).await?;
            fleet.senders =
                start_senders(env, dir, db, prefix, config, &fleet.sandbox_url, sc.replicas, &sender_env).await?;
            due
        }
        Some(rate) => {
            fleet.senders =
                start_senders(env, dir, db, prefix, config, &fleet.sandbox_url, sc.replicas, &sender_env).await?;
            publish_paced(Arc::clone(&publisher), &jobs, rate).await?
        }
    };
    let deadline = started + sc.deadline;
    let mut timed_out = false;
    loop {
        fleet.ensure_running()?;
        if finished(&states(db).await?) >= sc.jobs as i64 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    let rss_kib = fleet.senders.iter().filter_map(Proc::peak_rss_kib).collect();
    let stats = fleet.sandbox_api.stats().await?;
    let acceptances = fleet.sandbox_api.acceptances().await?;
    let mut by_number: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for (number, at) in &acceptances {
        by_number.entry(number.clone()).or_default().push(*at);
    }
    let numbers = sc
        .numbers
        .iter()
        .map(|n| {
            let mut times = by_number.remove(&n.id).unwrap_or_default();
            NumberResult {
                id: n.id.clone(),
                mps: n.mps,
                steady_rate: steady_rate(&mut times),
                throughput_violations: stat(&stats, &["by_number", &n.id, "throughput_violations"]),
                pair_violations: stat(&stats, &["by_number", &n.id, "pair_violations"]),
            }
        })
        .collect();
    let mut all: Vec<DateTime<Utc>> = acceptances.iter().map(|(_, at)| *at).collect();
    let lat = latencies(db, &due).await?;
    let latency = (!lat.is_empty()).then(|| (percentile(&lat, 50.0), percentile(&lat, 99.0)));
    Ok(Outcome {
        jobs: sc.jobs,
        states: states(db).await?,
        numbers,
        steady_rate: steady_rate(&mut all),
        rss_kib,
        latency,
        timed_out,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use careline_domain::facility::NetworkConfig;

    #[test]
    fn the_steady_rate_leaves_out_the_ramps() {
        let t0 = Utc::now();
        // A slow start, then 100 per second, then a slow tail.
        let mut times: Vec<DateTime<Utc>> = (0..10).map(|i| t0 + chrono::Duration::milliseconds(i * 500)).collect();
        let steady_start = t0 + chrono::Duration::seconds(5);
        times.extend((0..81).map(|i| steady_start + chrono::Duration::milliseconds(i * 10)));
        let end = *times.last().unwrap();
        times.extend((1..=10).map(|i| end + chrono::Duration::milliseconds(i * 500)));
        let rate = steady_rate(&mut times).unwrap();
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
        assert_eq!(steady_rate(&mut times[..5].to_vec()), None, "too few to say");
    }

    #[test]
    fn percentiles_pick_ranks() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 51.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn replicas_share_a_connection_budget_only_when_the_defaults_exceed_it() {
        assert!(connection_budget(1, 48).is_empty());
        assert!(connection_budget(3, 48).is_empty(), "three default pools of 16 fit in 48");
        let four = connection_budget(4, 48);
        assert_eq!(four, [("SENDER_DB_MAX_CONNECTIONS".to_owned(), "12".to_owned())]);
    }

    #[test]
    fn the_network_file_is_one_the_sender_accepts() {
        let numbers = [Number::nth(0, 80), Number::nth(1, 1_000_000)];
        let network = NetworkConfig::from_toml(&crate::fixtures::network_toml(&numbers)).unwrap();
        assert_eq!(network.facilities.len(), 2);
        assert_eq!(network.facilities[1].throughput_mps, 1_000_000);
        assert_eq!(network.facilities[0].phone_number_id, numbers[0].id);
        assert_eq!(network.facility(&numbers[1].facility()).unwrap().phone_number_id, numbers[1].id);
    }
}
