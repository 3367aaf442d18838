use std::time::Duration;

use careline_domain::template::format_local;
use chrono::DateTime;

use crate::helpers::{Fixture, NUMBER_ID, spawn_app};

#[tokio::test]
async fn a_consented_patient_gets_exactly_one_message_with_the_job_id_as_callback_data() {
    let app = spawn_app().await;
    let job = app.seed(&Fixture::default()).await;

    app.publish(&job).await;
    let row = app.settled(job.job_id).await;

    assert_eq!(row.state, "accepted", "{row:?}");
    let messages = app.messages_for(job.job_id);
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(row.wamid.as_deref(), Some(message.wamid.as_str()));
    assert_eq!(message.phone_number_id, NUMBER_ID);
    assert_eq!(message.wa_id, "919812345678");
    assert_eq!(message.template.as_deref(), Some("appointment_booked"));
    assert_eq!(message.language.as_deref(), Some("en"));
    let starts_at: DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT a.starts_at FROM appointments a JOIN jobs j USING (appointment_id) WHERE j.job_id = $1",
    )
    .bind(job.job_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        message.params,
        ["Asha".to_owned(), format_local(starts_at, chrono_tz::Asia::Kolkata), "City General".to_owned()]
    );
    let payloads: Vec<_> = message.buttons.iter().map(|b| b.payload.clone().unwrap_or_default()).collect();
    assert_eq!(
        payloads,
        [format!("CONFIRM:{}", job.job_id), format!("RESCHEDULE:{}", job.job_id), format!("CANCEL:{}", job.job_id)]
    );
    assert_eq!(app.attempts(job.job_id).await, [(1, "accepted".to_owned(), None)]);
}

#[tokio::test]
async fn a_reminder_uses_the_reminder_template_with_clinician_and_address() {
    let app = spawn_app().await;
    let job = app.seed(&Fixture { kind: "reminder_2h", ..Fixture::default() }).await;

    app.publish(&job).await;

    assert_eq!(app.settled(job.job_id).await.state, "accepted");
    let message = &app.messages_for(job.job_id)[0];
    assert_eq!(message.template.as_deref(), Some("appointment_reminder"));
    assert_eq!(message.language.as_deref(), Some("en_US"));
    assert_eq!(message.params[0], "Asha");
    assert_eq!(&message.params[2..], ["Dr Rao", "City General", "1 Ring Road"]);
}

#[tokio::test]
async fn the_same_job_published_twice_sends_one_message() {
    let app = spawn_app().await;
    let job = app.seed(&Fixture::default()).await;

    app.publish_all(&[job.clone(), job.clone()]).await;
    assert_eq!(app.settled(job.job_id).await.state, "accepted");
    // The duplicate delivery is settled too (it may have waited for the first one's lock).
    app.publish(&job).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(app.messages_for(job.job_id).len(), 1);
    assert_eq!(app.sandbox.stats().accepted, 1);
    assert_eq!(app.attempts(job.job_id).await.len(), 1);
}
