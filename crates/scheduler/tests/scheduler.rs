//! The scheduler against real PostgreSQL and RabbitMQ, with a clock the tests move.

use std::sync::Arc;

use careline_bus::BusSettings;
use careline_domain::consent::{ConsentRecord, ConsentSource, ConsentState};
use careline_domain::events::{
    AppointmentStatus, AppointmentUpserted, Envelope, Event, PatientReplied, PatientUpserted,
};
use careline_domain::reply::ReplyAction;
use careline_domain::{Clock, ManualClock};
use careline_store::PgPool;
use chrono::{DateTime, Duration, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use scheduler::planner::AppointmentOutcome;
use scheduler::{Application, Settings};

const CONFIG: &str = r#"
[templates.booking_confirmation]
name = "appointment_booked"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]
buttons = ["confirm", "reschedule", "cancel"]
[templates.reminder]
name = "appointment_reminder"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]

[[facility]]
id = "city"
name = "City General"
time_zone = "Europe/Berlin"
phone_number_id = "1001"
quiet_hours = { start = "21:00", end = "08:00" }
"#;

struct TestScheduler {
    app: Application,
    pool: PgPool,
    bus: BusSettings,
    clock: ManualClock,
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn spawn_scheduler(now: DateTime<Utc>) -> TestScheduler {
    let (pool, url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let bus = BusSettings::for_test();
    let config_path = std::env::temp_dir().join(format!("careline-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&config_path, CONFIG).unwrap();
    let clock = ManualClock::new(now);
    let app = build(&url, &bus, &config_path, &clock, "worker-a").await;
    TestScheduler { app, pool, bus, clock }
}

async fn build(
    url: &str,
    bus: &BusSettings,
    config_path: &std::path::Path,
    clock: &ManualClock,
    worker: &str,
) -> Application {
    let settings = Settings {
        database_url: url.to_owned(),
        db_max_connections: 5,
        bus: bus.clone(),
        config_path: config_path.to_owned(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        migrate_on_start: false,
        prefetch: 16,
        concurrency: 4,
        tick_ms: 50,
        batch: 100,
        lease_ms: 30_000,
        worker_id: worker.to_owned(),
    };
    Application::build_with_clock(settings, Arc::new(clock.clone())).await.unwrap()
}

fn appointment(id: &str, version: i64, starts_at: &str, status: AppointmentStatus) -> AppointmentUpserted {
    AppointmentUpserted {
        appointment_id: id.into(),
        facility_id: "city".into(),
        patient_id: "P1".into(),
        version,
        status,
        starts_at: t(starts_at),
        duration_minutes: Some(20),
        clinician: Some("Dr. Rao".into()),
        department: None,
        instructions: None,
        reported_by: "test".into(),
    }
}

async fn jobs(pool: &PgPool, appointment_id: &str) -> Vec<(String, i32, String, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT kind, generation, state, due_at FROM jobs WHERE appointment_id = $1 ORDER BY generation, due_at, kind",
    )
    .bind(appointment_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Drains both lanes of the sender's queue (`{prefix}.sender.jobs.urgent` and
/// `{prefix}.sender.jobs`), returning the job ids published there; each job is checked to be in
/// its kind's lane.
async fn published_jobs(bus: &BusSettings) -> Vec<uuid::Uuid> {
    let conn = lapin::Connection::connect(&bus.url, Default::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let topology = careline_bus::Topology::new(&bus.prefix);
    let mut ids = Vec::new();
    for (queue, urgent) in [(topology.sender_jobs_urgent(), true), (topology.sender_jobs(), false)] {
        while let Some(message) = channel.basic_get(queue.clone().into(), BasicGetOptions::default()).await.unwrap() {
            let envelope: Envelope = serde_json::from_slice(&message.delivery.data).unwrap();
            message.delivery.ack(BasicAckOptions::default()).await.unwrap();
            match envelope.event {
                Event::JobDue(j) => {
                    assert_eq!(j.is_urgent(), urgent, "{} in the wrong lane", j.kind);
                    ids.push(j.job_id);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    ids
}

#[tokio::test]
async fn a_new_appointment_gets_a_confirmation_and_two_reminders_and_a_replay_changes_nothing() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    let a = appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked);
    assert_eq!(
        s.app.planner().apply_appointment(&a).await.unwrap(),
        AppointmentOutcome::Created { planned: 3, skipped: 0 }
    );
    assert_eq!(s.app.planner().apply_appointment(&a).await.unwrap(), AppointmentOutcome::Stale);
    let older = appointment("A1", 0, "2026-06-11T10:00:00Z", AppointmentStatus::Booked);
    assert_eq!(s.app.planner().apply_appointment(&older).await.unwrap(), AppointmentOutcome::Stale);
    assert_eq!(
        jobs(&s.pool, "A1").await,
        [
            ("booking_confirmation".into(), 1, "planned".into(), t("2026-06-01T09:00:00Z")),
            ("reminder_48h".into(), 1, "planned".into(), t("2026-06-08T10:00:00Z")),
            ("reminder_2h".into(), 1, "planned".into(), t("2026-06-10T08:00:00Z")),
        ]
    );
}

#[tokio::test]
async fn a_reschedule_revokes_the_old_plan_and_plans_the_new_time() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    s.app
        .planner()
        .apply_appointment(&appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked))
        .await
        .unwrap();
    let moved = appointment("A1", 2, "2026-06-12T12:00:00Z", AppointmentStatus::Booked);
    assert_eq!(
        s.app.planner().apply_appointment(&moved).await.unwrap(),
        AppointmentOutcome::Replanned { revoked: 3, planned: 3, skipped: 0 }
    );
    let all = jobs(&s.pool, "A1").await;
    assert!(all.iter().filter(|j| j.1 == 1).all(|j| j.2 == "revoked"));
    let new: Vec<_> = all.iter().filter(|j| j.1 == 2).map(|j| (j.0.as_str(), j.3)).collect();
    assert_eq!(
        new,
        [
            ("booking_confirmation", t("2026-06-01T09:00:00Z")),
            ("reminder_48h", t("2026-06-10T12:00:00Z")),
            ("reminder_2h", t("2026-06-12T10:00:00Z")),
        ]
    );
    // A change that does not move the appointment keeps the plan.
    let mut renamed = moved.clone();
    renamed.version = 3;
    renamed.clinician = Some("Dr. Iyer".into());
    assert_eq!(s.app.planner().apply_appointment(&renamed).await.unwrap(), AppointmentOutcome::Updated);
    assert_eq!(jobs(&s.pool, "A1").await.iter().filter(|j| j.2 == "planned").count(), 3);
}

#[tokio::test]
async fn a_cancel_revokes_every_pending_job_including_one_already_published() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    s.app
        .planner()
        .apply_appointment(&appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked))
        .await
        .unwrap();
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 1, "the confirmation is due now");
    let cancelled = appointment("A1", 2, "2026-06-10T10:00:00Z", AppointmentStatus::Cancelled);
    assert_eq!(
        s.app.planner().apply_appointment(&cancelled).await.unwrap(),
        AppointmentOutcome::Cancelled { revoked: 3 }
    );
    assert!(jobs(&s.pool, "A1").await.iter().all(|j| j.2 == "revoked"));
    s.clock.advance(Duration::days(30));
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 0);
}

#[tokio::test]
async fn reminders_whose_time_has_passed_are_skipped_with_a_reason() {
    let s = spawn_scheduler(t("2026-06-09T12:00:00Z")).await;
    let a = appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked);
    assert_eq!(
        s.app.planner().apply_appointment(&a).await.unwrap(),
        AppointmentOutcome::Created { planned: 2, skipped: 1 }
    );
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM jobs WHERE kind = 'reminder_48h'").fetch_one(&s.pool).await.unwrap();
    assert_eq!(reason, "too_late");
}

#[tokio::test]
async fn due_jobs_are_published_once_each_as_the_clock_moves() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    for i in 0..5 {
        let a = appointment(&format!("A{i}"), 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked);
        s.app.planner().apply_appointment(&a).await.unwrap();
    }
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 5);
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 0, "nothing else is due yet");
    s.clock.set(t("2026-06-08T10:00:00Z"));
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 5, "the 48 h reminders");
    s.clock.set(t("2026-06-10T08:00:00Z"));
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 5, "the 2 h reminders");
    let published = published_jobs(&s.bus).await;
    assert_eq!(published.len(), 15);
    let unique: std::collections::BTreeSet<_> = published.iter().collect();
    assert_eq!(unique.len(), 15);
    let enqueued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'enqueued'").fetch_one(&s.pool).await.unwrap();
    assert_eq!(enqueued, 15);
}

