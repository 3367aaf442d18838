//! Patients' trust end to end: consent per purpose with its provenance, and a STOP that
//! overtakes a queue of reminders.

use std::time::Instant;

use careline_domain::Clock;
use careline_domain::consent::ConsentState;
use careline_tests::*;
use chrono::{Duration, Utc};

#[tokio::test]
async fn consent_to_campaigns_alone_sends_no_reminder_and_its_provenance_is_kept() {
    let fleet = spawn_fleet().await;
    let (bina, witness) = (phone(41), phone(42));
    let consent = serde_json::json!({
        "state": "opted_in",
        "purpose": "marketing",
        "recorded_at": (fleet.clock.now() - Duration::hours(1)).to_rfc3339(),
        "source": "front_desk",
        "evidence": "paper-form-881",
        "wording_version": "marketing-v3",
        "recorded_by": "desk-7",
    });
    fleet.ingest_patient_with_consent("P1", NORTH, &bina, consent).await;
    fleet.ingest_patient("W1", NORTH, &witness, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    fleet.ingest_appointment("W1", NORTH, "W1", 1, starts_at).await;

    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let row = fleet.wait_for_settled_send(confirmation.job_id).await;
    assert_eq!((row.state.as_str(), row.reason.as_deref()), ("suppressed", Some("no_consent")));
    fleet.wait_for_messages_to(&witness, 1).await;
    fleet.settle().await;
    assert!(fleet.messages_to(&bina).is_empty(), "campaign consent let a reminder out");

    let history = careline_store::consent::history(&fleet.pool, "P1").await.unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    let entry = &history[0];
    assert_eq!(
        (entry.channel.as_str(), entry.purpose.as_str(), entry.state.as_str(), entry.source.as_str()),
        ("whatsapp", "marketing", "opted_in", "front_desk")
    );
    assert_eq!(entry.wording_version.as_deref(), Some("marketing-v3"));
    assert_eq!(entry.evidence.as_deref(), Some("paper-form-881"));
    assert_eq!(entry.actor.as_deref(), Some("desk-7"));
    assert_eq!(entry.recorded_by, "e2e-hospital", "the API client that reported it");
}

/// Appointments booked for one patient at once: 50 confirmations queued for one number.
const QUEUED: usize = 50;

/// The sender reads consent when it takes a job and again once the job has its send slot, right
/// before the claim: jobs already in the sender's hands when the STOP is recorded do not go out.
#[tokio::test]
async fn stop_arriving_while_50_jobs_for_the_patient_are_queued_lets_no_further_template_out() {
    let mut fleet = spawn_fleet().await;
    let asha = phone(43);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    // The sender is down while the appointments are booked, so all 50 confirmations wait in its
    // queue; it comes back, and STOP arrives right after the first one.
    fleet.stop(Component::Sender).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    for n in 0..QUEUED {
        fleet.ingest_appointment(&format!("A{n}"), NORTH, "P1", 1, starts_at + Duration::minutes(n as i64)).await;
    }
    let pool = &fleet.pool;
    wait_until("every confirmation is queued", DEADLINE, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE state = 'enqueued'")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            == QUEUED as i64
    })
    .await;
    fleet.start(Component::Sender).await;
    wait_until("the first confirmation is sent", DEADLINE, || async { !fleet.templates_to(&asha).is_empty() }).await;
    let first = fleet.templates_to(&asha).remove(0);

    fleet.sandbox.type_text(&first.wa_id, "STOP").expect("the patient types STOP");
    // The moment the opt-out is visible to every reader (committed), measured from outside.
    let started = Instant::now();
    let opted_out_at = loop {
        let state = careline_store::consent::current(&fleet.pool, "P1", &asha).await.unwrap();
        if state == Some(ConsentState::OptedOut) {
            break Utc::now();
        }
        assert!(started.elapsed() < DEADLINE, "the opt-out was never recorded");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    fleet.settle().await;

    let templates = fleet.templates_to(&asha);
    let after: Vec<_> = templates.iter().filter(|m| m.accepted_at > opted_out_at).collect();
    let suppressed = fleet
        .count("SELECT count(*) FROM sends WHERE state = 'suppressed' AND reason = 'opted_out' AND $1 <> ''", "x")
        .await;
    eprintln!(
        "STOP with {QUEUED} jobs queued: {} template(s) before the opt-out, {} after it, {suppressed} suppressed",
        templates.len() - after.len(),
        after.len()
    );
    assert!(after.is_empty(), "{} template(s) accepted after the opt-out was recorded: {after:#?}", after.len());
    assert_eq!(templates.len() + suppressed as usize, QUEUED, "every job settled: sent before STOP or suppressed");
    assert!(suppressed > 0, "STOP came too late to prove anything");
    assert_eq!(fleet.texts_to(&asha).len(), 1, "exactly one acknowledgement");
}

#[tokio::test]
async fn stop_recorded_while_50_jobs_wait_in_the_sender_queue_suppresses_all_of_them() {
    let mut fleet = spawn_fleet().await;
    let asha = phone(44);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    // A first confirmation opens the chat; then the sender goes down and 50 more queue up.
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A-first", NORTH, "P1", 1, starts_at).await;
    let first = fleet.wait_for_messages_to(&asha, 1).await.remove(0);
    fleet.settle().await;
    fleet.stop(Component::Sender).await;
    for n in 0..QUEUED {
        fleet.ingest_appointment(&format!("A{n}"), NORTH, "P1", 1, starts_at + Duration::minutes(n as i64 + 1)).await;
    }
    let pool = &fleet.pool;
    wait_until("every confirmation is queued for the sender", DEADLINE, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE state = 'enqueued'")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            == QUEUED as i64 + 1
    })
    .await;

    fleet.sandbox.type_text(&first.wa_id, "stop").expect("the patient types STOP");
    wait_until("the opt-out is recorded", DEADLINE, || async {
        careline_store::consent::current(&fleet.pool, "P1", &asha).await.ok().flatten() == Some(ConsentState::OptedOut)
    })
    .await;
    fleet.start(Component::Sender).await;
    fleet.settle().await;

    assert_eq!(fleet.templates_to(&asha).len(), 1, "only the confirmation sent before STOP");
    let suppressed =
        fleet.count("SELECT count(*) FROM sends WHERE state = 'suppressed' AND reason = $1", "opted_out").await;
    assert_eq!(suppressed, QUEUED as i64, "every queued job settled as opted out");
    assert_eq!(fleet.texts_to(&asha).len(), 1, "exactly one acknowledgement");
}
