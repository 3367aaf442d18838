use std::time::Duration;

use crate::helpers::{Fixture, PAIR_INTERVAL, spawn_app};

#[tokio::test]
async fn two_jobs_for_one_recipient_are_spaced_by_the_pair_interval() {
    let app = spawn_app().await;
    let first = app.seed(&Fixture::default()).await;
    let second = app.seed(&Fixture { kind: "reminder_48h", ..Fixture::default() }).await;

    app.publish_all(&[first.clone(), second.clone()]).await;
    assert_eq!(app.settled(first.job_id).await.state, "accepted");
    assert_eq!(app.settled(second.job_id).await.state, "accepted");

    let mut times: Vec<_> =
        [first.job_id, second.job_id].into_iter().map(|id| app.messages_for(id).remove(0).accepted_at).collect();
    times.sort();
    let gap = (times[1] - times[0]).to_std().unwrap();
    // The sandbox stamps acceptance, after the network hop: allow a few ms of jitter.
    assert!(gap >= PAIR_INTERVAL - Duration::from_millis(20), "messages {gap:?} apart");
    let stats = app.sandbox.stats();
    assert_eq!(stats.violations.pair, 0);
    assert_eq!(stats.violations.total, 0);
    assert_eq!(stats.accepted, 2);
}

#[tokio::test]
async fn different_recipients_do_not_wait_for_each_other() {
    let app = spawn_app().await;
    let mut jobs = Vec::new();
    for n in 0..5 {
        jobs.push(app.seed(&Fixture { phone: crate::helpers::phone(n), ..Fixture::default() }).await);
    }

    app.publish_all(&jobs).await;
    for job in &jobs {
        assert_eq!(app.settled(job.job_id).await.state, "accepted");
    }

    // Five different recipients: none waits out another's pair interval, so all five are
    // accepted within one interval of each other (the sandbox stamps each acceptance).
    let times: Vec<_> = jobs.iter().map(|job| app.messages_for(job.job_id).remove(0).accepted_at).collect();
    let spread = (*times.iter().max().unwrap() - *times.iter().min().unwrap()).to_std().unwrap();
    assert!(spread < PAIR_INTERVAL, "five recipients accepted {spread:?} apart");
    let stats = app.sandbox.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.violations.total, 0);
}