#[tokio::test]
async fn two_scheduler_replicas_never_claim_the_same_job() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    let url = s.pool.connect_options().get_database().map(|db| {
        let base = careline_store::testing::database_url();
        format!("{}/{db}", base.rsplit_once('/').unwrap().0)
    });
    let config_path = std::env::temp_dir().join(format!("careline-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&config_path, CONFIG).unwrap();
    let second = build(&url.unwrap(), &s.bus, &config_path, &s.clock, "worker-b").await;
    for i in 0..200 {
        let a = appointment(&format!("A{i}"), 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked);
        s.app.planner().apply_appointment(&a).await.unwrap();
    }
    let (mut a_total, mut b_total) = (0, 0);
    loop {
        let (a, b) = tokio::join!(s.app.dispatcher().dispatch_once(), second.dispatcher().dispatch_once());
        let (a, b) = (a.unwrap(), b.unwrap());
        if a + b == 0 {
            break;
        }
        a_total += a;
        b_total += b;
    }
    assert_eq!(a_total + b_total, 200);
    let published = published_jobs(&s.bus).await;
    let unique: std::collections::BTreeSet<_> = published.iter().collect();
    assert_eq!((published.len(), unique.len()), (200, 200));
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_by_another_replica() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    s.app
        .planner()
        .apply_appointment(&appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked))
        .await
        .unwrap();
    // A replica claims and dies before publishing.
    let claimed = careline_store::jobs::claim_due(&s.pool, s.clock.now(), "dead-worker", Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 0, "the lease still holds");
    s.clock.advance(Duration::seconds(31));
    assert_eq!(s.app.dispatcher().dispatch_once().await.unwrap(), 1);
    assert_eq!(published_jobs(&s.bus).await, [claimed[0].job_id]);
}

