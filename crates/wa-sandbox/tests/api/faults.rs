//! Fault injection, seen through Careline's client.

use std::time::Duration;

use careline_whatsapp::types::{SendRequest, Template};
use careline_whatsapp::{ErrorClass, SendError, UnknownOutcome};
use serde_json::json;
use wa_sandbox::ForcedError;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

fn request(to: &str, callback: &str) -> SendRequest {
    SendRequest::template(to, Template::new(TEMPLATE, "en").with_body_text(["a", "b", "c"]))
        .with_callback_data(callback)
}

#[tokio::test]
async fn a_500_before_acceptance_is_an_unknown_outcome_that_created_nothing() {
    let app = spawn_app().await;
    let (status, state) = app.admin_post("/_sandbox/faults", &json!({ "http_500_before_accept": 1.0 })).await;
    assert_eq!(status, 200, "{state}");
    let err = app.client(Duration::from_secs(5)).send(NUMBER_ID, &request(&patient(1), "outbox-1")).await.unwrap_err();
    assert!(
        matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::ServerError, http_status: Some(500), .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::OutcomeUnknown);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = app.handle.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.injected.http_500_before_accept, 1);
    assert!(app.receiver.posts().is_empty());
}

#[tokio::test]
async fn a_500_after_acceptance_still_sends_webhooks_that_reconcile_by_callback_data() {
    let app = spawn_app().await;
    app.admin_post("/_sandbox/faults", &json!({ "http_500_after_accept": 1.0 })).await;
    let err = app.client(Duration::from_secs(5)).send(NUMBER_ID, &request(&patient(1), "outbox-42")).await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    app.receiver.wait_until(WAIT, "a status", |r| !r.statuses().is_empty()).await;
    let status = &app.receiver.statuses()[0];
    assert_eq!(status.biz_opaque_callback_data.as_deref(), Some("outbox-42"));
    let messages = app.handle.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].answered_with_500);
    assert_eq!(status.id.as_deref(), Some(messages[0].wamid.as_str()));
    assert_eq!(app.handle.stats().injected.http_500_after_accept, 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_the_client_though_the_message_was_accepted() {
    let app = spawn_app().await;
    app.admin_post("/_sandbox/faults", &json!({ "slow_probability": 1.0, "slow_ms": 3000 })).await;
    let err =
        app.client(Duration::from_millis(300)).send(NUMBER_ID, &request(&patient(1), "outbox-7")).await.unwrap_err();
    assert!(matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::Timeout, .. }), "{err:?}");
    assert_eq!(app.handle.messages().len(), 1);
    app.receiver.wait_until(WAIT, "a status", |r| !r.statuses().is_empty()).await;
    assert_eq!(app.handle.stats().injected.slow, 1);
}

