use std::collections::{HashMap, HashSet};
use std::time::Duration;

use careline_domain::events::JobDue;

use crate::helpers::{Fixture, Options, TestApp, eventually, phone, spawn_app_with};

const JOBS: u32 = 50;

/// 50 recipients, paced at 25 messages per second so the batch takes about two seconds.
async fn app_with_a_queued_batch() -> (TestApp, Vec<JobDue>) {
    let app = spawn_app_with(Options { throughput_mps: 25, ..Options::default() }).await;
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(app.seed(&Fixture { phone: phone(n), ..Fixture::default() }).await);
    }
    app.publish_all(&jobs).await;
    (app, jobs)
}

async fn accepted_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sends WHERE state = 'accepted'").fetch_one(&app.pool).await.unwrap()
}

async fn wait_until_all_settled(app: &TestApp, jobs: &[JobDue]) -> HashMap<uuid::Uuid, String> {
    let mut states = HashMap::new();
    for job in jobs {
        states.insert(job.job_id, app.settled(job.job_id).await.state);
    }
    states
}

fn callback_data_counts(app: &TestApp) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in app.sandbox.messages() {
        *counts.entry(message.biz_opaque_callback_data.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_sender_stopped_mid_batch_hands_back_its_jobs_and_a_new_one_sends_each_exactly_once() {
    let (mut app, jobs) = app_with_a_queued_batch().await;
    eventually(Duration::from_secs(10), "some jobs accepted", async || accepted_count(&app).await >= 10).await;

    app.stop().await;
    assert!(accepted_count(&app).await < i64::from(JOBS), "the stop came after the whole batch");
    app.start().await;
    let states = wait_until_all_settled(&app, &jobs).await;

    assert!(states.values().all(|s| s == "accepted"), "{states:?}");
    let counts = callback_data_counts(&app);
    assert_eq!(app.sandbox.messages().len(), JOBS as usize);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    let expected: HashSet<String> = jobs.iter().map(|j| j.job_id.to_string()).collect();
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected);
}

#[tokio::test]
async fn a_sender_killed_mid_batch_never_sends_a_job_twice_and_a_new_one_finishes_the_batch() {
    let (mut app, jobs) = app_with_a_queued_batch().await;
    eventually(Duration::from_secs(10), "some jobs accepted", async || accepted_count(&app).await >= 10).await;

    app.crash().await;
    assert!(accepted_count(&app).await < i64::from(JOBS), "the crash came after the whole batch");
    app.start().await;
    let states = wait_until_all_settled(&app, &jobs).await;

    let counts = callback_data_counts(&app);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    for job in &jobs {
        let sent = counts.get(&job.job_id.to_string()).copied().unwrap_or(0);
        match states[&job.job_id].as_str() {
            "accepted" => assert_eq!(sent, 1, "job {}", job.job_id),
            // Killed with its call on the wire: Meta may have it, so it is never resent.
            "unknown" => assert!(sent <= 1),
            other => panic!("job {} ended {other}", job.job_id),
        }
    }
    let unknown = states.values().filter(|s| *s == "unknown").count();
    assert!(unknown <= 2, "{unknown} jobs were caught mid-call");
    assert_eq!(app.sandbox.messages().len() + unknown_without_message(&app, &states), JOBS as usize);
}

/// Unknown jobs the sandbox never saw (killed after marking the call, before it left).
fn unknown_without_message(app: &TestApp, states: &HashMap<uuid::Uuid, String>) -> usize {
    states.iter().filter(|(id, s)| *s == "unknown" && app.messages_for(**id).is_empty()).count()
}
