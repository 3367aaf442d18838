//! Consent decides, right before each send: no consent, nothing; STOP typed on WhatsApp stops
//! what is still planned; START brings it back.

use careline_domain::Clock;
use careline_domain::consent::ConsentState;
use careline_domain::events::Event;
use careline_tests::*;
use chrono::Duration;

#[tokio::test]
async fn a_patient_without_recorded_consent_gets_nothing_and_each_job_says_why() {
    let fleet = spawn_fleet().await;
    let (bina, witness) = (phone(31), phone(32));
    fleet.ingest_patient("P1", NORTH, &bina, Consent::NotRecorded).await;
    fleet.ingest_patient("W1", NORTH, &witness, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    fleet.ingest_appointment("W1", NORTH, "W1", 1, starts_at).await;

    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let row = fleet.wait_for_settled_send(confirmation.job_id).await;
    assert_eq!((row.state.as_str(), row.reason.as_deref(), row.wamid), ("suppressed", Some("no_consent"), None));
    // The witness, booked alongside, is confirmed: the fleet did send.
    fleet.wait_for_messages_to(&witness, 1).await;

    let reminder_48h = fleet.job("A1", 1, "reminder_48h").await;
    fleet.clock.set(reminder_48h.due_at);
    let row = fleet.wait_for_settled_send(reminder_48h.job_id).await;
    assert_eq!((row.state.as_str(), row.reason.as_deref()), ("suppressed", Some("no_consent")));
    fleet.wait_for_messages_to(&witness, 2).await;
    fleet.settle().await;
    assert!(fleet.messages_to(&bina).is_empty(), "a patient without consent was messaged");
}

#[tokio::test]
async fn stop_typed_on_whatsapp_suppresses_the_next_reminder_and_start_lets_the_one_after_go() {
    let fleet = spawn_fleet().await;
    let asha = phone(33);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    let confirmation = fleet.wait_for_messages_to(&asha, 1).await.remove(0);

    fleet.sandbox.type_text(&confirmation.wa_id, "STOP").expect("the patient types STOP");
    // The hospital hears of it twice: the reply itself and the consent it changed.
    let events = fleet.wait_for_hospital_events(2).await;
    assert_eq!(consent_changes(&events), [(vec!["P1".to_owned()], ConsentState::OptedOut)], "{events:#?}");

    let reminder_48h = fleet.job("A1", 1, "reminder_48h").await;
    fleet.clock.set(reminder_48h.due_at);
    let row = fleet.wait_for_settled_send(reminder_48h.job_id).await;
    assert_eq!((row.state.as_str(), row.reason.as_deref(), row.wamid), ("suppressed", Some("opted_out"), None));

    fleet.sandbox.type_text(&confirmation.wa_id, "START").expect("the patient types START");
    let events = fleet.wait_for_hospital_events(2).await;
    assert_eq!(consent_changes(&events), [(vec!["P1".to_owned()], ConsentState::OptedIn)], "{events:#?}");

    let reminder_2h = fleet.job("A1", 1, "reminder_2h").await;
    fleet.clock.set(reminder_2h.due_at);
    wait_until("the 2 h reminder is sent", DEADLINE, || async { fleet.templates_to(&asha).len() == 2 }).await;
    let sent = fleet.templates_to(&asha);
    assert_eq!(sent[1].biz_opaque_callback_data, Some(reminder_2h.job_id.to_string()));
    fleet.settle().await;
    assert_eq!(fleet.templates_to(&asha).len(), 2, "confirmation and the 2 h reminder, nothing else");
    assert_eq!(fleet.texts_to(&asha).len(), 2, "one acknowledgement of STOP, one of START");
}

/// The consent changes among hospital events: which patients, which state.
fn consent_changes(events: &[careline_domain::events::Envelope]) -> Vec<(Vec<String>, ConsentState)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ConsentChanged(change) => Some((change.patient_ids.clone(), change.state)),
            _ => None,
        })
        .collect()
}
