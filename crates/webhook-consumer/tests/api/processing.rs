//! The processor: statuses only move forward, replies become events, keywords become consent.

use careline_domain::consent::{ConsentChannel, ConsentPurpose, ConsentSource, ConsentState};
use careline_domain::events::Event;
use careline_domain::reply::{ReplyAction, button_payload};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

const T0: i64 = 1_750_000_000;

#[derive(Debug, sqlx::FromRow)]
struct ConsentRow {
    patient_id: Option<String>,
    phone_e164: Option<String>,
    state: String,
    source: String,
    evidence: Option<String>,
    recorded_by: String,
    dedupe_key: String,
}

#[tokio::test]
async fn statuses_out_of_order_and_repeated_end_at_read_and_are_recorded_once_each() {
    let app = spawn_app().await;
    let job_id = Uuid::now_v7();
    for (s, t) in [("delivered", T0 + 2), ("sent", T0 + 1), ("read", T0 + 3), ("read", T0 + 3), ("delivered", T0 + 2)] {
        app.post_signed(&meta_bytes(&envelope(&[statuses_value(vec![status("wamid.A", s, t, Some(job_id))])]))).await;
    }
    app.wait_until_settled().await;

    let (status, rank, stored_job, status_at): (String, i16, Option<Uuid>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT status, status_rank, job_id, status_at FROM message_delivery WHERE wamid = 'wamid.A'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), rank, stored_job), ("read", 3, Some(job_id)));
    assert_eq!(status_at.timestamp(), T0 + 3);
    assert_eq!(app.count("SELECT count(*) FROM message_status_events WHERE wamid = 'wamid.A'").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM message_status_events WHERE job_id IS NOT NULL").await, 3);
}

#[tokio::test]
async fn a_failed_status_keeps_its_error_even_when_earlier_statuses_arrive_late() {
    let app = spawn_app().await;
    let mut failed = status("wamid.X", "failed", T0 + 5, None);
    failed["errors"] = json!([{
        "code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
        "error_data": { "details": "Receiver is incapable of receiving this message" }
    }]);
    app.post_signed(&meta_bytes(&envelope(&[statuses_value(vec![failed])]))).await;
    app.post_signed(&meta_bytes(&envelope(&[statuses_value(vec![
        status("wamid.X", "sent", T0 + 1, None),
        status("wamid.X", "delivered", T0 + 2, None),
    ])])))
    .await;
    app.wait_until_settled().await;

    let (status, code, detail): (String, Option<i32>, Option<String>) =
        sqlx::query_as("SELECT status, error_code, error_detail FROM message_delivery WHERE wamid = 'wamid.X'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(code, Some(131026));
    assert_eq!(detail.as_deref(), Some("Receiver is incapable of receiving this message"));
    let (event_code, title): (Option<i32>, Option<String>) = sqlx::query_as(
        "SELECT error_code, error_title FROM message_status_events WHERE wamid = 'wamid.X' AND status = 'failed'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((event_code, title.as_deref()), (Some(131026), Some("Message undeliverable")));
}

#[tokio::test]
async fn a_status_without_callback_data_finds_its_job_through_the_send() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    app.post_signed(&meta_bytes(&envelope(&[statuses_value(vec![status(&fixture.wamid, "delivered", T0, None)])])))
        .await;
    app.wait_until_settled().await;
    let job: Option<Uuid> =
        sqlx::query_scalar("SELECT job_id FROM message_delivery").fetch_one(&app.pool).await.unwrap();
    assert_eq!(job, Some(fixture.job_id));
}

#[tokio::test]
async fn every_entry_change_status_and_message_of_a_batch_is_processed() {
    let app = spawn_app().await;
    let first = envelope(&[
        statuses_value(vec![status("wamid.B1", "sent", T0, None), status("wamid.B2", "sent", T0, None)]),
        messages_value(vec![text_message("wamid.IN1", "hello", T0), text_message("wamid.IN2", "HELP", T0)]),
    ]);
    let second = envelope(&[
        statuses_value(vec![
            status("wamid.B1", "delivered", T0 + 1, None),
            status("wamid.B3", "read", T0 + 2, None),
            status("wamid.B4", "played", T0 + 2, None),
        ]),
        messages_value(vec![text_message("wamid.IN3", "ayuda", T0 + 3)]),
    ]);
    let mut batch = first.clone();
    batch["entry"].as_array_mut().unwrap().extend(second["entry"].as_array().unwrap().iter().cloned());
    assert_eq!(batch["entry"].as_array().unwrap().len(), 2);
    app.post_signed(&meta_bytes(&batch)).await;
    app.wait_until_settled().await;

    assert_eq!(app.count("SELECT count(*) FROM message_status_events").await, 4);
    assert_eq!(app.count("SELECT count(*) FROM message_delivery").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM message_delivery WHERE wamid = 'wamid.B1' AND status = 'delivered'").await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM inbound_messages").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM inbound_messages WHERE action = 'help'").await, 2);
    // Three replies, and "hello" (neither keyword nor button) also asks for a person.
    let events = app.hospital_events(4).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events.iter().filter(|e| matches!(e.event, Event::PatientReplied(_))).count(), 3);
    let needs_human: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::NeedsHuman(n) => Some(n.inbound_message_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(needs_human, ["wamid.IN1"]);
}

#[tokio::test]
async fn a_confirm_button_is_recorded_and_published_with_its_appointment() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    let payload = button_payload(ReplyAction::Confirm, fixture.job_id);
    app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![button_message(
        "wamid.CONFIRM",
        &fixture.wamid,
        &payload,
        "Confirm",
        T0,
    )])])))
    .await;
    app.wait_until_settled().await;

    let (kind, action, job_id, appointment_id, from, context): (String, String, Option<Uuid>, Option<String>, String, Option<String>) =
        sqlx::query_as(
            "SELECT kind, action, job_id, appointment_id, from_e164, context_wamid FROM inbound_messages WHERE message_id = 'wamid.CONFIRM'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((kind.as_str(), action.as_str()), ("button", "confirm"));
    assert_eq!(job_id, Some(fixture.job_id));
    assert_eq!(appointment_id.as_deref(), Some(fixture.appointment_id.as_str()));
    assert_eq!(from, PATIENT_E164);
    assert_eq!(context.as_deref(), Some(fixture.wamid.as_str()));

    let events = app.hospital_events(1).await;
    assert_eq!(events.len(), 1);
    let Event::PatientReplied(replied) = &events[0].event else { panic!("expected patient.replied, got {events:?}") };
    assert_eq!(replied.inbound_message_id, "wamid.CONFIRM");
    assert_eq!(replied.action, ReplyAction::Confirm);
    assert_eq!(replied.appointment_id.as_deref(), Some(fixture.appointment_id.as_str()));
    assert_eq!(replied.job_id, Some(fixture.job_id));
    assert_eq!(replied.facility_id.as_deref(), Some(fixture.facility_id.as_str()));
    assert_eq!(replied.received_at.timestamp(), T0);
}

