use chrono::Duration as ChronoDuration;

use crate::helpers::{Fixture, TestApp, spawn_app};

/// Publishes the fixture's job and returns its settled `(state, reason)`; asserts that
/// nothing reached WhatsApp.
async fn outcome_of(app: &TestApp, fixture: Fixture) -> (String, Option<String>) {
    let job = app.seed(&fixture).await;
    app.publish(&job).await;
    let row = app.settled(job.job_id).await;
    assert!(app.messages_for(job.job_id).is_empty(), "nothing may be sent: {row:?}");
    assert!(app.attempts(job.job_id).await.is_empty());
    (row.state, row.reason)
}

fn suppressed(reason: &str) -> (String, Option<String>) {
    ("suppressed".to_owned(), Some(reason.to_owned()))
}

#[tokio::test]
async fn a_patient_without_recorded_consent_is_not_messaged() {
    let app = spawn_app().await;
    assert_eq!(outcome_of(&app, Fixture { consent: vec![], ..Fixture::default() }).await, suppressed("no_consent"));
    assert_eq!(app.sandbox.stats().requests, 0);
}

#[tokio::test]
async fn a_patient_who_opted_out_after_opting_in_is_not_messaged() {
    let app = spawn_app().await;
    let fixture = Fixture { consent: vec![("opted_in", 30), ("opted_out", 1)], ..Fixture::default() };
    assert_eq!(outcome_of(&app, fixture).await, suppressed("opted_out"));
}

#[tokio::test]
async fn a_revoked_job_is_not_sent() {
    let app = spawn_app().await;
    assert_eq!(outcome_of(&app, Fixture { job_state: "revoked", ..Fixture::default() }).await, suppressed("revoked"));
}

#[tokio::test]
async fn a_job_of_an_older_appointment_generation_is_stale() {
    let app = spawn_app().await;
    let fixture = Fixture { job_generation: 1, appointment_generation: 2, ..Fixture::default() };
    assert_eq!(outcome_of(&app, fixture).await, suppressed("stale"));
}

#[tokio::test]
async fn a_job_of_a_cancelled_appointment_is_stale() {
    let app = spawn_app().await;
    let fixture = Fixture { appointment_status: "cancelled", ..Fixture::default() };
    assert_eq!(outcome_of(&app, fixture).await, suppressed("stale"));
}

#[tokio::test]
async fn a_reminder_for_an_appointment_that_already_started_is_not_sent() {
    let app = spawn_app().await;
    let starts_at = app.clock_now() - ChronoDuration::minutes(5);
    let fixture = Fixture { kind: "reminder_2h", starts_at: Some(starts_at), ..Fixture::default() };
    assert_eq!(outcome_of(&app, fixture).await, suppressed("appointment_started"));
}

#[tokio::test]
async fn a_job_whose_patient_is_unknown_is_not_sent() {
    let app = spawn_app().await;
    let fixture = Fixture { patient_exists: false, consent: vec![], ..Fixture::default() };
    assert_eq!(outcome_of(&app, fixture).await, suppressed("unknown_patient"));
}
