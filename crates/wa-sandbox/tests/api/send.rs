//! The messages endpoint: Meta's success shape, authentication and validation errors.

use std::time::Duration;

use careline_whatsapp::types::{SendRequest, Template};
use careline_whatsapp::{ErrorClass, SendError};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn an_accepted_template_gets_metas_success_shape_and_is_recorded() {
    let app = spawn_app().await;
    let to = "+91 98123 45678";
    let (status, body) = app.post_messages(NUMBER_ID, &template_body(to, "outbox-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["contacts"], json!([{ "input": to, "wa_id": "919812345678" }]));
    let wamid = body["messages"][0]["id"].as_str().unwrap();
    assert!(wamid.starts_with("wamid."), "{wamid}");
    assert_eq!(body["messages"][0]["message_status"], "accepted");

    let stored = app.handle.message(wamid).unwrap();
    assert_eq!(stored.wa_id, "919812345678");
    assert_eq!(stored.template.as_deref(), Some(TEMPLATE));
    assert_eq!(stored.params, vec!["Asha", "Tue 12 Nov, 10:30", "City Hospital"]);
    assert_eq!(stored.biz_opaque_callback_data.as_deref(), Some("outbox-1"));
    assert_eq!(stored.buttons[1].payload.as_deref(), Some("RESCHEDULE:outbox-1"));
    assert_eq!(stored.buttons[2].payload, None);
    assert_eq!(app.handle.stats().accepted, 1);
}

#[tokio::test]
async fn careline_client_sends_through_the_sandbox() {
    let app = spawn_app().await;
    let request = SendRequest::template(
        patient(1),
        Template::new(TEMPLATE, "en")
            .with_body_text(["Asha", "Tue", "City Hospital"])
            .with_quick_reply(0, "CONFIRM:job-1"),
    )
    .with_callback_data("outbox-1");
    let accepted = app.client(Duration::from_secs(5)).send(NUMBER_ID, &request).await.unwrap();
    assert!(accepted.wamid.starts_with("wamid."));
    assert_eq!(accepted.wa_id.as_deref(), Some(patient(1).as_str()));
    assert!(app.handle.message(&accepted.wamid).is_some());
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_code_190() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&template_body(&patient(1), "x")).unwrap();
    for token in [None, Some("wrong")] {
        let (status, error) = app.post_messages_raw(NUMBER_ID, token, body.clone()).await;
        assert_eq!(status, 401);
        assert_eq!(error_code(&error), 190);
        assert_eq!(error["error"]["type"], "OAuthException");
        assert!(error["error"]["fbtrace_id"].is_string());
    }
    let mut settings = careline_whatsapp::ClientSettings::new(&app.base_url, "v23.0", "wrong");
    settings.timeout = Duration::from_secs(5);
    let client = careline_whatsapp::WhatsAppClient::new(settings).unwrap();
    let err = client.send(NUMBER_ID, &SendRequest::text(patient(1), "hi")).await.unwrap_err();
    assert!(matches!(err, SendError::Api { http_status: 401, code: 190, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::PauseNumber);
    assert_eq!(app.handle.stats().refused_by_code.get(&190), Some(&3));
}

#[tokio::test]
async fn an_unknown_phone_number_id_is_400_code_100() {
    let app = spawn_app().await;
    let (status, body) = app.post_messages("999", &template_body(&patient(1), "x")).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), 100);
    assert_eq!(body["error"]["type"], "GraphMethodException");
    assert_eq!(body["error"]["error_subcode"], 33);
}

#[tokio::test]
async fn invalid_requests_get_metas_codes_and_the_client_classifies_them_permanent() {
    let app = spawn_app().await;
    let to = patient(1);
    let mut wrong_language = template_body(&to, "x");
    wrong_language["template"]["language"]["code"] = json!("en_US");
    let mut unknown = template_body(&to, "x");
    unknown["template"]["name"] = json!("no_such_template");
    let mut missing_param = template_body(&to, "x");
    missing_param["template"]["components"][0]["parameters"].as_array_mut().unwrap().pop();
    let mut bad_button = template_body(&to, "x");
    bad_button["template"]["components"][1]["index"] = json!("7");
    let mut newline = template_body(&to, "x");
    newline["template"]["components"][0]["parameters"][2]["text"] = json!("City\nHospital");
    let cases = [
        (wrong_language, 132001),
        (unknown, 132001),
        (missing_param, 132000),
        (bad_button, 131009),
        (newline, 132018),
        (json!({ "messaging_product": "sms", "to": to, "text": { "body": "x" } }), 100),
        (json!({ "messaging_product": "whatsapp", "to": "12", "text": { "body": "x" } }), 131009),
        (json!({ "messaging_product": "whatsapp", "to": DISPLAY_NUMBER, "text": { "body": "x" } }), 131021),
        (
            json!({ "messaging_product": "whatsapp", "to": to, "type": "text", "text": { "body": "x".repeat(4097) } }),
            100,
        ),
    ];
    for (body, code) in cases {
        let (status, error) = app.post_messages(NUMBER_ID, &body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error_code(&error), code, "{body}");
        assert!(error["error"]["message"].as_str().unwrap().starts_with(&format!("(#{code})")));
        assert_eq!(careline_whatsapp::classify(code), ErrorClass::Permanent, "code {code}");
    }
    let stats = app.handle.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.refused, 9);
    assert_eq!(stats.refused_by_code.get(&132001), Some(&2));
}