#[tokio::test]
async fn a_button_without_a_job_in_its_payload_is_matched_through_the_replied_to_message() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![button_message(
        "wamid.RESCHED",
        &fixture.wamid,
        "RESCHEDULE",
        "Reschedule",
        T0,
    )])])))
    .await;
    app.wait_until_settled().await;
    let (action, appointment_id): (String, Option<String>) =
        sqlx::query_as("SELECT action, appointment_id FROM inbound_messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(action, "reschedule");
    assert_eq!(appointment_id.as_deref(), Some(fixture.appointment_id.as_str()));
}

#[tokio::test]
async fn stop_opts_out_the_number_and_its_patients_and_publishes_the_change() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    sqlx::query(
        "INSERT INTO consent_log (patient_id, phone_e164, state, recorded_at, source, recorded_by, dedupe_key)
         VALUES ($1, $2, 'opted_in', to_timestamp($3), 'booking_form', 'test', 'seed')",
    )
    .bind(&fixture.patient_id)
    .bind(PATIENT_E164)
    .bind((T0 - 86_400) as f64)
    .execute(&app.pool)
    .await
    .unwrap();
    app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![text_message("wamid.STOP", "Stop!", T0)])]))).await;
    app.wait_until_settled().await;

    let entries: Vec<ConsentRow> = sqlx::query_as(
        "SELECT patient_id, phone_e164, state, source, evidence, recorded_by, dedupe_key FROM consent_log
         WHERE dedupe_key <> 'seed' AND purpose = 'care' ORDER BY patient_id NULLS FIRST",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    // The same two entries again for campaigns: STOP withdraws every purpose.
    assert_eq!(
        app.count("SELECT count(*) FROM consent_log WHERE purpose = 'marketing' AND state = 'opted_out'").await,
        2
    );
    assert_eq!(entries[0].patient_id, None);
    assert_eq!(entries[0].phone_e164.as_deref(), Some(PATIENT_E164));
    assert_eq!(entries[1].patient_id.as_deref(), Some(fixture.patient_id.as_str()));
    for entry in &entries {
        assert_eq!((entry.state.as_str(), entry.source.as_str()), ("opted_out", "whatsapp_keyword"));
        assert_eq!(entry.evidence.as_deref(), Some("wamid.STOP"));
        assert_eq!(entry.recorded_by, "webhook-consumer");
        assert!(entry.dedupe_key.starts_with("wamid.STOP:"));
    }
    let current = careline_store::consent::current(&app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(current, Some(ConsentState::OptedOut));
    let action: String = sqlx::query_scalar("SELECT action FROM inbound_messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(action, "stop");

    let events = app.hospital_events(2).await;
    assert_eq!(events.len(), 2);
    let changed = events
        .iter()
        .find_map(|e| match &e.event {
            Event::ConsentChanged(c) => Some(c),
            _ => None,
        })
        .expect("consent.changed");
    assert_eq!(changed.patient_ids, vec![fixture.patient_id.clone()]);
    assert_eq!(changed.state, ConsentState::OptedOut);
    assert_eq!(changed.source, ConsentSource::WhatsappKeyword);
    assert_eq!(changed.evidence.as_deref(), Some("wamid.STOP"));
    assert_eq!(changed.recorded_at.timestamp(), T0);
    assert!(events.iter().any(|e| matches!(&e.event, Event::PatientReplied(r) if r.action == ReplyAction::Stop)));
}

#[tokio::test]
async fn start_after_stop_opts_the_number_back_in() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![
        text_message("wamid.S1", "STOP", T0),
        text_message("wamid.S2", "start", T0 + 60),
    ])])))
    .await;
    app.wait_until_settled().await;
    let current = careline_store::consent::current(&app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(current, Some(ConsentState::OptedIn));
    // STOP withdraws care and marketing for the number and the patient; START restores care.
    assert_eq!(app.count("SELECT count(*) FROM consent_log").await, 6);
    let marketing = careline_store::consent::current_for(
        &app.pool,
        &fixture.patient_id,
        PATIENT_E164,
        ConsentChannel::Whatsapp,
        ConsentPurpose::Marketing,
    )
    .await
    .unwrap();
    assert_eq!(marketing, Some(ConsentState::OptedOut), "START does not opt into campaigns");
    let provenance: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT source, evidence, actor, recorded_by FROM consent_log WHERE patient_id IS NOT NULL ORDER BY entry_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        provenance.iter().all(|(source, evidence, actor, by)| source == "whatsapp_keyword"
            && evidence.as_deref().is_some_and(|e| e.starts_with("wamid.S"))
            && actor.as_deref() == Some("patient")
            && by == "webhook-consumer"),
        "{provenance:?}"
    );
}

