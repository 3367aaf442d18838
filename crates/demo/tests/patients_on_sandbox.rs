//! The simulated patients answer through wa-sandbox's admin API exactly as planned.

use std::time::Duration;

use careline_demo::patients::{Answer, Patients, SandboxClient, answer_of};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wa_sandbox::{Sandbox, SandboxSettings};

const NUMBER_ID: &str = "106540352242922";

async fn webhook_receiver(shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/webhook", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.unwrap();
    });
    url
}

#[tokio::test]
async fn each_recipient_answers_once_as_the_seed_decides() {
    let shutdown = CancellationToken::new();
    let settings = SandboxSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        webhook_url: Some(webhook_receiver(shutdown.clone()).await),
        ..SandboxSettings::default()
    };
    let sandbox = Sandbox::build(settings).await.unwrap();
    let (base_url, handle) = (sandbox.base_url(), sandbox.handle());
    tokio::spawn(sandbox.run_until_stopped(shutdown.clone()));

    let http = reqwest::Client::new();
    let recipients: Vec<String> = (0..60).map(|i| format!("9198{:08}", 10_000_000 + i * 7)).collect();
    for (i, to) in recipients.iter().enumerate() {
        let language = ["en", "hi", "es"][i % 3];
        let body = json!({
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {
                "name": "appointment_booked",
                "language": { "code": language },
                "components": [
                    { "type": "body", "parameters": [
                        { "type": "text", "text": "Asha" },
                        { "type": "text", "text": "Tue 24 Nov 2026, 10:30" },
                        { "type": "text", "text": "City General Hospital" } ] },
                    { "type": "button", "sub_type": "quick_reply", "index": "0",
                      "parameters": [ { "type": "payload", "payload": format!("CONFIRM:job-{i}") } ] },
                    { "type": "button", "sub_type": "quick_reply", "index": "1",
                      "parameters": [ { "type": "payload", "payload": format!("RESCHEDULE:job-{i}") } ] },
                    { "type": "button", "sub_type": "quick_reply", "index": "2",
                      "parameters": [ { "type": "payload", "payload": format!("CANCEL:job-{i}") } ] }
                ]
            }
        });
        let response = http
            .post(format!("{base_url}/v23.0/{NUMBER_ID}/messages"))
            .bearer_auth("sandbox-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }

    let client = SandboxClient::new(&base_url).unwrap();
    let mut patients = Patients::new(42);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while patients.answer_new_messages(&client).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "messages never reached the phones");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second look answers nobody twice.
    patients.answer_new_messages(&client).await.unwrap();

    let expected = |a| recipients.iter().filter(|r| answer_of(42, r) == a).count();
    assert_eq!(patients.answered.confirm, expected(Answer::Confirm));
    assert_eq!(patients.answered.reschedule, expected(Answer::Reschedule));
    assert_eq!(patients.answered.stop, expected(Answer::Stop));
    assert_eq!(patients.answered.failed, 0);
    let answers = patients.answered.confirm + patients.answered.reschedule + patients.answered.stop;
    assert!(answers > 0);
    assert_eq!(client.stats().await.unwrap().replies, answers as u64);
    assert_eq!(handle.stats().violations.total, 0);
    shutdown.cancel();
}
