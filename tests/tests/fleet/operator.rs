//! The operator CLI against the running fleet: a send that failed for good is re-sent once its
//! cause is fixed, reaches the patient once, and cannot be re-sent a second time.

use careline_cli::jobs::{self, ResendError};
use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration;

#[tokio::test]
async fn a_failed_send_resent_by_an_operator_reaches_the_patient_exactly_once() {
    let fleet = spawn_fleet().await;
    let asha = phone(1);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    // "Meta" refuses the booking confirmation for good: the template does not exist (yet).
    fleet.sandbox.force_next_error(132_001, 1);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, fleet.clock.now() + Duration::days(3)).await;
    let job = fleet.job("A1", 1, "booking_confirmation").await;
    let failed = fleet.wait_for_settled_send(job.job_id).await;
    assert_eq!(failed.state, "failed", "{failed:?}");
    assert!(fleet.messages_to(&asha).is_empty());

    // The template is fixed; the operator re-sends.
    let context = careline_cli::Context { database_url: fleet.database_url.clone(), bus: fleet.bus.clone() };
    let resent = jobs::resend(&fleet.pool, &context, job.job_id, "e2e-operator").await.expect("resend");
    assert_eq!(resent.previous_attempts, 1);
    let sent = fleet.wait_for_messages_to(&asha, 1).await;
    assert_eq!(sent[0].biz_opaque_callback_data, Some(job.job_id.to_string()));
    let accepted = fleet.wait_for_settled_send(job.job_id).await;
    assert_eq!((accepted.state.as_str(), accepted.wamid.as_deref()), ("accepted", Some(sent[0].wamid.as_str())));

    // Now it went out, a second resend is refused and nothing more is sent.
    let again = jobs::resend(&fleet.pool, &context, job.job_id, "e2e-operator").await;
    assert!(matches!(again, Err(ResendError::Accepted(_, _))), "{again:?}");
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&asha).len(), 1);
    let timeline = jobs::timeline(&fleet.pool, job.job_id).await.expect("timeline");
    let story: Vec<&str> = timeline.entries.iter().map(|e| e.what.as_str()).collect();
    assert!(story.iter().any(|w| w.starts_with("resend by e2e-operator: previous send failed")), "{story:#?}");
    assert!(story.iter().any(|w| w.starts_with("accepted by Meta")), "{story:#?}");
}
