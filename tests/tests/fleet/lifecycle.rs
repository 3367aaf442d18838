//! An appointment's whole life: confirmation, both reminders, statuses, the patient's answer.

use std::collections::BTreeSet;

use careline_domain::Clock;
use careline_domain::events::Event;
use careline_domain::reply::ReplyAction;
use careline_tests::*;
use chrono::Duration;

#[tokio::test]
async fn a_booked_appointment_gets_one_confirmation_and_each_reminder_once_and_the_patients_confirm_reaches_the_hospital()
 {
    let fleet = spawn_fleet().await;
    let asha = phone(1);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;

    let plan = fleet.jobs("A1").await;
    let kinds: Vec<(&str, &str)> = plan.iter().map(|j| (j.kind.as_str(), j.state.as_str())).collect();
    assert_eq!(kinds.len(), 3, "{plan:#?}");
    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let reminder_48h = fleet.job("A1", 1, "reminder_48h").await;
    let reminder_2h = fleet.job("A1", 1, "reminder_2h").await;
    assert_eq!(reminder_48h.due_at, starts_at - Duration::hours(48));
    assert_eq!(reminder_2h.due_at, starts_at - Duration::hours(2));

    // The confirmation goes out now, once.
    let sent = fleet.wait_for_messages_to(&asha, 1).await;
    assert_eq!(sent[0].template.as_deref(), Some(BOOKED_TEMPLATE));
    assert_eq!(sent[0].biz_opaque_callback_data, Some(confirmation.job_id.to_string()));
    assert_eq!(sent[0].phone_number_id, NORTH_NUMBER);
    assert_eq!(sent[0].params[0], FIRST_NAME);

    // 48 hours before: the 48 h reminder, once.
    fleet.clock.set(reminder_48h.due_at);
    let sent = fleet.wait_for_messages_to(&asha, 2).await;
    assert_eq!(sent[1].template.as_deref(), Some(REMINDER_TEMPLATE));
    assert_eq!(sent[1].biz_opaque_callback_data, Some(reminder_48h.job_id.to_string()));
    assert_eq!(sent[1].params, [FIRST_NAME, &sent[1].params[1], CLINICIAN, "North General"]);

    // 2 hours before: the 2 h reminder, once.
    fleet.clock.set(reminder_2h.due_at);
    let sent = fleet.wait_for_messages_to(&asha, 3).await;
    assert_eq!(sent[2].template.as_deref(), Some(SOON_TEMPLATE));
    assert_eq!(sent[2].biz_opaque_callback_data, Some(reminder_2h.job_id.to_string()));
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&asha).len(), 3);
    assert_eq!(fleet.sandbox.messages().len(), 3);
    assert_eq!(fleet.sandbox.stats().violations.total, 0);

    // Every message was delivered and read, and the webhook-consumer recorded it against its job.
    for (message, job) in sent.iter().zip([&confirmation, &reminder_48h, &reminder_2h]) {
        let row = fleet.send_row(job.job_id).await.expect("a sends row");
        assert_eq!((row.state.as_str(), row.wamid.as_deref()), ("accepted", Some(message.wamid.as_str())));
        let delivery: (String, Option<uuid::Uuid>) =
            sqlx::query_as("SELECT status, job_id FROM message_delivery WHERE wamid = $1")
                .bind(&message.wamid)
                .fetch_one(&fleet.pool)
                .await
                .expect("a message_delivery row");
        assert_eq!(delivery, ("read".to_owned(), Some(job.job_id)));
        let statuses: BTreeSet<String> =
            sqlx::query_scalar("SELECT status FROM message_status_events WHERE wamid = $1")
                .bind(&message.wamid)
                .fetch_all(&fleet.pool)
                .await
                .expect("status events")
                .into_iter()
                .collect();
        assert_eq!(statuses, BTreeSet::from(["sent".to_owned(), "delivered".to_owned(), "read".to_owned()]));
    }

    // The patient taps Confirm on the last message.
    let last = &sent[2];
    assert_eq!(last.buttons[0].title, "Confirm");
    fleet.sandbox.tap_button(&last.wamid, 0).expect("tap Confirm");
    let pool = &fleet.pool;
    wait_until("the appointment is confirmed", DEADLINE, || async {
        let response: Option<String> =
            sqlx::query_scalar("SELECT patient_response FROM appointments WHERE appointment_id = 'A1'")
                .fetch_one(pool)
                .await
                .unwrap_or(None);
        response.as_deref() == Some("confirmed")
    })
    .await;
    let events = fleet.wait_for_hospital_events(1).await;
    let Event::PatientReplied(reply) = &events[0].event else {
        panic!("expected patient.replied, got {:?}", events[0].event);
    };
    assert_eq!(reply.action, ReplyAction::Confirm);
    assert_eq!(reply.appointment_id.as_deref(), Some("A1"));
    assert_eq!(reply.job_id, Some(reminder_2h.job_id));
    assert_eq!(reply.facility_id.as_deref(), Some(NORTH));

    // Answering sends nothing more.
    fleet.settle().await;
    assert_eq!(fleet.sandbox.messages().len(), 3);
}
