//! Meta's answers that only status webhooks settle: an accepted message whose answer was lost
//! (unknown outcome), a send refused with a 5xx that never existed, and failures reported
//! asynchronously in `failed` statuses. The fleet's sender waits 3 s for a status webhook
//! before it resends an unknown outcome (once).

use std::time::Duration;

use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration as ChronoDuration;
use wa_sandbox::{FaultUpdate, ForcedError};

async fn booked(fleet: &Fleet, n: u32) -> (String, Job) {
    let who = phone(n);
    let patient = format!("P{n}");
    let appointment = format!("A{n}");
    fleet.ingest_patient(&patient, NORTH, &who, Consent::OptedIn).await;
    fleet.ingest_appointment(&appointment, NORTH, &patient, 1, fleet.clock.now() + ChronoDuration::days(3)).await;
    (who, fleet.job(&appointment, 1, "booking_confirmation").await)
}

async fn settled_to(fleet: &Fleet, job: &Job, state: &str) -> SendRow {
    wait_for(&format!("job {} {state}", job.job_id), Duration::from_secs(30), || async {
        fleet.send_row(job.job_id).await.filter(|r| r.state == state)
    })
    .await
}

#[tokio::test]
async fn an_accepted_message_whose_answer_was_lost_is_reconciled_from_its_status_webhook_and_never_resent() {
    let fleet = spawn_fleet().await;
    // Every answer arrives after the sender's 10 s timeout; the sandbox accepts first.
    fleet
        .sandbox
        .update_faults(FaultUpdate { slow_probability: Some(1.0), slow_ms: Some(12_000), ..FaultUpdate::default() })
        .unwrap();
    let (who, job) = booked(&fleet, 1).await;
    // The status webhooks come while the call is still waiting for its answer; when the call
    // times out, its unknown outcome is settled by them at once.
    let row = settled_to(&fleet, &job, "accepted").await;
    fleet.sandbox.clear_faults();
    let attempts: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM send_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job.job_id)
            .fetch_all(&fleet.pool)
            .await
            .unwrap();
    assert_eq!(attempts, ["outcome_unknown"], "one call, whose answer was lost");
    let sent = fleet.messages_to(&who);
    assert_eq!(sent.len(), 1, "reconciled, not resent");
    assert_eq!(row.wamid.as_deref(), Some(sent[0].wamid.as_str()), "the wamid comes from the webhook");
    assert_eq!(row.reason.as_deref(), Some("reconciled from a status webhook"));
    // Past the resend window, still one message.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fleet.messages_to(&who).len(), 1);
}

#[tokio::test]
async fn a_server_error_before_acceptance_is_resent_once_after_the_window_and_arrives_once() {
    let fleet = spawn_fleet().await;
    fleet.sandbox.update_faults(FaultUpdate { http_500_before_accept: Some(1.0), ..FaultUpdate::default() }).unwrap();
    let (who, job) = booked(&fleet, 2).await;
    settled_to(&fleet, &job, "unknown").await;
    fleet.sandbox.clear_faults();

    // No webhook can come (nothing was accepted): after 3 s the job is sent again, once.
    let row = settled_to(&fleet, &job, "accepted").await;
    assert_eq!(fleet.messages_to(&who).len(), 1);
    let resends: i32 = sqlx::query_scalar("SELECT resends FROM sends WHERE job_id = $1")
        .bind(job.job_id)
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(resends, 1);
    assert!(row.wamid.is_some());
}

#[tokio::test]
async fn a_server_error_after_acceptance_is_reconciled_and_a_second_unknown_outcome_fails_the_job() {
    let fleet = spawn_fleet().await;
    // Accepted, then answered 500: the status webhook settles it.
    fleet.sandbox.update_faults(FaultUpdate { http_500_after_accept: Some(1.0), ..FaultUpdate::default() }).unwrap();
    let (first, reconciled) = booked(&fleet, 3).await;
    settled_to(&fleet, &reconciled, "accepted").await;
    assert_eq!(fleet.messages_to(&first).len(), 1);

    // Refused with 500 twice, before acceptance: resent once, then failed with the reason.
    fleet.sandbox.update_faults(FaultUpdate { http_500_before_accept: Some(1.0), ..FaultUpdate::default() }).unwrap();
    let (second, given_up) = booked(&fleet, 4).await;
    let row = settled_to(&fleet, &given_up, "failed").await;
    assert_eq!(row.reason.as_deref(), Some("outcome_unknown"));
    assert!(fleet.messages_to(&second).is_empty());
}

#[tokio::test]
async fn failures_reported_in_status_webhooks_go_through_the_same_error_table() {
    let fleet = spawn_fleet().await;
    let not_on_whatsapp = phone(5);
    let transient = phone(6);
    let async_error = |code| ForcedError { code, http_status: None, count: Some(1), asynchronous: true, details: None };
    fleet.sandbox.force_recipient_error(&not_on_whatsapp, async_error(131026)).unwrap();
    fleet.sandbox.force_recipient_error(&transient, async_error(131000)).unwrap();

    let (_, unreachable_job) = booked(&fleet, 5).await;
    let row = settled_to(&fleet, &unreachable_job, "failed").await;
    assert_eq!(row.reason.as_deref(), Some("not_on_whatsapp"));
    let marked: bool =
        sqlx::query_scalar("SELECT whatsapp_unreachable_at IS NOT NULL FROM patients WHERE patient_id = 'P5'")
            .fetch_one(&fleet.pool)
            .await
            .unwrap();
    assert!(marked, "the patient is marked as not on WhatsApp");

    // A retryable code reported asynchronously: the job is handed back and sent again.
    let (_, retried_job) = booked(&fleet, 6).await;
    wait_until("a second message for the retried job", Duration::from_secs(30), || async {
        fleet.messages_to(&transient).len() == 2
    })
    .await;
    let row = settled_to(&fleet, &retried_job, "accepted").await;
    let last = fleet.messages_to(&transient).pop().unwrap();
    assert_eq!(row.wamid.as_deref(), Some(last.wamid.as_str()), "the new message is the job's");
}
