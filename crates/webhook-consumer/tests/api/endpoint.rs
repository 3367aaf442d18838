//! The public listener: Meta's handshake, signature checks over the raw bytes, size limits.

use careline_whatsapp::signature::sign;
use serde_json::json;

use webhook_consumer::Secret;

use crate::helpers::*;

async fn handshake(app: &TestApp, mode: &str, token: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/webhook?hub.mode={mode}&hub.verify_token={token}&hub.challenge=1158201444", app.addr))
        .send()
        .await
        .expect("GET /webhook")
}

#[tokio::test]
async fn the_subscription_handshake_echoes_the_challenge_as_plain_text() {
    let app = spawn_app().await;
    let response = handshake(&app, "subscribe", VERIFY_TOKEN).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), "1158201444");
}

#[tokio::test]
async fn a_handshake_with_the_wrong_token_is_forbidden() {
    let app = spawn_app().await;
    assert_eq!(handshake(&app, "subscribe", "not-the-token").await.status(), 403);
    assert_eq!(app.client.get(format!("{}/webhook", app.addr)).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_handshake_with_the_wrong_mode_is_forbidden() {
    let app = spawn_app().await;
    assert_eq!(handshake(&app, "unsubscribe", VERIFY_TOKEN).await.status(), 403);
}

#[tokio::test]
async fn only_the_webhook_path_is_served_publicly() {
    let app = spawn_app().await;
    for path in ["/", "/metrics", "/healthz", "/webhook/extra", "/_sandbox/stats"] {
        let response = app.client.get(format!("{}{path}", app.addr)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // The admin listener is separate.
    let health = app.client.get(format!("{}/healthz", app.admin_addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_forged_signature_is_forbidden_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = meta_bytes(&envelope(&[statuses_value(vec![status("wamid.F", "sent", 1_750_000_000, None)])]));
    let forged = sign(b"someone-elses-secret", &body);
    assert_eq!(app.post(&body, Some(&forged)).await.status(), 403);
    assert_eq!(app.post(&body, Some("sha256=nothex")).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM webhook_inbox").await, 0);
}

#[tokio::test]
async fn a_missing_signature_is_unauthorized() {
    let app = spawn_app().await;
    let body = meta_bytes(&envelope(&[]));
    assert_eq!(app.post(&body, None).await.status(), 401);
    assert_eq!(app.count("SELECT count(*) FROM webhook_inbox").await, 0);
}

#[tokio::test]
async fn a_body_with_meta_escapes_verifies_over_its_raw_bytes_and_is_stored_verbatim() {
    let app = spawn_app().await;
    let value = envelope(&[messages_value(vec![text_message(
        "wamid.ESC",
        "Je serai là à 10/11, see https://example.org",
        1_750_000_000,
    )])]);
    let raw = meta_bytes(&value);
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.contains(r"\/") && text.contains(r"\u00e0"), "{text}");

    let response = app.post(&raw, Some(&sign(APP_SECRET.as_bytes(), &raw))).await;
    assert_eq!(response.status(), 200);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM webhook_inbox").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, raw);
    app.wait_until_settled().await;
    // The message text is never stored.
    assert_eq!(app.count("SELECT count(*) FROM inbound_messages WHERE action = 'other'").await, 1);
}

#[tokio::test]
async fn a_reserialised_body_with_the_original_signature_is_forbidden() {
    let app = spawn_app().await;
    let value = envelope(&[messages_value(vec![text_message("wamid.RE", "mangé à 10/11", 1_750_000_000)])]);
    let raw = meta_bytes(&value);
    let signature = sign(APP_SECRET.as_bytes(), &raw);
    let reparsed: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let reserialised = serde_json::to_vec(&reparsed).unwrap();
    assert_ne!(reserialised, raw);
    assert_eq!(app.post(&reserialised, Some(&signature)).await.status(), 403);
    assert_eq!(app.post(&raw, Some(&signature)).await.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 4096).await;
    let padding = "x".repeat(5000);
    let body = serde_json::to_vec(&json!({ "object": "whatsapp_business_account", "padding": padding })).unwrap();
    let response = app.post(&body, Some(&sign(APP_SECRET.as_bytes(), &body))).await;
    assert_eq!(response.status(), 413);
    assert_eq!(app.count("SELECT count(*) FROM webhook_inbox").await, 0);

    let metrics = app.client.get(format!("{}/metrics", app.admin_addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("careline_webhook_requests_total"), "{metrics}");
}

#[tokio::test]
async fn the_default_limit_refuses_a_body_just_over_one_mebibyte() {
    let app = spawn_app().await;
    let body = vec![b' '; 1024 * 1024 + 1];
    let response = app.post(&body, Some(&sign(APP_SECRET.as_bytes(), &body))).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_stored_answered_200_and_marked_processed_with_its_error() {
    let app = spawn_app().await;
    let body = b"{ this is not json";
    app.post_signed(body).await;
    app.wait_until_settled().await;
    let (stored, last_error): (Vec<u8>, Option<String>) =
        sqlx::query_as("SELECT body, last_error FROM webhook_inbox WHERE processed_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, body);
    assert!(last_error.unwrap().contains("unreadable body"));
}

#[tokio::test]
async fn a_webhook_is_refused_with_503_while_the_database_is_unreachable() {
    let app = spawn_app_with(|s| {
        s.database_url = Secret::new("postgres://postgres:postgres@127.0.0.1:1/nowhere");
        s.migrate_on_start = false;
    })
    .await;
    let body = meta_bytes(&envelope(&[]));
    let response = app.post(&body, Some(&sign(APP_SECRET.as_bytes(), &body))).await;
    assert_eq!(response.status(), 503);
}
