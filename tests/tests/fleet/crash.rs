//! Processes die. A sender killed in the middle of a batch loses no job and sends none twice;
//! statuses Meta posts while the webhook-consumer is down arrive once it is back.

use std::collections::HashMap;

use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration;

const PATIENTS: u32 = 30;

#[tokio::test]
async fn a_sender_killed_mid_batch_loses_no_job_and_sends_none_twice() {
    let mut fleet = spawn_fleet().await;
    // Book everyone while the sender is down, so its restart meets a full queue.
    fleet.stop(Component::Sender).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    for n in 0..PATIENTS {
        let (patient, appointment) = (format!("P{n}"), format!("A{n}"));
        fleet.ingest_patient(&patient, NORTH, &phone(100 + n), Consent::OptedIn).await;
        fleet.ingest_appointment(&appointment, NORTH, &patient, 1, starts_at).await;
    }

    // North sends 10 messages a second: kill the sender a few messages into the batch.
    fleet.start(Component::Sender).await;
    wait_until("a few confirmations are accepted", DEADLINE, || async { fleet.sandbox.messages().len() >= 5 }).await;
    fleet.kill(Component::Sender).await;
    let accepted_before_restart = fleet.sandbox.messages().len();
    assert!(accepted_before_restart < PATIENTS as usize, "the kill came too late to prove anything");

    fleet.start(Component::Sender).await;
    fleet.settle().await;

    let rows: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT j.job_id, s.state, s.wamid FROM jobs j JOIN sends s USING (job_id)
         WHERE j.kind = 'booking_confirmation'",
    )
    .fetch_all(&fleet.pool)
    .await
    .expect("read sends");
    assert_eq!(rows.len(), PATIENTS as usize, "every confirmation has a final sends row");

    let messages = fleet.sandbox.messages();
    let mut per_job: HashMap<String, Vec<String>> = HashMap::new();
    for message in &messages {
        let job = message.biz_opaque_callback_data.clone().expect("every message carries its job id");
        per_job.entry(job).or_default().push(message.wamid.clone());
    }
    assert!(per_job.values().all(|wamids| wamids.len() == 1), "a job was sent twice: {per_job:#?}");
    let mut unknown = 0;
    for (job_id, state, wamid) in &rows {
        match state.as_str() {
            // Accepted: exactly the message WhatsApp holds for that job.
            "accepted" => assert_eq!(per_job.get(&job_id.to_string()), Some(&vec![wamid.clone().unwrap()])),
            // A call was on the wire when the process died: never resent blindly.
            "unknown" => unknown += 1,
            other => panic!("job {job_id} ended {other}"),
        }
    }
    // Only calls in flight at the kill can be unknown, and each reached WhatsApp at most once.
    assert!(unknown <= SENDER_CONCURRENCY, "{unknown} unknown outcomes");
    assert!(messages.len() <= PATIENTS as usize);
    assert!(messages.len() >= PATIENTS as usize - unknown, "{} messages, {unknown} unknown", messages.len());
    assert_eq!(fleet.sandbox.stats().violations.total, 0, "no limit was crossed across the restart");
}

#[tokio::test]
async fn statuses_posted_while_the_webhook_consumer_is_down_are_recorded_once_it_is_back() {
    let mut fleet = spawn_fleet().await;
    let asha = phone(200);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;

    fleet.stop(Component::WebhookConsumer).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    let message = fleet.wait_for_messages_to(&asha, 1).await.remove(0);
    // Let the sandbox meet a closed port at least once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    fleet.start(Component::WebhookConsumer).await;

    let pool = &fleet.pool;
    wait_until("the message is read", DEADLINE, || async {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM message_delivery WHERE wamid = $1")
            .bind(&message.wamid)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        status.as_deref() == Some("read")
    })
    .await;
    fleet.settle().await;
    // Webhook timestamps have whole seconds: compare the set, each status exactly once.
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM message_status_events WHERE wamid = $1 ORDER BY status")
            .bind(&message.wamid)
            .fetch_all(pool)
            .await
            .expect("read statuses");
    assert_eq!(statuses, ["delivered", "read", "sent"]);
    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let job_ids: Vec<Option<uuid::Uuid>> =
        sqlx::query_scalar("SELECT job_id FROM message_status_events WHERE wamid = $1")
            .bind(&message.wamid)
            .fetch_all(pool)
            .await
            .expect("read statuses");
    assert!(job_ids.iter().all(|id| *id == Some(confirmation.job_id)), "{job_ids:?}");
}
