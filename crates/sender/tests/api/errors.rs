use std::time::Duration;

use wa_sandbox::FaultUpdate;

use crate::helpers::{Fixture, Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_transient_meta_error_is_retried_and_then_accepted() {
    let app = spawn_app().await;
    app.sandbox.force_next_error(131000, 1);
    let job = app.seed(&Fixture::default()).await;

    app.publish(&job).await;
    let row = app.settled(job.job_id).await;

    assert_eq!(row.state, "accepted", "{row:?}");
    assert_eq!(row.attempts, 2);
    assert_eq!(
        app.attempts(job.job_id).await,
        [(1, "retry".to_owned(), Some(131000)), (2, "accepted".to_owned(), None)]
    );
    assert_eq!(app.messages_for(job.job_id).len(), 1);
}

#[tokio::test]
async fn a_permanent_meta_error_fails_the_job_after_one_attempt() {
    let app = spawn_app().await;
    app.sandbox.force_next_error(131008, 1);
    let job = app.seed(&Fixture::default()).await;

    app.publish(&job).await;
    let row = app.settled(job.job_id).await;

    assert_eq!(row.state, "failed", "{row:?}");
    assert_eq!(row.reason.as_deref(), Some("permanent"));
    assert_eq!(row.error_code, Some(131008));
    assert_eq!(app.attempts(job.job_id).await, [(1, "permanent".to_owned(), Some(131008))]);
    assert!(app.messages_for(job.job_id).is_empty());
}

#[tokio::test]
async fn a_template_meta_does_not_know_fails_with_132001_after_one_attempt() {
    let mut options = Options::default();
    options.sandbox.templates.retain(|t| t.name != "appointment_booked");
    let app = spawn_app_with(options).await;
    let job = app.seed(&Fixture::default()).await;

    app.publish(&job).await;
    let row = app.settled(job.job_id).await;

    assert_eq!(row.state, "failed", "{row:?}");
    assert_eq!(row.error_code, Some(132001));
    assert_eq!(app.attempts(job.job_id).await, [(1, "permanent".to_owned(), Some(132001))]);
}

#[tokio::test]
async fn an_answer_slower_than_the_client_timeout_leaves_the_outcome_unknown_and_is_never_resent() {
    let app = spawn_app_with(Options { http_timeout: Duration::from_millis(400), ..Options::default() }).await;
    app.sandbox
        .update_faults(FaultUpdate { slow_probability: Some(1.0), slow_ms: Some(1500), ..FaultUpdate::default() })
        .unwrap();
    let job = app.seed(&Fixture::default()).await;

    app.publish(&job).await;
    let row = app.settled(job.job_id).await;

    assert_eq!(row.state, "unknown", "{row:?}");
    assert_eq!(app.attempts(job.job_id).await, [(1, "outcome_unknown".to_owned(), None)]);
    // The sandbox did accept it: that is exactly why it must not be sent again.
    assert_eq!(app.messages_for(job.job_id).len(), 1);
    app.sandbox.clear_faults();
    app.publish(&job).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.messages_for(job.job_id).len(), 1);
    assert_eq!(app.sandbox.stats().requests, 1);
}