#[tokio::test]
async fn patient_consent_is_appended_once_and_a_confirm_reply_marks_the_appointment() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    let patient = Envelope::new(
        Event::PatientUpserted(PatientUpserted {
            patient_id: "P1".into(),
            facility_id: "city".into(),
            first_name: Some("Asha".into()),
            phone: "+4915123456789".into(),
            language: "en".into(),
            consent: Some(ConsentRecord {
                state: ConsentState::OptedIn,
                recorded_at: t("2026-05-30T10:00:00Z"),
                source: ConsentSource::BookingForm,
                evidence: Some("form-7".into()),
                wording_version: Some("v2".into()),
                purpose: Default::default(),
                channel: Default::default(),
                recorded_by: Some("desk-12".into()),
            }),
            reported_by: "test".into(),
        }),
        t("2026-06-01T09:00:00Z"),
    );
    assert_eq!(s.app.planner().handle(patient.clone()).await, careline_bus::Handling::Ack);
    assert_eq!(s.app.planner().handle(patient).await, careline_bus::Handling::Ack);
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM consent_log").fetch_one(&s.pool).await.unwrap();
    assert_eq!(entries, 1);
    assert_eq!(
        careline_store::consent::current(&s.pool, "P1", "+4915123456789").await.unwrap(),
        Some(ConsentState::OptedIn)
    );

    s.app
        .planner()
        .apply_appointment(&appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked))
        .await
        .unwrap();
    let reply = PatientReplied {
        inbound_message_id: "wamid.in1".into(),
        action: ReplyAction::Confirm,
        appointment_id: Some("A1".into()),
        job_id: None,
        facility_id: Some("city".into()),
        received_at: t("2026-06-01T09:05:00Z"),
    };
    assert!(s.app.planner().apply_reply(&reply).await.unwrap());
    let response: Option<String> =
        sqlx::query_scalar("SELECT patient_response FROM appointments WHERE appointment_id = 'A1'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(response.as_deref(), Some("confirmed"));
}

