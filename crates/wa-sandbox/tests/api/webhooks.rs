//! Signed status webhooks: order, content, Meta's escaping, duplicates, reordering, batching
//! and retries.

use std::time::Duration;

use careline_whatsapp::ErrorClass;
use careline_whatsapp::signature::{SignatureError, verify_signature};
use careline_whatsapp::webhook::StatusKind;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn statuses_arrive_signed_in_order_with_the_callback_data() {
    let app = spawn_app().await;
    let wamid = app.send_template(&patient(1), "outbox-1").await;
    app.receiver.wait_until(WAIT, "sent, delivered, read", |r| r.statuses_of(&wamid).len() == 3).await;
    assert_eq!(app.receiver.statuses_of(&wamid), vec!["sent", "delivered", "read"]);
    for post in app.receiver.posts() {
        assert_eq!(post.verified, Ok(()), "signature {:?}", post.signature);
        assert_eq!(post.envelope.object.as_deref(), Some("whatsapp_business_account"));
    }
    let statuses = app.receiver.statuses();
    for status in &statuses {
        assert_eq!(status.biz_opaque_callback_data.as_deref(), Some("outbox-1"));
        assert_eq!(status.recipient_id.as_deref(), Some(patient(1).as_str()));
        assert!(status.timestamp_secs().is_some(), "timestamp is a string of seconds");
    }
    let sent = &statuses[0];
    let pricing = sent.pricing.as_ref().expect("sent carries pricing");
    assert_eq!(pricing.pricing_model.as_deref(), Some("PMP"));
    assert_eq!(pricing.category.as_deref(), Some("utility"));
    assert!(statuses[2].pricing.is_none(), "read carries no pricing");
    let (metadata, _) =
        app.receiver.posts()[0].envelope.statuses().next().map(|(m, s)| (m.cloned(), s.clone())).unwrap();
    let metadata = metadata.unwrap();
    assert_eq!(metadata.phone_number_id.as_deref(), Some(NUMBER_ID));
    assert_eq!(metadata.display_phone_number.as_deref(), Some(DISPLAY_NUMBER));
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    assert_eq!(app.handle.message(&wamid).unwrap().status, "read");
    let stats = app.handle.stats();
    assert_eq!(stats.webhooks.delivered_events, 3);
    assert_eq!(stats.webhooks.posts_ok, 3);
    assert_eq!(stats.webhooks.pending, 0);
}

