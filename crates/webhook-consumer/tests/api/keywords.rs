//! STOP / START / HELP in the patient's language, the answers Careline sends itself through
//! wa-sandbox, the 24 h customer-service window and the hand-over of free text to a person.

use std::sync::Arc;
use std::time::Duration;

use careline_domain::consent::ConsentState;
use careline_domain::events::Event;
use careline_domain::facility::NetworkConfig;
use careline_domain::reply::{ReplyAction, button_payload};
use careline_whatsapp::types::Template;
use careline_whatsapp::{ClientSettings, SendRequest, WhatsAppClient};
use tokio_util::sync::CancellationToken;
use wa_sandbox::{Sandbox, SandboxHandle, SandboxMessage, SandboxSettings};

use crate::helpers::*;

const NETWORK: &str = r#"
[templates.booking_confirmation]
name = "appointment_booked"
languages = { en = "en" }
[templates.reminder]
name = "appointment_reminder"
languages = { en = "en" }

[[facility]]
id = "F-north"
name = "North Clinic"
time_zone = "Europe/Berlin"
phone_number_id = "106540352242922"
contact = { phone = "+49 30 5550 1000", email = "desk@north.example", hours = "Mon-Fri 08:00-18:00" }

[keywords]
stop = ["genug"]
"#;

/// The webhook-consumer with a network file and a WhatsApp client, and wa-sandbox as Meta.
struct Setup {
    app: TestApp,
    sandbox: SandboxHandle,
    client: WhatsAppClient,
    _stop_sandbox: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    // The sandbox needs the consumer's address and the consumer the sandbox's: reserve a port.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let webhook_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let mut settings = SandboxSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        app_secret: APP_SECRET.to_owned(),
        webhook_url: Some(format!("http://{webhook_addr}/webhook")),
        ..SandboxSettings::default()
    };
    settings.statuses.sent_after = Duration::from_millis(10);
    settings.statuses.delivered_after = Duration::from_millis(20);
    settings.statuses.read_probability = 0.0;
    let sandbox = Sandbox::build(settings).await.expect("sandbox");
    let (base_url, handle) = (sandbox.base_url(), sandbox.handle());
    let stop_sandbox = CancellationToken::new();
    tokio::spawn(sandbox.run_until_stopped(stop_sandbox.clone()));
    let network = Arc::new(NetworkConfig::from_toml(NETWORK).expect("network"));
    let client_settings = ClientSettings::new(base_url, "v23.0", "sandbox-token");
    let app = spawn_app_with(|s| {
        s.webhook_listen_addr = webhook_addr;
        s.network = Some(network);
        s.whatsapp = Some(client_settings.clone());
        s.poll_interval = Duration::from_millis(50);
    })
    .await;
    let client = WhatsAppClient::new(client_settings).expect("client");
    Setup { app, sandbox: handle, client, _stop_sandbox: stop_sandbox.drop_guard() }
}

impl Setup {
    /// Sends a reminder as the sender would, so the patient has a chat to type into.
    async fn send_reminder(&self, fixture: &Fixture, buttons: &[ReplyAction]) -> String {
        let mut template = Template::new("appointment_reminder", "en").with_body_text([
            "Asha",
            "Dr Rao",
            "North Clinic",
            "12 Dec 10:30",
            "https://maps.example/n",
        ]);
        for (i, action) in buttons.iter().enumerate() {
            template = template.with_quick_reply(i, button_payload(*action, fixture.job_id));
        }
        let request = SendRequest::template(PATIENT_WA_ID, template).with_callback_data(fixture.job_id.to_string());
        let accepted = self.client.send(PHONE_NUMBER_ID, &request).await.expect("sandbox accepts the reminder");
        sqlx::query("UPDATE sends SET wamid = $1 WHERE job_id = $2")
            .bind(&accepted.wamid)
            .bind(fixture.job_id)
            .execute(&self.app.pool)
            .await
            .unwrap();
        accepted.wamid
    }

