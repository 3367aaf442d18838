//! `/_sandbox/*` introspection and administration, and `/healthz`.

use std::time::Duration;

use serde_json::json;
use wa_sandbox::{SandboxMessage, Stats};

use crate::helpers::*;

#[tokio::test]
async fn stats_and_messages_are_exposed_and_reset_clears_them() {
    let app = spawn_app().await;
    let wamid = app.send_template(&patient(1), "outbox-1").await;
    app.send_template(&patient(2), "outbox-2").await;
    app.post_messages(NUMBER_ID, &template_body(&patient(1), "again")).await;

    let (status, stats) = app.admin_get("/_sandbox/stats").await;
    assert_eq!(status, 200);
    let stats: Stats = serde_json::from_value(stats).unwrap();
    assert_eq!((stats.requests, stats.accepted, stats.refused), (3, 2, 1));
    assert_eq!(stats.violations.pair, 1);

    let (_, list) = app.admin_get(&format!("/_sandbox/messages?to=%2B{}", patient(1))).await;
    let list: Vec<SandboxMessage> = serde_json::from_value(list).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].wamid, wamid);
    assert_eq!(list[0].biz_opaque_callback_data.as_deref(), Some("outbox-1"));
    assert_eq!(list[0].params.len(), 3);
    let (_, all) = app.admin_get("/_sandbox/messages?limit=1").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["biz_opaque_callback_data"], "outbox-2");
    assert!(all[0]["accepted_at"].is_string());

    let (status, _) = app.admin_post("/_sandbox/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.handle.stats().accepted, 0);
    assert!(app.handle.messages().is_empty());
    // Limits were reset too: patient 1 can be messaged again at once.
    app.send_template(&patient(1), "after-reset").await;
}

#[tokio::test]
async fn templates_and_numbers_registered_at_runtime_can_be_used() {
    let app = spawn_app().await;
    let (status, _) = app
        .admin_post(
            "/_sandbox/templates",
            &json!({ "name": "lab_results_ready", "languages": ["pt_BR"],
                                                     "body_params": 1, "quick_reply_buttons": 1 }),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .admin_post(
            "/_sandbox/phone_numbers",
            &json!([{ "id": "3003", "display_phone_number": "15550003003", "mps": 5 }]),
        )
        .await;
    assert_eq!(status, 201);
    let body = json!({ "messaging_product": "whatsapp", "to": patient(1), "type": "template",
        "template": { "name": "lab_results_ready", "language": { "code": "pt_BR" },
                      "components": [ { "type": "body", "parameters": [ { "type": "text", "text": "Ana" } ] } ] } });
    let (status, answer) = app.post_messages("3003", &body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = app.admin_post("/_sandbox/templates", &json!({ "name": "", "languages": [] })).await;
    assert_eq!(status, 400);
    let (_, templates) = app.admin_get("/_sandbox/templates").await;
    assert!(templates.as_array().unwrap().iter().any(|t| t["name"] == "lab_results_ready"));
}

#[tokio::test]
async fn a_templates_file_is_loaded_at_start() {
    let path = std::env::temp_dir().join(format!("wa-sandbox-test-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
        [[phone_numbers]]
        id = "4004"
        display_phone_number = "15550004004"

        [[templates]]
        name = "prescription_ready"
        languages = ["es"]
        body_params = 2
        status = "APPROVED"

        [[templates]]
        name = "prescription_ready"
        languages = ["de"]
        body_params = 2
        status = "DISABLED"
        "#,
    )
    .unwrap();
    let file = path.clone();
    let app = spawn_app_with(move |s| s.templates_file = Some(file)).await;
    std::fs::remove_file(&path).ok();
    let body = |lang: &str| {
        json!({ "messaging_product": "whatsapp", "to": patient(1), "type": "template",
        "template": { "name": "prescription_ready", "language": { "code": lang },
                      "components": [ { "type": "body", "parameters": [
                          { "type": "text", "text": "Ana" }, { "type": "text", "text": "Farmacia" } ] } ] } })
    };
    let (status, answer) = app.post_messages("4004", &body("es")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = app.post_messages("4004", &body("de")).await;
    assert_eq!((status, error_code(&answer)), (400, 132016));
}

#[tokio::test]
async fn a_broken_templates_file_stops_the_build() {
    let path = std::env::temp_dir().join(format!("wa-sandbox-broken-{}.toml", std::process::id()));
    std::fs::write(&path, "[[templates]]\nname = 3\n").unwrap();
    let mut settings = test_settings("http://127.0.0.1:9/webhook");
    settings.templates_file = Some(path.clone());
    let result = wa_sandbox::Sandbox::build(settings).await;
    std::fs::remove_file(&path).ok();
    assert!(matches!(result, Err(wa_sandbox::SandboxError::Registry(_))));
}

#[tokio::test]
async fn healthz_answers_and_unknown_paths_get_a_graph_error() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/healthz", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = app.admin_get("/v23.0/1001/nothing").await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), 100);
}

#[tokio::test]
async fn stopping_ends_run_until_stopped_promptly_even_with_a_slow_answer_pending() {
    let receiver = Receiver::spawn().await;
    let mut settings = test_settings(&receiver.url);
    settings.faults.slow_probability = 1.0;
    settings.faults.slow_ms = 60_000;
    let sandbox = wa_sandbox::Sandbox::build(settings).await.unwrap();
    let url = format!("{}/v23.0/{NUMBER_ID}/messages", sandbox.base_url());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(sandbox.run_until_stopped(shutdown.clone()));
    let pending = tokio::spawn(async move {
        reqwest::Client::new().post(url).bearer_auth(TOKEN).json(&template_body(&patient(1), "x")).send().await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    pending.abort();
}