#[tokio::test]
async fn forced_codes_answer_the_next_n_sends_then_stop() {
    let app = spawn_app().await;
    app.handle.force_next_error(131000, 2);
    let client = app.client(Duration::from_secs(5));
    for i in 0..2 {
        let err = client.send(NUMBER_ID, &request(&patient(i), "x")).await.unwrap_err();
        assert!(matches!(err, SendError::Api { code: 131000, .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Retry);
    }
    client.send(NUMBER_ID, &request(&patient(3), "x")).await.unwrap();
    let stats = app.handle.stats();
    assert_eq!(stats.injected.forced_sync, 2);
    assert_eq!(stats.refused_by_code.get(&131000), Some(&2));
}

#[tokio::test]
async fn a_forced_token_error_answers_401() {
    let app = spawn_app().await;
    app.admin_post("/_sandbox/faults", &json!({ "force_next": { "code": 190, "count": 1 } })).await;
    let (status, body) = app.post_messages(NUMBER_ID, &template_body(&patient(1), "x")).await;
    assert_eq!((status, error_code(&body)), (401, 190));
}

#[tokio::test]
async fn a_recipient_fault_can_fail_asynchronously_in_a_failed_status() {
    let app = spawn_app().await;
    let to = patient(1);
    app.handle
        .force_recipient_error(
            &to,
            ForcedError { code: 131026, http_status: None, count: None, asynchronous: true, details: None },
        )
        .unwrap();
    let wamid = app.send_template(&to, "outbox-5").await;
    app.send_template(&patient(2), "other").await;
    app.receiver.wait_until(WAIT, "failed", |r| !r.statuses_of(&wamid).is_empty()).await;
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    assert_eq!(app.receiver.statuses_of(&wamid), vec!["failed"]);
    let failed = app.receiver.statuses().into_iter().find(|s| s.id.as_deref() == Some(&wamid)).unwrap();
    assert_eq!(failed.errors[0].code, Some(131026));
    assert_eq!(app.handle.stats().injected.forced_async, 1);
}

#[tokio::test]
async fn fault_updates_are_validated_and_can_be_cleared() {
    let app = spawn_app().await;
    let (status, _) = app.admin_post("/_sandbox/faults", &json!({ "http_500_before_accept": 3 })).await;
    assert_eq!(status, 400);
    let (status, _) = app.admin_post("/_sandbox/faults", &json!({ "no_such_fault": 1 })).await;
    assert_eq!(status, 400);
    app.admin_post(
        "/_sandbox/faults",
        &json!({ "http_500_before_accept": 1.0,
        "force_recipient": { "to": "919812345678", "code": 131026 } }),
    )
    .await;
    let (_, state) = app.admin_get("/_sandbox/faults").await;
    assert_eq!(state["settings"]["http_500_before_accept"], 1.0);
    assert_eq!(state["recipients"]["919812345678"]["code"], 131026);
    app.admin_post("/_sandbox/faults", &json!({ "clear": true })).await;
    app.send_template(&patient(1), "x").await;
}

#[tokio::test]
async fn periodic_bursts_refuse_every_send_for_a_moment_with_each_code_in_turn() {
    let app = spawn_app().await;
    let (status, state) = app
        .admin_post(
            "/_sandbox/faults",
            &json!({ "burst_codes": [130429, 131056], "burst_every_ms": 400, "burst_ms": 150 }),
        )
        .await;
    assert_eq!(status, 200, "{state}");
    // Send steadily for a little over three periods; `None` is an accepted send.
    let client = app.client(Duration::from_secs(5));
    let mut answers: Vec<Option<i64>> = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(1400);
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        n += 1;
        match client.send(NUMBER_ID, &request(&patient(n), "x")).await {
            Ok(_) => answers.push(None),
            Err(SendError::Api { code, .. }) => answers.push(Some(code)),
            Err(other) => panic!("{other:?}"),
        }
        // Well under the number's 80 messages per second: no real 130429.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Runs of refusals, each with one code, separated by acceptances.
    let mut bursts: Vec<(i64, usize)> = Vec::new();
    let mut previous = None;
    for answer in &answers {
        match (answer, previous) {
            (Some(code), Some(_)) => {
                let last = bursts.last_mut().unwrap();
                assert_eq!(last.0, *code, "a burst uses one code: {answers:?}");
                last.1 += 1;
            }
            (Some(code), None) => bursts.push((*code, 1)),
            (None, _) => {}
        }
        previous = *answer;
    }
    assert!(bursts.len() >= 2, "at least two bursts in three periods: {answers:?}");
    for pair in bursts.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "codes are taken in turn: {bursts:?}");
    }
    assert!(answers.iter().filter(|a| a.is_none()).count() > answers.len() / 3, "mostly accepted between bursts");
    let refused: usize = bursts.iter().map(|b| b.1).sum();
    let stats = app.handle.stats();
    assert_eq!(stats.injected.burst, refused as u64);
    assert_eq!(stats.violations.total, 0, "an injected refusal is not a limit violation");
}

#[tokio::test]
async fn slow_answers_can_be_kept_for_accepted_sends_and_callbacks_are_counted() {
    let app = spawn_app().await;
    app.admin_post(
        "/_sandbox/faults",
        &json!({ "slow_probability": 1.0, "slow_ms": 3000, "slow_accepted_only": true, "http_500_before_accept": 1.0 }),
    )
    .await;
    let client = app.client(Duration::from_millis(500));
    let err = client.send(NUMBER_ID, &request(&patient(1), "job-1")).await.unwrap_err();
    assert!(matches!(err, SendError::OutcomeUnknown { http_status: Some(500), .. }), "not slowed: {err:?}");
    app.admin_post("/_sandbox/faults", &json!({ "http_500_before_accept": 0.0 })).await;
    let err = client.send(NUMBER_ID, &request(&patient(1), "job-1")).await.unwrap_err();
    assert!(matches!(err, SendError::OutcomeUnknown { reason: UnknownOutcome::Timeout, .. }), "{err:?}");
    app.admin_post("/_sandbox/faults", &json!({ "clear": true })).await;
    client.send(NUMBER_ID, &request(&patient(2), "job-2")).await.unwrap();
    let (status, counts) = app.admin_get("/_sandbox/callbacks").await;
    assert_eq!(status, 200);
    assert_eq!(counts, json!({ "job-1": 1, "job-2": 1 }), "the refused send is not counted");
    let stats = app.handle.stats();
    assert_eq!(stats.injected.slow, 1);
    assert_eq!(stats.by_number[NUMBER_ID].accepted, 2);
}