#[tokio::test]
async fn a_repeated_inbound_message_is_recorded_once_and_published_once() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;
    let body = meta_bytes(&envelope(&[messages_value(vec![button_message(
        "wamid.DUP",
        &fixture.wamid,
        &button_payload(ReplyAction::Cancel, fixture.job_id),
        "Cancel",
        T0,
    )])]));
    app.post_signed(&body).await;
    app.wait_until_settled().await;
    app.post_signed(&body).await;
    app.post_signed(&body).await;
    app.wait_until_settled().await;

    assert_eq!(app.count("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NOT NULL").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM inbound_messages").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_outbox").await, 1);
    let events = app.hospital_events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn a_row_that_fails_to_process_is_kept_retried_and_finally_processed() {
    let app = spawn_app().await;
    // Break the status table so processing fails, then repair it.
    sqlx::query("ALTER TABLE message_status_events RENAME TO message_status_events_away")
        .execute(&app.pool)
        .await
        .unwrap();
    app.post_signed(&meta_bytes(&envelope(&[statuses_value(vec![status("wamid.R", "sent", T0, None)])]))).await;
    app.wait_for_count("SELECT count(*) FROM webhook_inbox WHERE attempts >= 1 AND last_error IS NOT NULL", 1).await;
    assert_eq!(app.count("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL").await, 1);
    sqlx::query("ALTER TABLE message_status_events_away RENAME TO message_status_events")
        .execute(&app.pool)
        .await
        .unwrap();
    app.wait_until_settled().await;
    assert_eq!(app.count("SELECT count(*) FROM message_status_events WHERE wamid = 'wamid.R'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM message_delivery WHERE wamid = 'wamid.R'").await, 1);
}

#[tokio::test]
async fn events_committed_while_the_broker_is_unreachable_are_published_by_a_later_run() {
    let (pool, database_url) = {
        let app = spawn_app_with(|s| s.bus.url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
        app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![text_message("wamid.HELP", "help", T0)])]))).await;
        app.wait_for_count("SELECT count(*) FROM inbound_messages", 1).await;
        assert_eq!(app.count("SELECT count(*) FROM webhook_outbox WHERE published_at IS NULL").await, 1);
        let kept = (app.pool.clone(), app.database_url.clone());
        app.stop().await;
        kept
    };
    // The same database, a reachable broker: the outbox drains.
    let app = spawn_app_with(|s| s.database_url = webhook_consumer::Secret::new(database_url)).await;
    app.wait_until_settled().await;
    let events = app.hospital_events(1).await;
    assert!(matches!(&events[0].event, Event::PatientReplied(r) if r.action == ReplyAction::Help));
    drop(pool);
}
