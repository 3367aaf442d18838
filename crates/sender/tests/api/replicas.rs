//! Several sender replicas on one business number: together they stay inside its ceiling and
//! every recipient's pair interval (wa-sandbox enforces both and counts violations), each job
//! is sent once, and replicas may leave mid-run. Urgent jobs overtake bulk ones on a saturated
//! number.

use std::collections::HashMap;
use std::time::Duration;

use careline_domain::events::JobDue;

use crate::helpers::{Fixture, NUMBER_ID, Options, TestApp, phone, spawn_app_with};

const MPS: u32 = 20;

async fn app_at(mps: u32) -> TestApp {
    // Three debug-built senders and the sandbox in one test process on a machine that runs
    // other tests too: a request can reach the sandbox's handler tens of milliseconds after its
    // slot, more than the 1.5 % default absorbs (15 ms a second). What these tests check is
    // that replicas never share or bunch slots; the release build's margin is measured by
    // `make bench`.
    let mut options = Options { throughput_mps: mps, concurrency: 64, headroom: 0.05, ..Options::default() };
    options.sandbox.default_mps = mps;
    for number in &mut options.sandbox.phone_numbers {
        if number.id == NUMBER_ID {
            number.mps = Some(mps);
        }
    }
    spawn_app_with(options).await
}

fn counts_per_job(app: &TestApp) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in app.sandbox.messages() {
        *counts.entry(message.biz_opaque_callback_data.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

// Several runtimes' worth of work (three senders and the sandbox) on one thread would add
// scheduling delays of their own between a slot and the request's arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_numbers_ceiling_and_pair_limits_and_send_each_job_once() {
    let app = app_at(MPS).await;
    let _second = app.spawn_replica().await;
    let (third_stop, third) = app.spawn_replica().await;
    // 90 jobs for 30 recipients: three messages each, which the pair interval must space out.
    let mut jobs: Vec<JobDue> = Vec::new();
    for round in 0..3 {
        for n in 0..30 {
            let kind = ["booking_confirmation", "reminder_48h", "reminder_2h"][round];
            jobs.push(app.seed(&Fixture { phone: phone(n), kind, ..Fixture::default() }).await);
        }
    }
    let started = std::time::Instant::now();
    app.publish_all(&jobs).await;
    // One replica leaves half way through.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    third_stop.cancel();
    third.await.unwrap().unwrap();

    for job in &jobs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while app.send_row(job.job_id).await.is_none_or(|r| r.state == "sending") {
            assert!(tokio::time::Instant::now() < deadline, "job {} not settled", job.job_id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(app.send_row(job.job_id).await.unwrap().state, "accepted");
    }
    let elapsed = started.elapsed();
    let stats = app.sandbox.stats();
    assert_eq!(stats.violations.total, 0, "{:?}", stats.violations);
    assert_eq!(stats.accepted, 90);
    assert!(counts_per_job(&app).values().all(|&n| n == 1), "a job was sent twice");
    // 90 messages at 20 per second take at least 4.4 s whatever the number of replicas.
    assert!(elapsed >= Duration::from_millis(4400), "{elapsed:?}: faster than the ceiling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_jobs_overtake_bulk_reminders_on_a_saturated_number() {
    let app = app_at(10).await;
    let mut bulk = Vec::new();
    for n in 0..40 {
        bulk.push(app.seed(&Fixture { phone: phone(n), kind: "reminder_48h", ..Fixture::default() }).await);
    }
    app.publish_all(&bulk).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut urgent = Vec::new();
    for n in 100..105 {
        urgent.push(app.seed(&Fixture { phone: phone(n), kind: "booking_confirmation", ..Fixture::default() }).await);
    }
    app.publish_all(&urgent).await;
    for job in &urgent {
        assert_eq!(app.settled(job.job_id).await.state, "accepted");
    }
    let bulk_sent = bulk.iter().filter(|j| !app.messages_for(j.job_id).is_empty()).count();
    // 40 bulk reminders take 4 s at 10 per second; the urgent ones were published after 0.5 s
    // and must not wait behind the whole backlog.
    assert!(bulk_sent < 25, "{bulk_sent} bulk reminders went first");
    assert_eq!(app.sandbox.stats().violations.total, 0);
}