#[tokio::test]
async fn garbage_bodies_get_graph_errors_never_a_crash() {
    let app = spawn_app().await;
    let deep = "[".repeat(100_000);
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not json".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        deep.into_bytes(),
        br#"{"messaging_product":"whatsapp","to":"919812345678","type":"template","template":{"name":1}}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":"919812345678","type":"template","template":{"name":"appointment_reminder","language":{"code":"en"},"components":[{"type":"body","parameters":[null,7,"x"]}]}}"#.to_vec(),
    ];
    for body in bodies {
        let (status, error) = app.post_messages_raw(NUMBER_ID, Some(TOKEN), body).await;
        assert_eq!(status, 400);
        assert!(error_code(&error) > 0);
    }
    let (status, _) = app.admin_get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_text_outside_the_service_window_is_accepted_then_fails_with_131047() {
    let app = spawn_app().await;
    let to = patient(2);
    let (status, body) = app
        .post_messages(
            NUMBER_ID,
            &json!({ "messaging_product": "whatsapp", "to": to, "type": "text",
                                           "text": { "body": "Your appointment is confirmed." } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let wamid = body["messages"][0]["id"].as_str().unwrap().to_owned();
    app.receiver.wait_until(Duration::from_secs(5), "the failed status", |r| !r.statuses_of(&wamid).is_empty()).await;
    let failed = app.receiver.statuses().into_iter().find(|s| s.id.as_deref() == Some(&wamid)).unwrap();
    assert_eq!(failed.status.as_deref(), Some("failed"));
    assert_eq!(failed.errors[0].code, Some(131047));
}

#[tokio::test]
async fn a_text_inside_the_window_opened_by_a_patient_message_is_delivered() {
    let app = spawn_app().await;
    let to = patient(3);
    app.handle.type_text(&to, "hello?").unwrap();
    app.receiver.wait_until(Duration::from_secs(5), "the inbound text", |r| !r.inbound().is_empty()).await;
    let (status, body) = app
        .post_messages(
            NUMBER_ID,
            &json!({ "messaging_product": "whatsapp", "to": to,
                                           "text": { "body": "Hi, how can we help?" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let wamid = body["messages"][0]["id"].as_str().unwrap().to_owned();
    app.receiver
        .wait_until(Duration::from_secs(5), "read", |r| r.statuses_of(&wamid).contains(&"read".to_owned()))
        .await;
    assert!(!app.receiver.statuses_of(&wamid).contains(&"failed".to_owned()));
}
