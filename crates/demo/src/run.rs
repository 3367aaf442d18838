//! `careline-demo run`: the story, from loading the hospital's data to the summary.
//!
//! 1. Generate the population (seeded) for the facilities of `CARELINE_CONFIG`.
//! 2. PUT every patient, then every appointment, through ingest.
//! 3. A few seconds later, move the appointments of the "rescheduled" scenario (version 2, a new
//!    start two hours away) and cancel those of the "cancelled" one.
//! 4. Every poll: answer as the patients on wa-sandbox, read the counts from PostgreSQL, print one
//!    progress line.
//! 5. Stop once the last message the run makes due has fallen due, every due job has an outcome,
//!    the sandbox has no webhook pending and the counts have not moved for a few polls — or at
//!    the time limit.
//! 6. Print the summary table; the verdict is the exit status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use careline_domain::facility::NetworkConfig;
use chrono::Utc;
use wa_sandbox::Stats;

use crate::ingest::{BatchReport, IngestClient, for_each_concurrently};
use crate::patients::{Answered, Patients, SandboxClient};
use crate::population::{FacilityPlan, Population, Region, Scenario};
use crate::prepare::quiet_during_demo;
use crate::progress::{Counts, read_counts};
use crate::summary::{summary_table, verdict};

/// Everything `run` needs (the CLI reads it from flags and the environment).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// `INGEST_URL`: ingest's public API.
    pub ingest_url: String,
    /// `INGEST_TOKEN`: a token with access to every facility (`ingest token create`).
    pub ingest_token: String,
    /// `DATABASE_URL`: the fleet's database, read only.
    pub database_url: String,
    /// `SANDBOX_URL`: wa-sandbox (admin API under `/_sandbox`).
    pub sandbox_url: String,
    /// `CARELINE_CONFIG`: the network the fleet runs with (the prepared copy).
    pub config_path: PathBuf,
    /// Seed of the population and of the patients' answers.
    pub seed: u64,
    /// Number of patients (one appointment each).
    pub patients: usize,
    /// Requests to ingest in flight at once.
    pub concurrency: usize,
    /// Give up waiting after this long (from the start of the run).
    pub max_duration: Duration,
    /// Between two progress lines.
    pub poll_interval: Duration,
    /// From the booking of the appointments to their reschedule/cancellation.
    pub follow_up_after: Duration,
    /// Polls with unchanged counts before the run is considered settled.
    pub stable_polls: usize,
}

/// What a run found.
#[derive(Debug)]
pub struct RunReport {
    pub counts: Counts,
    pub answered: Answered,
    pub stats: Option<Stats>,
    pub timed_out: bool,
    /// `Err(reason)` when the run failed.
    pub verdict: Result<(), String>,
}

pub async fn run(settings: RunSettings) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let config_text = std::fs::read_to_string(&settings.config_path)
        .with_context(|| format!("cannot read CARELINE_CONFIG={}", settings.config_path.display()))?;
    let config = NetworkConfig::from_toml(&config_text)
        .with_context(|| format!("CARELINE_CONFIG={} is invalid", settings.config_path.display()))?;
    for facility in config.facilities.iter().filter(|f| quiet_during_demo(f, Utc::now())) {
        println!(
            "warning: facility {} is in quiet hours now: its messages will wait (run `careline-demo prepare` first)",
            facility.id
        );
    }
    let facilities: Vec<FacilityPlan> = config
        .facilities
        .iter()
        .map(|f| FacilityPlan { id: f.id.clone(), region: Region::for_time_zone(f.time_zone) })
        .collect();
    let population = Population::generate(settings.seed, settings.patients, &facilities);
    print_plan(&population, &facilities, settings.seed);

    let ingest = IngestClient::new(&settings.ingest_url, &settings.ingest_token)?;
    let sandbox = SandboxClient::new(&settings.sandbox_url)?;
    let pool = careline_store::connect_lazy(&settings.database_url, 2).context("DATABASE_URL is invalid")?;

    let reported_at = Utc::now();
    let report = for_each_concurrently(population.patients.clone(), settings.concurrency, |p| {
        let ingest = ingest.clone();
        async move { ingest.put_patient(&p, reported_at).await }
    })
    .await;
    print_batch("patients", &report);
    if report.ok == 0 {
        bail!("ingest accepted no patient");
    }

    let booked_at = Utc::now();
    let booked = Instant::now();
    let report = for_each_concurrently(population.appointments.clone(), settings.concurrency, |a| {
        let ingest = ingest.clone();
        async move { ingest.put_appointment(&a, 1, booked_at + a.starts_in).await }
    })
    .await;
    print_batch("appointments", &report);
    if report.ok == 0 {
        bail!("ingest accepted no appointment");
    }

    let last_due = booked + population.last_due_in().to_std().unwrap_or_default() + settings.poll_interval;
    let mut patients = Patients::new(settings.seed);
    let mut follow_up_done = false;
    let mut history: Vec<Counts> = Vec::new();
    let mut warned = false;
    let timed_out = loop {
        let tick = Instant::now();
        if !follow_up_done && booked.elapsed() >= settings.follow_up_after {
            follow_up(&ingest, &population, booked_at, settings.concurrency).await;
            follow_up_done = true;
        }
        let waiting_replies = match patients.answer_new_messages(&sandbox).await {
            Ok(n) => n,
            Err(e) => {
                println!("warning: {e}");
                0
            }
        };
        let pending_webhooks = sandbox.stats().await.map(|s| s.webhooks.pending).unwrap_or(0);
        match read_counts(&pool).await {
            Ok(counts) => {
                println!("{}", counts.progress_line(started.elapsed().as_secs()));
                history.push(counts);
            }
            Err(e) if !warned => {
                println!("warning: cannot read the counts from PostgreSQL: {e}");
                warned = true;
            }
            Err(_) => {}
        }
        if started.elapsed() >= settings.max_duration {
            break true;
        }
        let settled = history.last().is_some_and(|c| {
            // An enqueued job without an outcome may be one the sender dropped as stale without a
            // trace: wait longer for it, but not forever.
            let polls = if c.in_flight == 0 { settings.stable_polls } else { settings.stable_polls * 3 };
            c.due_waiting == 0 && stable(&history, polls)
        });
        if follow_up_done && Instant::now() >= last_due && waiting_replies == 0 && pending_webhooks == 0 && settled {
            break false;
        }
        tokio::time::sleep(settings.poll_interval.saturating_sub(tick.elapsed())).await;
    };

    let counts = match read_counts(&pool).await {
        Ok(c) => c,
        Err(e) => {
            println!("warning: cannot read the final counts: {e}");
            history.pop().unwrap_or_default()
        }
    };
    let stats = match sandbox.stats().await {
        Ok(s) => Some(s),
        Err(e) => {
            println!("warning: {e}");
            None
        }
    };
    let mut verdict = verdict(&counts, stats.as_ref());
    if timed_out {
        println!(
            "stopped after {} s (--max-seconds) with {} due jobs not yet handled",
            settings.max_duration.as_secs(),
            counts.due_waiting + counts.in_flight
        );
    }
    println!("\n{}", summary_table(&counts, &patients.answered, stats.as_ref()).render().trim_end());
    if let Err(reason) = &mut verdict {
        println!("\nRESULT: FAILED: {reason}");
    } else {
        println!("\nRESULT: OK ({} messages sent, no limit violation)", counts.sent);
    }
    Ok(RunReport { counts, answered: patients.answered, stats, timed_out, verdict })
}

