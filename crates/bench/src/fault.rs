//! `make fault-run`: many jobs through R sender replicas while wa-sandbox misbehaves (5xx
//! before and after acceptance, accepted answers slower than the sender's HTTP timeout,
//! periodic bursts of 130429 and 131056), with the webhook-consumer receiving the status
//! webhooks by which unknown outcomes reconcile. Waits until every job is settled (or a
//! deadline, or nothing moves any more), then counts each job's fate from our tables, from
//! the dead-letter queue and from wa-sandbox's acceptances per `biz_opaque_callback_data`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use careline_bus::{Publisher, Topology};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use crate::fixtures::{Db, Env, Number, delete_queues, fresh_prefix, publish_all, seed, stat, write_network};
use crate::procs::{Proc, free_addr};
use crate::senders::{Fleet, start_sandbox, start_senders};

const APP_SECRET: &str = "bench-app-secret";
const VERIFY_TOKEN: &str = "bench-verify-token";
/// `send_attempts.outcome` of a call whose outcome is unknown (`ErrorClass::OutcomeUnknown`).
const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// `careline-bench fault-run` options.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    pub jobs: usize,
    pub replicas: usize,
    pub numbers: usize,
    pub mps: u32,
    pub prefetch: u16,
    /// `SENDER_HTTP_TIMEOUT_MS`; slow answers take this plus one second.
    pub http_timeout_ms: u64,
    pub http_5xx: f64,
    pub slow: f64,
    pub burst_every_ms: u64,
    pub burst_ms: u64,
    pub deadline: Duration,
    /// Stop waiting when nothing changed (settled jobs, sandbox requests) for this long.
    pub stall: Duration,
}

/// What our tables say about one job.
#[derive(Debug, Default)]
struct JobFacts {
    state: String,
    reason: Option<String>,
    error_code: Option<i32>,
    outcomes: Vec<String>,
}

async fn job_facts(db: &Db) -> anyhow::Result<HashMap<Uuid, JobFacts>> {
    type Row = (Uuid, String, Option<String>, Option<i32>, Vec<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.job_id, s.state, s.reason, s.error_code,
                array_remove(array_agg(a.outcome ORDER BY a.attempt), NULL)
         FROM sends s LEFT JOIN send_attempts a USING (job_id)
         GROUP BY s.job_id, s.state, s.reason, s.error_code",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job, state, reason, error_code, outcomes)| (job, JobFacts { state, reason, error_code, outcomes }))
        .collect())
}

async fn settled_in_db(db: &Db) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM sends WHERE state IN ('accepted', 'failed', 'suppressed')")
        .fetch_one(&db.pool)
        .await?)
}

async fn state_counts(db: &Db) -> anyhow::Result<String> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM sends GROUP BY state ORDER BY state").fetch_all(&db.pool).await?;
    Ok(rows.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "))
}

/// Messages waiting in the dead-letter queue.
async fn dead_letter_depth(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let q = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?;
    Ok(q.message_count())
}

fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Drains the dead-letter queue: job id → why it was dead-lettered (`x-first-death-reason`).
async fn drain_dead_letters(channel: &lapin::Channel, queue: &str) -> anyhow::Result<HashMap<Uuid, String>> {
    let mut out = HashMap::new();
    while let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await? {
        let delivery = message.delivery;
        let reason = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| header_text(h, "x-first-death-reason"))
            .unwrap_or_else(|| "unknown".to_owned());
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        if let Some(job) = body["event"]["data"]["job_id"].as_str().and_then(|s| s.parse().ok()) {
            out.insert(job, reason);
        }
    }
    Ok(out)
}

pub async fn run(env: &Env, opts: &FaultOptions) -> anyhow::Result<bool> {
    let dir = env.scenario_dir("fault-run")?;
    let prefix = fresh_prefix();
    let db = Db::create(env, &dir).await?;
    let result = run_in(env, opts, &dir, &db, &prefix).await;
    db.drop_unless(env.keep).await;
    delete_queues(env, &prefix).await;
    result.with_context(|| format!("fault run (logs in {})", dir.display()))
}