#[tokio::test]
async fn bodies_are_escaped_like_metas_and_only_the_raw_bytes_verify() {
    let app = spawn_app().await;
    let callback = "rem/01 café";
    let wamid = app.send_template(&patient(1), callback).await;
    app.receiver.wait_until(WAIT, "sent", |r| !r.statuses_of(&wamid).is_empty()).await;
    let post = &app.receiver.posts()[0];
    let raw = String::from_utf8(post.raw.to_vec()).unwrap();
    assert!(raw.is_ascii(), "{raw}");
    assert!(raw.contains(r"rem\/01 caf\u00e9"), "{raw}");
    assert_eq!(post.verified, Ok(()));
    let status = post.envelope.statuses().next().unwrap().1;
    assert_eq!(status.biz_opaque_callback_data.as_deref(), Some(callback));

    let reserialised = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&post.raw).unwrap()).unwrap();
    assert_eq!(
        verify_signature(APP_SECRET.as_bytes(), &reserialised, post.signature.as_deref()),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(b"another secret", &post.raw, post.signature.as_deref()),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn with_duplicates_on_every_status_arrives_twice() {
    let app = spawn_app_with(|s| s.statuses.duplicate_probability = 1.0).await;
    let wamid = app.send_template(&patient(1), "x").await;
    app.receiver.wait_until(WAIT, "6 statuses", |r| r.statuses_of(&wamid).len() == 6).await;
    let mut seen = app.receiver.statuses_of(&wamid);
    seen.sort();
    assert_eq!(seen, vec!["delivered", "delivered", "read", "read", "sent", "sent"]);
    assert_eq!(app.handle.stats().webhooks.duplicates, 3);
}

#[tokio::test]
async fn with_reordering_read_arrives_before_sent_but_keeps_its_timestamp() {
    let app = spawn_app_with(|s| {
        s.statuses.reorder_probability = 1.0;
        s.statuses.read_after = Duration::from_millis(1100);
    })
    .await;
    let wamid = app.send_template(&patient(1), "x").await;
    app.receiver.wait_until(WAIT, "3 statuses", |r| r.statuses_of(&wamid).len() == 3).await;
    assert_eq!(app.receiver.statuses_of(&wamid), vec!["read", "delivered", "sent"]);
    let statuses = app.receiver.statuses();
    let read = statuses.iter().find(|s| s.kind() == StatusKind::Read).unwrap();
    let sent = statuses.iter().find(|s| s.kind() == StatusKind::Sent).unwrap();
    assert!(read.timestamp_secs() > sent.timestamp_secs(), "read happened a second later");
    assert_eq!(app.handle.stats().webhooks.reordered, 1);
    // The latest status shown is the most advanced one, whatever the arrival order.
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    assert_eq!(app.handle.message(&wamid).unwrap().status, "read");
}

#[tokio::test]
async fn batching_puts_several_statuses_in_one_post() {
    let app = spawn_app_with(|s| {
        s.delivery.batch_max = 20;
        s.delivery.batch_window = Duration::from_millis(200);
    })
    .await;
    for i in 0..3 {
        app.send_template(&patient(i), "x").await;
    }
    app.receiver.wait_until(WAIT, "9 statuses", |r| r.statuses().len() == 9).await;
    let posts = app.receiver.posts();
    assert!(posts.len() < 9, "{} posts for 9 statuses", posts.len());
    assert!(posts.iter().any(|p| p.envelope.statuses().count() > 1));
    assert!(posts.iter().all(|p| p.verified.is_ok()));
}

#[tokio::test]
async fn a_receiver_answering_500_gets_the_same_signed_body_again() {
    let app = spawn_app_with(|s| s.statuses.delivered_probability = 0.0).await;
    app.receiver.fail_next(2);
    let wamid = app.send_template(&patient(1), "x").await;
    app.receiver.wait_until(WAIT, "3 attempts", |r| r.posts().len() == 3).await;
    let posts = app.receiver.posts();
    assert!(posts.windows(2).all(|w| w[0].raw == w[1].raw && w[0].signature == w[1].signature));
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    let stats = app.handle.stats();
    assert_eq!(stats.webhooks.posts_failed, 2);
    assert_eq!(stats.webhooks.retries, 2);
    assert_eq!(stats.webhooks.delivered_events, 1);
    assert_eq!(app.receiver.statuses_of(&wamid), vec!["sent", "sent", "sent"]);
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_on_after_the_last_attempt() {
    let app = spawn_app_with(|s| {
        s.statuses.delivered_probability = 0.0;
        s.delivery.max_attempts = 3;
    })
    .await;
    app.receiver.fail_next(u32::MAX);
    app.send_template(&patient(1), "x").await;
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    let stats = app.handle.stats();
    assert_eq!(app.receiver.posts().len(), 3);
    assert_eq!(stats.webhooks.gave_up_events, 1);
    assert_eq!(stats.webhooks.retries, 2);
}

#[tokio::test]
async fn undeliverable_messages_fail_with_131026_and_no_sent() {
    let app = spawn_app_with(|s| s.statuses.failed_probability = 1.0).await;
    let wamid = app.send_template(&patient(1), "outbox-9").await;
    app.receiver.wait_until(WAIT, "failed", |r| !r.statuses_of(&wamid).is_empty()).await;
    assert!(app.handle.wait_for_webhooks(WAIT).await);
    assert_eq!(app.receiver.statuses_of(&wamid), vec!["failed"]);
    let failed = &app.receiver.statuses()[0];
    assert_eq!(failed.biz_opaque_callback_data.as_deref(), Some("outbox-9"));
    assert_eq!(failed.errors[0].code, Some(131026));
    assert_eq!(failed.errors[0].class(), ErrorClass::NotOnWhatsapp);
    assert!(failed.errors[0].details().is_some());
}

#[tokio::test]
async fn without_a_webhook_url_nothing_is_planned() {
    let app = spawn_app_with(|s| s.webhook_url = None).await;
    app.send_template(&patient(1), "x").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.receiver.posts().is_empty());
    assert_eq!(app.handle.pending_webhooks(), 0);
}
