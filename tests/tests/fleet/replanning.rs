//! What the hospital changes after booking: a new time re-plans, a cancellation stops
//! everything, even a reminder already handed to the sender.

use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration;

#[tokio::test]
async fn a_reschedule_revokes_the_old_reminders_and_only_the_new_ones_are_sent() {
    let fleet = spawn_fleet().await;
    let (asha, witness) = (phone(11), phone(12));
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    fleet.ingest_patient("W1", NORTH, &witness, Consent::OptedIn).await;
    let first_start = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, first_start).await;
    // A witness at the old time: once its reminders have gone out, the old plan would have too.
    fleet.ingest_appointment("W1", NORTH, "W1", 1, first_start).await;
    fleet.wait_for_messages_to(&asha, 1).await;
    fleet.wait_for_messages_to(&witness, 1).await;

    let new_start = first_start + Duration::days(1);
    fleet.ingest_appointment("A1", NORTH, "P1", 2, new_start).await;
    let jobs = fleet.jobs("A1").await;
    let old: Vec<_> = jobs.iter().filter(|j| j.generation == 1 && j.kind.starts_with("reminder_")).collect();
    assert_eq!(old.len(), 2, "{jobs:#?}");
    for job in &old {
        assert_eq!((job.state.as_str(), job.reason.as_deref()), ("revoked", Some("rescheduled")), "{job:#?}");
    }
    let new: Vec<(&str, &str, chrono::DateTime<chrono::Utc>)> =
        jobs.iter().filter(|j| j.generation == 2).map(|j| (j.kind.as_str(), j.state.as_str(), j.due_at)).collect();
    assert_eq!(new.len(), 3, "{jobs:#?}");
    assert!(new.contains(&("reminder_48h", "planned", new_start - Duration::hours(48))), "{new:?}");
    assert!(new.contains(&("reminder_2h", "planned", new_start - Duration::hours(2))), "{new:?}");

    // A new time asks for a new answer: a second confirmation, for the new generation.
    let sent = fleet.wait_for_messages_to(&asha, 2).await;
    let confirmation_2 = fleet.job("A1", 2, "booking_confirmation").await;
    assert_eq!(sent[1].biz_opaque_callback_data, Some(confirmation_2.job_id.to_string()));
    assert_eq!(sent[1].template.as_deref(), Some(BOOKED_TEMPLATE));

    // Old 48 h point, new 48 h point, old 2 h point, new 2 h point, in the clock's order: at
    // each old point the witness is reminded and the moved appointment is not; at each new point
    // the moved appointment is reminded once.
    let new_48h = fleet.job("A1", 2, "reminder_48h").await;
    let new_2h = fleet.job("A1", 2, "reminder_2h").await;
    fleet.clock.set(first_start - Duration::hours(48));
    fleet.wait_for_messages_to(&witness, 2).await;
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&asha).len(), 2);

    fleet.clock.set(new_48h.due_at);
    fleet.wait_for_messages_to(&asha, 3).await;

    fleet.clock.set(first_start - Duration::hours(2));
    fleet.wait_for_messages_to(&witness, 3).await;
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&asha).len(), 3);

    fleet.clock.set(new_2h.due_at);
    let sent = fleet.wait_for_messages_to(&asha, 4).await;
    fleet.settle().await;
    let callbacks: Vec<Option<String>> =
        fleet.messages_to(&asha).into_iter().map(|m| m.biz_opaque_callback_data).collect();
    let confirmation_1 = fleet.job("A1", 1, "booking_confirmation").await;
    assert_eq!(
        callbacks,
        [confirmation_1.job_id, confirmation_2.job_id, new_48h.job_id, new_2h.job_id].map(|id| Some(id.to_string()))
    );
    assert_eq!(sent[2].template.as_deref(), Some(REMINDER_TEMPLATE));
    assert_eq!(sent[3].template.as_deref(), Some(SOON_TEMPLATE));
    // The revoked reminders never reached the sender.
    for job in &old {
        assert_eq!(fleet.send_row(job.job_id).await, None);
    }
}

#[tokio::test]
async fn a_cancel_stops_every_pending_reminder_including_one_already_handed_to_the_sender() {
    let mut fleet = spawn_fleet().await;
    let (asha, witness) = (phone(21), phone(22));
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    fleet.ingest_patient("W1", NORTH, &witness, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    fleet.ingest_appointment("W1", NORTH, "W1", 1, starts_at).await;
    fleet.wait_for_messages_to(&asha, 1).await;
    fleet.wait_for_messages_to(&witness, 1).await;

    // The 48 h reminder falls due and is published while the sender is down.
    fleet.stop(Component::Sender).await;
    let reminder_48h = fleet.job("A1", 1, "reminder_48h").await;
    fleet.clock.set(reminder_48h.due_at);
    let pool = &fleet.pool;
    wait_until("the 48 h reminder is handed to the sender", DEADLINE, || async {
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE job_id = $1")
            .bind(reminder_48h.job_id)
            .fetch_one(pool)
            .await
            .unwrap_or_default();
        state == "enqueued"
    })
    .await;

    fleet.cancel_appointment("A1", NORTH, "P1", 2, starts_at).await;
    for job in fleet.jobs("A1").await.iter().filter(|j| j.kind.starts_with("reminder_")) {
        assert_eq!((job.state.as_str(), job.reason.as_deref()), ("revoked", Some("cancelled")), "{job:#?}");
    }

    fleet.start(Component::Sender).await;
    let row = fleet.wait_for_settled_send(reminder_48h.job_id).await;
    assert_eq!((row.state.as_str(), row.reason.as_deref(), row.wamid), ("suppressed", Some("revoked"), None));
    // The witness's reminder, queued alongside, still goes out.
    fleet.wait_for_messages_to(&witness, 2).await;

    // The 2 h point: the witness is reminded, the cancelled appointment is not.
    let reminder_2h = fleet.job("A1", 1, "reminder_2h").await;
    fleet.clock.set(reminder_2h.due_at);
    fleet.wait_for_messages_to(&witness, 3).await;
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&asha).len(), 1, "only the confirmation, sent before the cancel");
    assert_eq!(fleet.send_row(reminder_2h.job_id).await, None, "a revoked job is never published");
}