#[tokio::test]
async fn a_patient_cancel_request_stops_further_reminders() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    s.app
        .planner()
        .apply_appointment(&appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked))
        .await
        .unwrap();
    let reply = PatientReplied {
        inbound_message_id: "wamid.in2".into(),
        action: ReplyAction::Cancel,
        appointment_id: Some("A1".into()),
        job_id: None,
        facility_id: None,
        received_at: t("2026-06-01T09:05:00Z"),
    };
    assert!(s.app.planner().apply_reply(&reply).await.unwrap());
    let states: Vec<(String, String)> = jobs(&s.pool, "A1").await.into_iter().map(|j| (j.0, j.2)).collect();
    assert_eq!(
        states,
        [
            ("booking_confirmation".into(), "planned".into()),
            ("reminder_48h".into(), "revoked".into()),
            ("reminder_2h".into(), "revoked".into())
        ]
    );
}

#[tokio::test]
async fn an_event_for_an_unknown_facility_is_dead_lettered_not_retried() {
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    let mut a = appointment("A1", 1, "2026-06-10T10:00:00Z", AppointmentStatus::Booked);
    a.facility_id = "nowhere".into();
    let handling = s.app.planner().handle(Envelope::new(Event::AppointmentUpserted(a), Utc::now())).await;
    assert!(matches!(handling, careline_bus::Handling::Reject(reason) if reason.contains("nowhere")));
}

#[tokio::test]
async fn a_number_shared_by_two_patients_is_flagged_and_addressed_neutrally() {
    // The process's recorder, installed before anything counts.
    let metrics_handle = careline_telemetry::metrics_handle();
    let s = spawn_scheduler(t("2026-06-01T09:00:00Z")).await;
    let patient = |id: &str, name: &str| {
        Envelope::new(
            Event::PatientUpserted(PatientUpserted {
                patient_id: id.into(),
                facility_id: "city".into(),
                first_name: Some(name.into()),
                phone: "+4915123456700".into(),
                language: "de".into(),
                consent: None,
                reported_by: "test".into(),
            }),
            t("2026-06-01T09:00:00Z"),
        )
    };
    let first = patient("P1", "Lena");
    let Event::PatientUpserted(p) = &first.event else { unreachable!() };
    s.app.planner().apply_patient(p, &first).await.unwrap();
    let addressee = careline_store::patients::addressee(&s.pool, "+4915123456700").await.unwrap();
    assert_eq!(addressee, careline_domain::template::Addressee::Named);

    let second = patient("P2", "Jonas");
    let Event::PatientUpserted(p) = &second.event else { unreachable!() };
    s.app.planner().apply_patient(p, &second).await.unwrap();
    let addressee = careline_store::patients::addressee(&s.pool, "+4915123456700").await.unwrap();
    assert_eq!(addressee, careline_domain::template::Addressee::SharedNumber);
    let metrics = metrics_handle.render();
    assert!(metrics.contains("careline_scheduler_shared_number_reports_total 1"), "{metrics}");
    assert!(!metrics.contains("4915123456700") && !metrics.contains("Jonas"), "the flag names no one");
}
