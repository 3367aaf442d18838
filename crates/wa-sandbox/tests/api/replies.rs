//! Simulated patients: button taps carrying the original payload, typed keywords, and the
//! seeded auto-reply policy.

use std::time::Duration;

use careline_whatsapp::webhook::InboundContent;
use serde_json::json;
use wa_sandbox::{AutoReplyPolicy, ReplyError};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn tapping_a_button_sends_the_payload_of_that_index_with_the_wamid_as_context() {
    let app = spawn_app().await;
    let to = patient(1);
    let wamid = app.send_template(&to, "job-7").await;
    let (status, receipt) = app.admin_post("/_sandbox/replies", &json!({ "wamid": wamid, "button_index": 1 })).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["payload"], "RESCHEDULE:job-7");
    app.receiver.wait_until(WAIT, "the tap", |r| !r.inbound().is_empty()).await;
    let posts = app.receiver.posts();
    let post = posts.iter().find(|p| p.envelope.messages().count() > 0).unwrap();
    assert_eq!(post.verified, Ok(()));
    let (metadata, message) = post.envelope.messages().next().unwrap();
    assert_eq!(metadata.unwrap().phone_number_id.as_deref(), Some(NUMBER_ID));
    assert_eq!(
        message.content(),
        InboundContent::QuickReply { payload: Some("RESCHEDULE:job-7"), text: Some("Reschedule") }
    );
    assert_eq!(message.context_id(), Some(wamid.as_str()));
    assert_eq!(message.context.as_ref().unwrap().from.as_deref(), Some(DISPLAY_NUMBER));
    assert_eq!(message.from.as_deref(), Some(to.as_str()));
    assert_eq!(message.id.as_deref(), receipt["inbound_wamid"].as_str());
    assert!(message.timestamp_secs().is_some());
    let change = post.envelope.changes().next().unwrap();
    assert_eq!(change.contacts[0].wa_id.as_deref(), Some(to.as_str()));
    assert_eq!(app.handle.message(&wamid).unwrap().replies, 1);
}

#[tokio::test]
async fn a_button_sent_without_a_payload_comes_back_with_its_label() {
    let app = spawn_app().await;
    let wamid = app.send_template(&patient(1), "job-7").await;
    let receipt = app.handle.tap_button(&wamid, 2).unwrap();
    assert_eq!(receipt.payload.as_deref(), Some("Cancel"));
    app.receiver.wait_until(WAIT, "the tap", |r| !r.inbound().is_empty()).await;
    assert_eq!(
        app.receiver.inbound()[0].content(),
        InboundContent::QuickReply { payload: Some("Cancel"), text: Some("Cancel") }
    );
}

#[tokio::test]
async fn typing_stop_arrives_as_text_without_context() {
    let app = spawn_app().await;
    let to = patient(1);
    app.send_template(&to, "job-7").await;
    let (status, _) = app.admin_post("/_sandbox/replies", &json!({ "from": format!("+{to}"), "text": "STOP" })).await;
    assert_eq!(status, 202);
    app.receiver.wait_until(WAIT, "STOP", |r| !r.inbound().is_empty()).await;
    let message = &app.receiver.inbound()[0];
    assert_eq!(message.content(), InboundContent::Text("STOP"));
    assert!(message.context.is_none());
    assert_eq!(message.from.as_deref(), Some(to.as_str()));
}

#[tokio::test]
async fn impossible_replies_are_refused_with_a_reason() {
    let app = spawn_app().await;
    let wamid = app.send_template(&patient(1), "x").await;
    for (body, expected) in [
        (json!({ "wamid": "wamid.nope", "button_index": 0 }), 404),
        (json!({ "wamid": wamid, "button_index": 9 }), 400),
        (json!({ "wamid": wamid, "button_index": 0, "text": "both" }), 400),
        (json!({ "button_index": 0 }), 400),
        (json!({ "text": "who am I" }), 400),
        (json!({ "from": "abc", "text": "x" }), 400),
        (json!({ "wamid": wamid, "typo": 1 }), 400),
    ] {
        let (status, error) = app.admin_post("/_sandbox/replies", &body).await;
        assert_eq!(status, expected, "{body} → {error}");
        assert!(error["error"].is_string());
    }
    assert_eq!(app.handle.tap_button(&wamid, 3), Err(ReplyError::NoSuchButton { index: 3, buttons: 3 }));
}

#[tokio::test]
async fn an_interactive_button_tap_arrives_as_a_button_reply() {
    let app = spawn_app().await;
    let to = patient(1);
    app.handle.type_text(&to, "can I move my slot?").unwrap();
    app.receiver.wait_until(WAIT, "the question", |r| !r.inbound().is_empty()).await;
    let (status, body) = app
        .post_messages(
            NUMBER_ID,
            &json!({ "messaging_product": "whatsapp", "to": to, "type": "interactive",
            "interactive": { "type": "button", "body": { "text": "12 Nov 10:30?" }, "action": { "buttons": [
                { "type": "reply", "reply": { "id": "SLOT_OK:job-1", "title": "Yes" } },
                { "type": "reply", "reply": { "id": "SLOT_NO:job-1", "title": "Other time" } } ] } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let wamid = body["messages"][0]["id"].as_str().unwrap();
    app.handle.tap_button(wamid, 0).unwrap();
    app.receiver.wait_until(WAIT, "the tap", |r| r.inbound().len() == 2).await;
    let tap = &app.receiver.inbound()[1];
    assert_eq!(tap.content(), InboundContent::ButtonReply { id: Some("SLOT_OK:job-1"), title: Some("Yes") });
    assert_eq!(tap.context_id(), Some(wamid));
}

#[tokio::test]
async fn the_auto_reply_policy_taps_confirm_after_read() {
    let app = spawn_app_with(|s| s.auto_reply = AutoReplyPolicy::parse("confirm:1.0").unwrap()).await;
    let wamid = app.send_template(&patient(1), "job-9").await;
    app.receiver.wait_until(WAIT, "the automatic tap", |r| !r.inbound().is_empty()).await;
    let tap = &app.receiver.inbound()[0];
    assert_eq!(tap.content(), InboundContent::QuickReply { payload: Some("CONFIRM:job-9"), text: Some("Confirm") });
    assert_eq!(tap.context_id(), Some(wamid.as_str()));
    // The reply comes after the message was read.
    assert!(app.receiver.statuses_of(&wamid).contains(&"read".to_owned()));
}

#[tokio::test]
async fn the_auto_reply_policy_is_the_same_for_a_patient_in_every_run() {
    async fn replies(seed: u64) -> Vec<String> {
        let app = spawn_app_with(|s| {
            s.seed = seed;
            s.auto_reply = AutoReplyPolicy::parse("confirm:0.4,stop:0.3").unwrap();
        })
        .await;
        for i in 0..12 {
            app.send_template(&patient(i), "job").await;
        }
        assert!(app.handle.wait_for_webhooks(WAIT).await);
        let mut seen: Vec<String> = app
            .receiver
            .inbound()
            .iter()
            .map(|m| match m.content() {
                InboundContent::Text(t) => format!("{}:{t}", m.from.clone().unwrap_or_default()),
                InboundContent::QuickReply { payload, .. } => {
                    format!("{}:{}", m.from.clone().unwrap_or_default(), payload.unwrap_or_default())
                }
                other => format!("{other:?}"),
            })
            .collect();
        seen.sort();
        seen
    }
    let first = replies(7).await;
    assert!(!first.is_empty() && first.len() < 12, "{first:?}");
    assert!(first.iter().any(|r| r.ends_with(":STOP")), "{first:?}");
    assert_eq!(first, replies(7).await);
}