/// Moves the rescheduled appointments and cancels the cancelled ones (version 2 of each).
async fn follow_up(
    ingest: &IngestClient,
    population: &Population,
    booked_at: chrono::DateTime<Utc>,
    concurrency: usize,
) {
    let moved: Vec<_> =
        population.appointments.iter().filter(|a| a.scenario == Scenario::Rescheduled).cloned().collect();
    let report = for_each_concurrently(moved, concurrency, |a| {
        let ingest = ingest.clone();
        async move {
            let to = a.moved_to.unwrap_or(a.starts_in);
            ingest.put_appointment(&a, 2, booked_at + to).await
        }
    })
    .await;
    print_batch("reschedules", &report);
    let cancelled: Vec<_> =
        population.appointments.iter().filter(|a| a.scenario == Scenario::Cancelled).cloned().collect();
    let report = for_each_concurrently(cancelled, concurrency, |a| {
        let ingest = ingest.clone();
        async move { ingest.cancel_appointment(&a, 2, booked_at + a.starts_in).await }
    })
    .await;
    print_batch("cancellations", &report);
}

fn stable(history: &[Counts], polls: usize) -> bool {
    history.len() >= polls && history[history.len() - polls..].windows(2).all(|w| w[0] == w[1])
}

fn print_plan(population: &Population, facilities: &[FacilityPlan], seed: u64) {
    let without_consent = population.patients.iter().filter(|p| !p.consent).count();
    println!(
        "careline-demo: {} patients at {} facilities ({} without WhatsApp consent), seed {seed}",
        population.patients.len(),
        facilities.len(),
        without_consent
    );
    let mut line = String::from("appointments:");
    for scenario in
        [Scenario::Reminder48h, Scenario::Reminder2h, Scenario::Later, Scenario::Rescheduled, Scenario::Cancelled]
    {
        let n = population.appointments.iter().filter(|a| a.scenario == scenario).count();
        line.push_str(&format!(" {n} {};", scenario.as_str()));
    }
    println!("{}", line.trim_end_matches(';'));
}

fn print_batch(what: &str, report: &BatchReport) {
    if report.errors.is_empty() {
        println!("ingest accepted {} {what}", report.ok);
    } else {
        println!("ingest accepted {} {what}, refused {} (first: {})", report.ok, report.errors.len(), report.errors[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_stable_only_when_the_last_polls_agree() {
        let a = Counts { sent: 1, ..Counts::default() };
        let b = Counts { sent: 2, ..Counts::default() };
        assert!(!stable(&[a.clone(), a.clone()], 3));
        assert!(!stable(&[a.clone(), b.clone(), b.clone()], 3));
        assert!(stable(&[a, b.clone(), b.clone(), b], 3));
    }
}