async fn run_in(env: &Env, opts: &FaultOptions, dir: &std::path::Path, db: &Db, prefix: &str) -> anyhow::Result<bool> {
    let numbers: Vec<Number> = (0..opts.numbers).map(|i| Number::nth(i, opts.mps)).collect();
    let config = write_network(dir, &numbers)?;

    let (webhook, webhook_admin) = (free_addr()?, free_addr()?);
    let mut vars = env.common_env(db, prefix);
    vars.extend([
        ("WEBHOOK_LISTEN_ADDR".to_owned(), webhook.to_string()),
        ("ADMIN_LISTEN_ADDR".to_owned(), webhook_admin.to_string()),
        ("WHATSAPP_APP_SECRET".to_owned(), APP_SECRET.to_owned()),
        ("WHATSAPP_VERIFY_TOKEN".to_owned(), VERIFY_TOKEN.to_owned()),
        ("DATABASE_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
    ]);
    let mut consumer = Proc::spawn(&env.bin_dir, "webhook-consumer", "webhook-consumer", &[], &vars, dir)?;
    consumer.wait_ready(&env.http, &format!("http://{webhook_admin}/readyz")).await?;

    let half = opts.http_5xx / 2.0;
    let faults: Vec<(String, String)> = [
        ("SANDBOX_WEBHOOK_URL", format!("http://{webhook}/webhook")),
        ("SANDBOX_APP_SECRET", APP_SECRET.to_owned()),
        // Only `sent` per message (no delivered/read), batched as Meta batches: the webhooks
        // that matter for reconciliation without drowning two cores in status traffic.
        ("SANDBOX_DELIVERED_PROBABILITY", "0".to_owned()),
        ("SANDBOX_WEBHOOK_BATCH_MAX", "100".to_owned()),
        ("SANDBOX_WEBHOOK_BATCH_WINDOW_MS", "200".to_owned()),
        ("SANDBOX_WEBHOOK_MAX_ATTEMPTS", "30".to_owned()),
        ("SANDBOX_FAULT_500_BEFORE_ACCEPT", half.to_string()),
        ("SANDBOX_FAULT_500_AFTER_ACCEPT", half.to_string()),
        ("SANDBOX_FAULT_SLOW_PROBABILITY", opts.slow.to_string()),
        ("SANDBOX_FAULT_SLOW_MS", (opts.http_timeout_ms + 1000).to_string()),
        ("SANDBOX_FAULT_SLOW_ACCEPTED_ONLY", "true".to_owned()),
        ("SANDBOX_FAULT_BURST_CODES", "130429,131056".to_owned()),
        ("SANDBOX_FAULT_BURST_EVERY_MS", opts.burst_every_ms.to_string()),
        ("SANDBOX_FAULT_BURST_MS", opts.burst_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Stored messages only serve introspection here; acceptances per job are counted apart.
    let (sandbox, sandbox_api, sandbox_url) = start_sandbox(env, dir, &numbers, true, 10_000, &faults).await?;
    let mut fleet = Fleet { sandbox, sandbox_api, sandbox_url, senders: Vec::new(), others: vec![consumer] };
    let result = drive(env, opts, dir, db, prefix, &config, &numbers, &mut fleet).await;
    fleet.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    env: &Env,
    opts: &FaultOptions,
    dir: &std::path::Path,
    db: &Db,
    prefix: &str,
    config: &std::path::Path,
    numbers: &[Number],
    fleet: &mut Fleet,
) -> anyhow::Result<bool> {
    let jobs = seed(&db.pool, numbers, opts.jobs).await?;
    let publisher = Arc::new(Publisher::new(env.bus(prefix), "careline-bench"));
    publisher.ensure_connected().await.context("RabbitMQ")?;
    let sender_env = vec![
        ("SENDER_PREFETCH".to_owned(), opts.prefetch.to_string()),
        ("SENDER_HTTP_TIMEOUT_MS".to_owned(), opts.http_timeout_ms.to_string()),
    ];
    fleet.senders = start_senders(env, dir, db, prefix, config, &fleet.sandbox_url, opts.replicas, &sender_env).await?;
    let started = tokio::time::Instant::now();
    publish_all(&publisher, &jobs).await?;
    eprintln!("fault run: {} jobs published in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());

    let conn = lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let dead_letters = Topology::new(prefix).dead_letters();
    let mut last_change = (0i64, 0u64, tokio::time::Instant::now());
    let mut last_report = tokio::time::Instant::now();
    let why_stopped = loop {
        fleet.ensure_running()?;
        let settled = settled_in_db(db).await? + i64::from(dead_letter_depth(&channel, &dead_letters).await?);
        let requests = stat(&fleet.sandbox_api.stats().await?, &["requests"]);
        let now = tokio::time::Instant::now();
        if settled >= opts.jobs as i64 {
            break "every job settled";
        }
        if (settled, requests) != (last_change.0, last_change.1) {
            last_change = (settled, requests, now);
        } else if now - last_change.2 > opts.stall {
            break "stalled: nothing changed";
        }
        if now - started > opts.deadline {
            break "deadline passed";
        }
        if now - last_report > Duration::from_secs(10) {
            last_report = now;
            eprintln!(
                "fault run: {:>4.0} s, settled {settled}/{} ({}), sandbox requests {requests}",
                (now - started).as_secs_f64(),
                opts.jobs,
                state_counts(db).await?
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let elapsed = started.elapsed();
    let rss: Vec<u64> = fleet.senders.iter().filter_map(Proc::peak_rss_kib).collect();
    let stats = fleet.sandbox_api.stats().await?;
    let callbacks = fleet.sandbox_api.callbacks().await?;
    let facts = job_facts(db).await?;
    let dead = drain_dead_letters(&channel, &dead_letters).await?;
    let reconciled_by_webhook: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM message_status_events WHERE job_id IS NOT NULL")
            .fetch_one(&db.pool)
            .await?;
    let _ = conn.close(200, "bye".into()).await;

    let report = classify(&jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(), &facts, &dead, &callbacks);
    println!();
    println!(
        "Fault run: {} jobs, {} sender replicas, {} numbers at {} mps; 5xx {:.0} % (half before, half after acceptance), \
         accepted-then-slow {:.0} % (answer after {} ms, sender timeout {} ms), bursts of {} ms of 130429 / 131056 in turn every {} ms",
        opts.jobs,
        opts.replicas,
        opts.numbers,
        opts.mps,
        opts.http_5xx * 100.0,
        opts.slow * 100.0,
        opts.http_timeout_ms + 1000,
        opts.http_timeout_ms,
        opts.burst_ms,
        opts.burst_every_ms,
    );
    println!("Stopped waiting after {:.0} s: {why_stopped}.", elapsed.as_secs_f64());
    println!();
    let rows: Vec<(String, String)> = report
        .lines
        .iter()
        .cloned()
        .chain([
            ("wa-sandbox: send requests".to_owned(), stat(&stats, &["requests"]).to_string()),
            (
                "wa-sandbox: injected 500 before / after acceptance, slow, burst".to_owned(),
                format!(
                    "{} / {} / {} / {}",
                    stat(&stats, &["injected", "http_500_before_accept"]),
                    stat(&stats, &["injected", "http_500_after_accept"]),
                    stat(&stats, &["injected", "slow"]),
                    stat(&stats, &["injected", "burst"])
                ),
            ),
            (
                "wa-sandbox: limit violations (throughput / pair)".to_owned(),
                format!("{} / {}", stat(&stats, &["violations", "throughput"]), stat(&stats, &["violations", "pair"])),
            ),
            ("jobs with a status webhook recorded (webhook-consumer)".to_owned(), reconciled_by_webhook.to_string()),
            (
                "peak RSS per sender replica (MiB)".to_owned(),
                rss.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(", "),
            ),
        ])
        .collect();
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(10);
    for (k, v) in &rows {
        println!("  {k:<width$}  {v}");
    }
    println!();
    for (check, ok) in &report.checks {
        println!("  [{}] {check}", if *ok { "ok" } else { "FAIL" });
    }
    Ok(report.checks.iter().all(|(_, ok)| *ok))
}

struct Report {
    lines: Vec<(String, String)>,
    checks: Vec<(String, bool)>,
}

fn classify(
    jobs: &[Uuid],
    facts: &HashMap<Uuid, JobFacts>,
    dead: &HashMap<Uuid, String>,
    callbacks: &HashMap<String, u64>,
) -> Report {
    let mut accepted_once = 0;
    let mut accepted_reconciled = 0;
    let mut accepted_after_resend = 0;
    let mut resent_after_unknown = 0;
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut suppressed: BTreeMap<String, u64> = BTreeMap::new();
    let mut dead_lettered: BTreeMap<String, u64> = BTreeMap::new();
    let mut unsettled: BTreeMap<String, u64> = BTreeMap::new();
    let (mut meta_once, mut meta_never, mut meta_dup_jobs, mut meta_extra) = (0u64, 0u64, 0u64, 0u64);
    let mut ours_accepted_meta_never = 0u64;
    let mut ours_failed_meta_accepted = 0u64;
    let mut unsettled_meta_accepted = 0u64;
    let mut dup_without_resend = 0u64;
    for job in jobs {
        let meta = callbacks.get(&job.to_string()).copied().unwrap_or(0);
        match meta {
            0 => meta_never += 1,
            1 => meta_once += 1,
            n => {
                meta_dup_jobs += 1;
                meta_extra += n - 1;
            }
        }
        let f = facts.get(job);
        let outcomes: &[String] = f.map_or(&[], |f| &f.outcomes);
        let last_unknown = outcomes.iter().rposition(|o| o == OUTCOME_UNKNOWN);
        let resent = last_unknown.is_some_and(|_| {
            let first_unknown = outcomes.iter().position(|o| o == OUTCOME_UNKNOWN).unwrap_or(0);
            first_unknown + 1 < outcomes.len()
        });
        if resent {
            resent_after_unknown += 1;
        }
        if meta > 1 && !resent {
            dup_without_resend += 1;
        }
        let state = f.map_or("no row", |f| f.state.as_str());
        let settled_by_dlq = dead.get(job);
        match state {
            "accepted" => {
                if meta == 0 {
                    ours_accepted_meta_never += 1;
                }
                let accepted_call = outcomes.iter().rposition(|o| o == "accepted");
                match (last_unknown, accepted_call) {
                    (None, _) => accepted_once += 1,
                    (Some(u), Some(a)) if a > u => accepted_after_resend += 1,
                    (Some(_), _) => accepted_reconciled += 1,
                }
            }
            "failed" | "suppressed" => {
                let f = f.expect("a row");
                let reason = match f.error_code {
                    Some(code) => format!("{} ({code})", f.reason.as_deref().unwrap_or("?")),
                    None => f.reason.clone().unwrap_or_else(|| "?".to_owned()),
                };
                if state == "failed" {
                    *failed.entry(reason).or_default() += 1;
                    if meta > 0 {
                        ours_failed_meta_accepted += 1;
                    }
                } else {
                    *suppressed.entry(reason).or_default() += 1;
                }
            }
            other => {
                if let Some(reason) = settled_by_dlq {
                    *dead_lettered.entry(reason.clone()).or_default() += 1;
                    if meta > 0 {
                        ours_failed_meta_accepted += 1;
                    }
                } else {
                    *unsettled.entry(other.to_owned()).or_default() += 1;
                    if meta > 0 {
                        unsettled_meta_accepted += 1;
                    }
                }
            }
        }
    }
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let breakdown = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            String::new()
        } else {
            format!("  ({})", m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
        }
    };
    let still_unsettled = total(&unsettled);
    let lines = vec![
        ("accepted once (no unknown outcome)".to_owned(), accepted_once.to_string()),
        ("accepted after reconciliation (status webhook, not resent)".to_owned(), accepted_reconciled.to_string()),
        ("accepted after a resend following an unknown outcome".to_owned(), accepted_after_resend.to_string()),
        ("resent after an unknown outcome (any end)".to_owned(), resent_after_unknown.to_string()),
        ("failed, by reason".to_owned(), format!("{}{}", total(&failed), breakdown(&failed))),
        ("dead-lettered, by reason".to_owned(), format!("{}{}", total(&dead_lettered), breakdown(&dead_lettered))),
        ("suppressed, by reason".to_owned(), format!("{}{}", total(&suppressed), breakdown(&suppressed))),
        (
            "still unsettled, by sends state".to_owned(),
            format!("{still_unsettled}{}  ({unsettled_meta_accepted} of them accepted by Meta)", breakdown(&unsettled)),
        ),
        ("Meta's side: jobs accepted exactly once".to_owned(), meta_once.to_string()),
        ("Meta's side: jobs never accepted".to_owned(), meta_never.to_string()),
        (
            "Meta's side: duplicates (jobs accepted > once, extra messages)".to_owned(),
            format!("{meta_dup_jobs}, {meta_extra}"),
        ),
        ("accepted in our tables, never accepted by Meta".to_owned(), ours_accepted_meta_never.to_string()),
        ("failed or dead-lettered in our tables, accepted by Meta".to_owned(), ours_failed_meta_accepted.to_string()),
    ];
    let checks = vec![
        (format!("every job settled (still unsettled: {still_unsettled})"), still_unsettled == 0),
        (
            format!("duplicates only after a resend following an unknown outcome ({dup_without_resend} otherwise)"),
            dup_without_resend == 0,
        ),
        (
            format!("no job accepted in our tables that Meta never accepted ({ours_accepted_meta_never})"),
            ours_accepted_meta_never == 0,
        ),
    ];
    Report { lines, checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: &str, outcomes: &[&str]) -> JobFacts {
        JobFacts {
            state: state.to_owned(),
            reason: None,
            error_code: None,
            outcomes: outcomes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn each_fate_is_counted_once_from_our_tables_and_metas_side() {
        let jobs: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        let mut f = HashMap::new();
        f.insert(jobs[0], facts("accepted", &["retry", "accepted"]));
        f.insert(jobs[1], facts("accepted", &[OUTCOME_UNKNOWN]));
        f.insert(jobs[2], facts("accepted", &[OUTCOME_UNKNOWN, "accepted"]));
        f.insert(jobs[3], facts("unknown", &[OUTCOME_UNKNOWN]));
        f.insert(jobs[4], facts("sending", &[]));
        let dead = HashMap::from([(jobs[4], "rejected".to_owned())]);
        let callbacks = HashMap::from([
            (jobs[0].to_string(), 1),
            (jobs[1].to_string(), 1),
            (jobs[2].to_string(), 2),
            (jobs[3].to_string(), 1),
        ]);
        let report = classify(&jobs, &f, &dead, &callbacks);
        let line = |k: &str| report.lines.iter().find(|(l, _)| l.starts_with(k)).unwrap().1.clone();
        assert_eq!(line("accepted once"), "1");
        assert_eq!(line("accepted after reconciliation"), "1");
        assert_eq!(line("accepted after a resend"), "1");
        assert_eq!(line("resent after"), "1");
        assert_eq!(line("dead-lettered"), "1  (rejected: 1)");
        assert!(line("still unsettled").starts_with("2  (no row: 1, unknown: 1)"), "{}", line("still unsettled"));
        assert_eq!(line("Meta's side: duplicates"), "1, 1");
        assert_eq!(line("Meta's side: jobs never accepted"), "2");
        assert!(!report.checks[0].1, "unsettled jobs fail the run");
        assert!(report.checks[1].1, "the duplicate came from a resend after an unknown outcome");
    }
}
