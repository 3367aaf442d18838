//! A sandbox on 127.0.0.1:0 with fast status timings, and a webhook receiver that records
//! every POST and verifies its signature with Careline's own `verify_signature`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use careline_whatsapp::signature::{SignatureError, verify_signature};
use careline_whatsapp::webhook::{InboundMessage, Status, WebhookEnvelope};
use careline_whatsapp::{ClientSettings, WhatsAppClient};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wa_sandbox::{PhoneNumberSpec, Sandbox, SandboxHandle, SandboxSettings, TemplateSpec};

pub const TOKEN: &str = "test-token";
pub const APP_SECRET: &str = "test-app-secret";
pub const NUMBER_ID: &str = "1001";
pub const DISPLAY_NUMBER: &str = "15550001001";
pub const TEMPLATE: &str = "appointment_reminder";

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedPost {
    pub raw: Bytes,
    pub signature: Option<String>,
    pub verified: Result<(), SignatureError>,
    pub envelope: WebhookEnvelope,
}

#[derive(Default)]
struct ReceiverState {
    posts: Mutex<Vec<ReceivedPost>>,
    /// Answer 500 to this many POSTs before answering 200.
    fail_next: AtomicU32,
}

/// A webhook endpoint standing in for Careline's webhook-consumer.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn spawn() -> Self {
        async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, raw: Bytes) -> StatusCode {
            let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let verified = verify_signature(APP_SECRET.as_bytes(), &raw, signature.as_deref());
            let envelope = WebhookEnvelope::parse(&raw).unwrap_or_default();
            state.posts.lock().unwrap().push(ReceivedPost { raw, signature, verified, envelope });
            let failing =
                state.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
        }
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let router = Router::new().route("/webhook", post(receive)).with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    /// Answer 500 to the next `n` POSTs.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn posts(&self) -> Vec<ReceivedPost> {
        self.state.posts.lock().unwrap().clone()
    }

    /// Every status in arrival order.
    pub fn statuses(&self) -> Vec<Status> {
        self.posts().iter().flat_map(|p| p.envelope.statuses().map(|(_, s)| s.clone()).collect::<Vec<_>>()).collect()
    }

    /// `(status, timestamp)` of one message's statuses, in arrival order.
    pub fn statuses_of(&self, wamid: &str) -> Vec<String> {
        self.statuses().into_iter().filter(|s| s.id.as_deref() == Some(wamid)).filter_map(|s| s.status).collect()
    }

    /// Every inbound message in arrival order.
    pub fn inbound(&self) -> Vec<InboundMessage> {
        self.posts().iter().flat_map(|p| p.envelope.messages().map(|(_, m)| m.clone()).collect::<Vec<_>>()).collect()
    }

    /// Waits until `done` holds for the receiver, or panics after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; received {} posts",
                self.posts().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A running sandbox; stops when dropped.
pub struct TestApp {
    pub base_url: String,
    pub handle: SandboxHandle,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The test template: 3 body parameters, Confirm / Reschedule / Cancel.
pub fn test_template() -> TemplateSpec {
    TemplateSpec {
        name: TEMPLATE.into(),
        languages: vec!["en".into(), "hi".into()],
        body_params: 3,
        quick_replies: vec!["Confirm".into(), "Reschedule".into(), "Cancel".into()],
        ..TemplateSpec::default()
    }
}

/// Fast, deterministic settings: every message is delivered and read within ~50 ms.
pub fn test_settings(webhook_url: &str) -> SandboxSettings {
    let mut s = SandboxSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        access_token: TOKEN.into(),
        app_secret: APP_SECRET.into(),
        webhook_url: Some(webhook_url.to_owned()),
        templates: vec![test_template()],
        phone_numbers: vec![PhoneNumberSpec {
            id: NUMBER_ID.into(),
            display_phone_number: DISPLAY_NUMBER.into(),
            mps: None,
        }],
        ..SandboxSettings::default()
    };
    s.statuses.sent_after = Duration::from_millis(5);
    s.statuses.delivered_after = Duration::from_millis(15);
    s.statuses.read_after = Duration::from_millis(30);
    s.statuses.read_probability = 1.0;
    s.delivery.retry_base = Duration::from_millis(20);
    s.delivery.retry_max = Duration::from_millis(100);
    s.auto_reply_after = Duration::from_millis(10);
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut SandboxSettings)) -> TestApp {
    let receiver = Receiver::spawn().await;
    let mut settings = test_settings(&receiver.url);
    customise(&mut settings);
    let sandbox = Sandbox::build(settings).await.expect("sandbox builds");
    let base_url = sandbox.base_url();
    let handle = sandbox.handle();
    let shutdown = CancellationToken::new();
    tokio::spawn(sandbox.run_until_stopped(shutdown.clone()));
    TestApp { base_url, handle, receiver, http: reqwest::Client::new(), shutdown }
}

/// A template send body with quick-reply payloads `CONFIRM:<cb>` and `RESCHEDULE:<cb>`.
pub fn template_body(to: &str, callback: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "biz_opaque_callback_data": callback,
        "template": {
            "name": TEMPLATE,
            "language": { "code": "en" },
            "components": [
                { "type": "body", "parameters": [
                    { "type": "text", "text": "Asha" },
                    { "type": "text", "text": "Tue 12 Nov, 10:30" },
                    { "type": "text", "text": "City Hospital" } ] },
                { "type": "button", "sub_type": "quick_reply", "index": "0",
                  "parameters": [ { "type": "payload", "payload": format!("CONFIRM:{callback}") } ] },
                { "type": "button", "sub_type": "quick_reply", "index": "1",
                  "parameters": [ { "type": "payload", "payload": format!("RESCHEDULE:{callback}") } ] }
            ]
        }
    })
}

/// A recipient number unique to `n`.
pub fn patient(n: u32) -> String {
    format!("9198{n:08}")
}

impl TestApp {
    /// POSTs `body` to the messages endpoint with the right token.
    pub async fn post_messages(&self, number_id: &str, body: &Value) -> (u16, Value) {
        self.post_messages_raw(number_id, Some(TOKEN), serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_messages_raw(&self, number_id: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v23.0/{number_id}/messages", self.base_url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Sends the test template to `to`; returns the wamid.
    pub async fn send_template(&self, to: &str, callback: &str) -> String {
        let (status, body) = self.post_messages(NUMBER_ID, &template_body(to, callback)).await;
        assert_eq!(status, 200, "{body}");
        body["messages"][0]["id"].as_str().unwrap().to_owned()
    }

    pub fn client(&self, timeout: Duration) -> WhatsAppClient {
        let mut settings = ClientSettings::new(&self.base_url, "v23.0", TOKEN);
        settings.timeout = timeout;
        WhatsAppClient::new(settings).unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.base_url)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base_url)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The Meta error code of an error body.
pub fn error_code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap_or_else(|| panic!("not a Graph error: {body}"))
}