    /// Free-form texts the sandbox accepted for the patient.
    fn texts(&self) -> Vec<SandboxMessage> {
        self.sandbox.messages().into_iter().filter(|m| m.wa_id == PATIENT_WA_ID && m.message_type == "text").collect()
    }

    async fn wait_for_texts(&self, n: usize) -> Vec<SandboxMessage> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.texts().len() < n {
            assert!(tokio::time::Instant::now() < deadline, "only {} text(s), expected {n}", self.texts().len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.app.wait_until_settled().await;
        // Give a duplicate the time of two replier rounds to show up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let texts = self.texts();
        assert_eq!(texts.len(), n, "{texts:#?}");
        texts
    }
}

async fn set_language(pool: &careline_store::PgPool, language: &str) {
    sqlx::query("UPDATE patients SET language = $1").bind(language).execute(pool).await.unwrap();
}

#[tokio::test]
async fn stop_in_hindi_opts_out_and_is_acknowledged_once_in_hindi_even_when_the_webhook_is_replayed() {
    let s = setup().await;
    let fixture = seed_appointment(&s.app.pool).await;
    set_language(&s.app.pool, "hi").await;
    s.send_reminder(&fixture, &[ReplyAction::Confirm]).await;

    let receipt = s.sandbox.type_text(PATIENT_E164, "बंद करो").expect("type STOP in Hindi");
    let texts = s.wait_for_texts(1).await;
    let ack = texts[0].text.as_deref().unwrap_or_default();
    assert!(ack.starts_with("North Clinic: ") && ack.contains("अपॉइंटमेंट संदेश नहीं"), "{ack}");
    let consent = careline_store::consent::current(&s.app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(consent, Some(ConsentState::OptedOut));

    // Meta redelivers the same message: nothing new is recorded or sent.
    let replay = envelope(&[messages_value(vec![text_message(
        &receipt.inbound_wamid,
        "बंद करो",
        chrono::Utc::now().timestamp(),
    )])]);
    s.app.post_signed(&meta_bytes(&replay)).await;
    s.wait_for_texts(1).await;
    assert_eq!(s.app.count("SELECT count(*) FROM service_replies").await, 1);
    assert_eq!(s.app.count("SELECT count(*) FROM service_replies WHERE state = 'sent' AND wamid IS NOT NULL").await, 1);
}

#[tokio::test]
async fn a_stop_reminders_quick_reply_and_a_configured_word_both_opt_out_and_start_opts_back_in() {
    let s = setup().await;
    let fixture = seed_appointment(&s.app.pool).await;
    let wamid = s.send_reminder(&fixture, &[ReplyAction::Confirm, ReplyAction::Stop]).await;

    s.sandbox.tap_button(&wamid, 1).expect("tap Stop reminders");
    let texts = s.wait_for_texts(1).await;
    assert!(texts[0].text.as_deref().unwrap_or_default().contains("no longer receive"), "{texts:#?}");
    let consent = careline_store::consent::current(&s.app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(consent, Some(ConsentState::OptedOut));
    let stop_button: Option<String> =
        sqlx::query_scalar("SELECT job_id::text FROM inbound_messages WHERE action = 'stop'")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(stop_button, Some(fixture.job_id.to_string()), "the button names its reminder");

    s.sandbox.type_text(PATIENT_E164, "Start").expect("type START");
    let texts = s.wait_for_texts(2).await;
    assert!(texts[1].text.as_deref().unwrap_or_default().contains("receive appointment messages again"));
    let consent = careline_store::consent::current(&s.app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(consent, Some(ConsentState::OptedIn));

    s.sandbox.type_text(PATIENT_E164, "GENUG!").expect("type a configured STOP word");
    s.wait_for_texts(3).await;
    let consent = careline_store::consent::current(&s.app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(consent, Some(ConsentState::OptedOut));
}

#[tokio::test]
async fn help_in_spanish_answers_with_the_facility_contact_details() {
    let s = setup().await;
    let fixture = seed_appointment(&s.app.pool).await;
    set_language(&s.app.pool, "es-MX").await;
    s.send_reminder(&fixture, &[]).await;

    s.sandbox.type_text(PATIENT_E164, "¡AYUDA!").expect("type HELP in Spanish");
    let texts = s.wait_for_texts(1).await;
    assert_eq!(
        texts[0].text.as_deref(),
        Some("North Clinic: Contacto: +49 30 5550 1000 · desk@north.example · Mon-Fri 08:00-18:00")
    );
    // HELP changes no consent.
    assert_eq!(s.app.count("SELECT count(*) FROM consent_log").await, 0);
}

#[tokio::test]
async fn no_free_form_answer_goes_out_once_the_24_hour_window_has_closed() {
    let s = setup().await;
    seed_appointment(&s.app.pool).await;
    // A HELP that reaches Careline 25 hours late (a long outage): the window it opened is over.
    let sent_at = chrono::Utc::now().timestamp() - 25 * 3600;
    s.app
        .post_signed(&meta_bytes(&envelope(&[messages_value(vec![text_message("wamid.LATE", "help", sent_at)])])))
        .await;
    s.app.wait_for_count("SELECT count(*) FROM service_replies WHERE state = 'window_closed'", 1).await;
    let closes: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_inbound_at + interval '24 hours' FROM customer_service_windows")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert!(closes < chrono::Utc::now());
    assert!(s.texts().is_empty(), "a free-form message left outside the window");

    // A fresh message reopens the window and the answer goes out.
    let now = chrono::Utc::now().timestamp();
    s.app.post_signed(&meta_bytes(&envelope(&[messages_value(vec![text_message("wamid.NOW", "help", now)])]))).await;
    s.app
        .wait_for_count(
            "SELECT count(*) FROM service_replies WHERE inbound_message_id = 'wamid.NOW' AND state <> 'pending'",
            1,
        )
        .await;
    // The sandbox has its own record of the window (only the patient's own messages through it
    // open it), so this direct webhook is refused by "Meta" — but Careline did try: the answer
    // was claimed and called, not dropped as outside the window.
    let state: String = sqlx::query_scalar("SELECT state FROM service_replies WHERE inbound_message_id = 'wamid.NOW'")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_ne!(state, "window_closed");
}

#[tokio::test]
async fn free_text_is_handed_to_a_person_with_ids_only() {
    let s = setup().await;
    let fixture = seed_appointment(&s.app.pool).await;
    let wamid = s.send_reminder(&fixture, &[ReplyAction::Confirm]).await;
    // A reply quoting the reminder, so the appointment is known.
    let body = json_reply_to(&wamid, "wamid.FREE", "Can I bring my daughter along?");
    s.app.post_signed(&meta_bytes(&body)).await;
    s.app.wait_until_settled().await;
    let events = s.app.hospital_events(2).await;
    let handover: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::NeedsHuman(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(handover.len(), 1, "{events:#?}");
    assert_eq!(handover[0].inbound_message_id, "wamid.FREE");
    assert_eq!(handover[0].facility_id.as_deref(), Some(fixture.facility_id.as_str()));
    assert_eq!(handover[0].appointment_id.as_deref(), Some(fixture.appointment_id.as_str()));
    let published = serde_json::to_string(&events).unwrap();
    assert!(!published.contains("daughter"), "the text left Careline: {published}");
    assert!(s.texts().is_empty(), "free text gets no automatic answer");
}

/// A text message that quotes `context_wamid`.
fn json_reply_to(context_wamid: &str, id: &str, text: &str) -> serde_json::Value {
    let mut message = text_message(id, text, chrono::Utc::now().timestamp());
    message["context"] = serde_json::json!({ "from": "15550783881", "id": context_wamid });
    envelope(&[messages_value(vec![message])])
}
