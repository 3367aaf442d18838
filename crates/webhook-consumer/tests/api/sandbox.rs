//! End to end with wa-sandbox as Meta: a reminder is sent, its statuses arrive signed, duplicated
//! and reordered, and the patient taps Confirm and then types STOP.

use std::time::Duration;

use careline_domain::consent::ConsentState;
use careline_domain::events::Event;
use careline_domain::reply::{ReplyAction, button_payload};
use careline_whatsapp::types::Template;
use careline_whatsapp::{ClientSettings, SendRequest, WhatsAppClient};
use tokio_util::sync::CancellationToken;
use wa_sandbox::{Sandbox, SandboxSettings};

use crate::helpers::*;

#[tokio::test]
async fn a_patient_confirming_and_then_opting_out_through_the_sandbox_is_recorded_and_published() {
    let app = spawn_app().await;
    let fixture = seed_appointment(&app.pool).await;

    let mut settings = SandboxSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        app_secret: APP_SECRET.to_owned(),
        webhook_url: Some(format!("{}/webhook", app.addr)),
        ..SandboxSettings::default()
    };
    settings.statuses.sent_after = Duration::from_millis(10);
    settings.statuses.delivered_after = Duration::from_millis(60);
    settings.statuses.read_after = Duration::from_millis(120);
    settings.statuses.read_probability = 1.0;
    settings.statuses.duplicate_probability = 1.0;
    settings.statuses.reorder_probability = 1.0;
    let sandbox = Sandbox::build(settings).await.expect("sandbox");
    let (base_url, handle) = (sandbox.base_url(), sandbox.handle());
    let stop_sandbox = CancellationToken::new();
    tokio::spawn(sandbox.run_until_stopped(stop_sandbox.clone()));

    let client = WhatsAppClient::new(ClientSettings::new(base_url, "v23.0", "sandbox-token")).expect("client");
    let template = Template::new("appointment_reminder", "en")
        .with_body_text(["Asha", "Dr Rao", "North Clinic", "12 Dec 10:30", "https://maps.example/n"])
        .with_quick_reply(0, button_payload(ReplyAction::Confirm, fixture.job_id))
        .with_quick_reply(1, button_payload(ReplyAction::Reschedule, fixture.job_id))
        .with_quick_reply(2, button_payload(ReplyAction::Cancel, fixture.job_id));
    let request = SendRequest::template(PATIENT_WA_ID, template).with_callback_data(fixture.job_id.to_string());
    let accepted = client.send(PHONE_NUMBER_ID, &request).await.expect("sandbox accepts the reminder");
    sqlx::query("UPDATE sends SET wamid = $1 WHERE job_id = $2")
        .bind(&accepted.wamid)
        .bind(fixture.job_id)
        .execute(&app.pool)
        .await
        .unwrap();

    let read = format!(
        "SELECT count(*) FROM message_delivery WHERE wamid = '{}' AND status = 'read' AND job_id = '{}'",
        accepted.wamid, fixture.job_id
    );
    app.wait_for_count(&read, 1).await;

    handle.tap_button(&accepted.wamid, 0).expect("tap Confirm");
    app.wait_for_count("SELECT count(*) FROM inbound_messages WHERE action = 'confirm'", 1).await;
    handle.type_text(PATIENT_E164, "STOP").expect("type STOP");
    app.wait_for_count("SELECT count(*) FROM inbound_messages WHERE action = 'stop'", 1).await;
    assert!(handle.wait_for_webhooks(DEADLINE).await, "sandbox webhooks drained");
    app.wait_until_settled().await;

    assert_eq!(
        app.count(&format!("SELECT count(*) FROM message_status_events WHERE wamid = '{}'", accepted.wamid)).await,
        3
    );
    assert_eq!(app.count("SELECT count(*) FROM inbound_messages").await, 2);
    let appointment: Option<String> =
        sqlx::query_scalar("SELECT appointment_id FROM inbound_messages WHERE action = 'confirm'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(appointment.as_deref(), Some(fixture.appointment_id.as_str()));
    let consent = careline_store::consent::current(&app.pool, &fixture.patient_id, PATIENT_E164).await.unwrap();
    assert_eq!(consent, Some(ConsentState::OptedOut));

    let events = app.hospital_events(3).await;
    let confirms: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PatientReplied(r) if r.action == ReplyAction::Confirm => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(confirms.len(), 1, "{events:?}");
    assert_eq!(confirms[0].appointment_id.as_deref(), Some(fixture.appointment_id.as_str()));
    assert!(events.iter().any(|e| matches!(&e.event, Event::ConsentChanged(c) if c.state == ConsentState::OptedOut)));
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(handle.stats().webhooks.posts_failed, 0);
    stop_sandbox.cancel();
}
