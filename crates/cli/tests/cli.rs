//! The operator CLI against real RabbitMQ (a fresh prefix per test) and PostgreSQL (a fresh
//! database per test).

use std::time::{Duration, Instant};

use careline_bus::{BusSettings, Publisher, Topology};
use careline_cli::Context;
use careline_cli::deadletters::{self, Selection};
use careline_cli::jobs::{self, ResendError};
use careline_domain::events::{AppointmentStatus, AppointmentUpserted, Envelope, Event};
use careline_store::PgPool;
use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

const PHONE: &str = "+919812340077";

struct Setup {
    context: Context,
    pool: PgPool,
    publisher: Publisher,
    /// Kept open for the test's channel.
    _connection: lapin::Connection,
    channel: lapin::Channel,
    topology: Topology,
}

async fn setup() -> Setup {
    let (pool, database_url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let bus = BusSettings::for_test();
    let publisher = Publisher::new(bus.clone(), "cli-test");
    publisher.ensure_connected().await.expect("broker up; topology declared");
    let connection = lapin::Connection::connect(&bus.url, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(&bus.prefix);
    Setup { context: Context { database_url, bus }, pool, publisher, _connection: connection, channel, topology }
}

impl Setup {
    async fn depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    async fn wait_for_depth(&self, queue: &str, n: u32) {
        let started = Instant::now();
        while self.depth(queue).await != n {
            assert!(started.elapsed() < Duration::from_secs(10), "{queue} never held {n} messages");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes an appointment event and has "the scheduler" reject it, so it is dead-lettered.
    async fn dead_letter(&self, appointment_id: &str) -> Envelope {
        let envelope = Envelope::new(
            Event::AppointmentUpserted(AppointmentUpserted {
                appointment_id: appointment_id.to_owned(),
                facility_id: "north".to_owned(),
                patient_id: "P1".to_owned(),
                version: 1,
                status: AppointmentStatus::Booked,
                starts_at: Utc::now(),
                duration_minutes: None,
                clinician: Some("Dr. Rao".to_owned()),
                department: None,
                instructions: None,
                reported_by: "test".to_owned(),
            }),
            Utc::now(),
        );
        let before = self.depth(&self.topology.dead_letters()).await;
        self.publisher.publish(&envelope).await.expect("publish");
        let message = self.get(&self.topology.scheduler_events()).await.expect("the event reached the scheduler queue");
        message.delivery.nack(BasicNackOptions { requeue: false, multiple: false }).await.unwrap();
        self.wait_for_depth(&self.topology.dead_letters(), before + 1).await;
        envelope
    }

    async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic_get")
    }

    /// Takes (and acks) every message of a queue, returning the envelopes.
    async fn drain(&self, queue: &str) -> Vec<Envelope> {
        let mut out = Vec::new();
        while let Some(message) = self.get(queue).await {
            out.push(serde_json::from_slice(&message.delivery.data).expect("an envelope"));
            message.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        out
    }
}

#[tokio::test]
async fn listing_dead_letters_shows_ids_types_and_reasons_and_removes_none() {
    let s = setup().await;
    let first = s.dead_letter("A1").await;
    let second = s.dead_letter("A2").await;

    let listed = deadletters::list(&s.context, 50).await.expect("list");
    let ids: Vec<String> = listed.iter().filter_map(|l| l.message_id.clone()).collect();
    assert_eq!(ids, [first.message_id.to_string(), second.message_id.to_string()]);
    for letter in &listed {
        assert_eq!(letter.kind.as_deref(), Some("appointment.upserted"));
        assert_eq!(letter.routing_key, "appointment.upserted");
        assert_eq!(letter.reason.as_deref(), Some("rejected"));
        assert_eq!(letter.queue, Some(s.topology.scheduler_events()));
        assert_eq!(letter.exchange, Some(s.topology.events_exchange()));
        assert_eq!(letter.deaths, 1);
        assert!(letter.died_at.is_some());
    }

    // Nothing was taken: once the broker has requeued them (asynchronously, right after the
    // listing's nack), the same letters are there in the same order, and the limit holds.
    s.wait_for_depth(&s.topology.dead_letters(), 2).await;
    let again = deadletters::list(&s.context, 50).await.expect("list again");
    assert_eq!(again, listed);
    s.wait_for_depth(&s.topology.dead_letters(), 2).await;
    assert_eq!(deadletters::list(&s.context, 1).await.unwrap().len(), 1);
    s.wait_for_depth(&s.topology.dead_letters(), 2).await;

    // What the operator sees has ids, not the body's PHI.
    let mut out = Vec::new();
    deadletters::run(deadletters::Command::List { limit: 10 }, &s.context, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains(&first.message_id.to_string()) && printed.contains("rejected"), "{printed}");
    assert!(!printed.contains("Dr. Rao"), "{printed}");
}

#[tokio::test]
async fn redriving_one_dead_letter_by_id_republishes_it_where_it_was_published_and_keeps_the_others() {
    let s = setup().await;
    let first = s.dead_letter("A1").await;
    let second = s.dead_letter("A2").await;

    let redriven = deadletters::redrive(&s.context, &Selection::Id(second.message_id.to_string())).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].message_id, Some(second.message_id.to_string()));

    let back = s.drain(&s.topology.scheduler_events()).await;
    assert_eq!(back, [second], "the redriven event, body unchanged, is back in the scheduler's queue");
    let left = deadletters::list(&s.context, 50).await.unwrap();
    assert_eq!(left.iter().filter_map(|l| l.message_id.clone()).collect::<Vec<_>>(), [first.message_id.to_string()]);

    let missing = Uuid::new_v4().to_string();
    let error = deadletters::redrive(&s.context, &Selection::Id(missing.clone())).await.unwrap_err();
    assert!(error.to_string().contains(&format!("no dead letter with message id {missing}")), "{error:#}");
    // A failed redrive hands every dead letter back.
    s.wait_for_depth(&s.topology.dead_letters(), 1).await;
}

#[tokio::test]
async fn redriving_all_dead_letters_empties_the_queue_into_the_original_queues() {
    let s = setup().await;
    let first = s.dead_letter("A1").await;
    let second = s.dead_letter("A2").await;

    let redriven = deadletters::redrive(&s.context, &Selection::All).await.unwrap();
    assert_eq!(redriven.len(), 2);
    assert_eq!(s.depth(&s.topology.dead_letters()).await, 0);
    let back = s.drain(&s.topology.scheduler_events()).await;
    assert_eq!(back, [first, second]);
    assert!(deadletters::redrive(&s.context, &Selection::All).await.unwrap().is_empty());
}

// ---- jobs ---------------------------------------------------------------------------------

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

/// An appointment and one dispatched job, as the scheduler leaves them.
async fn dispatched_job(pool: &PgPool, state: &str) -> Uuid {
    let job_id = Uuid::now_v7();
    let appointment_id = format!("A-{}", job_id.simple());
    sqlx::query(
        "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
         VALUES ('P1', 'north', 'Asha', $1, 'en', $2) ON CONFLICT DO NOTHING",
    )
    .bind(PHONE)
    .bind(at(0))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, status, starts_at)
         VALUES ($1, 'north', 'P1', 1, 'booked', $2)",
    )
    .bind(&appointment_id)
    .bind(at(86_400))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state, reason, claims, enqueued_at, created_at)
         VALUES ($1, $2, 1, 'booking_confirmation', $3, $4, CASE WHEN $4 = 'revoked' THEN 'cancelled' END, 1, $5, $3)",
    )
    .bind(job_id)
    .bind(&appointment_id)
    .bind(at(10))
    .bind(state)
    .bind(at(11))
    .execute(pool)
    .await
    .unwrap();
    job_id
}

/// A `sends` row in `state` with `attempts` recorded calls.
async fn send_row(pool: &PgPool, job_id: Uuid, state: &str, wamid: Option<&str>, attempts: i32) {
    sqlx::query(
        "INSERT INTO sends (job_id, state, reason, phone_number_id, template_name, language, wamid, error_code, attempts,
                            recorded_attempts, created_at, updated_at)
         VALUES ($1, $2, CASE $2 WHEN 'failed' THEN 'permanent' WHEN 'suppressed' THEN 'opted_out' END,
                 '106540352240001', 'e2e_appointment_booked', 'en', $3, CASE WHEN $2 = 'failed' THEN 132001 END, $4, $4, $5, $6)",
    )
    .bind(job_id)
    .bind(state)
    .bind(wamid)
    .bind(attempts)
    .bind(at(12))
    .bind(at(20))
    .execute(pool)
    .await
    .unwrap();
    for attempt in 1..=attempts {
        let (outcome, http, code) =
            if attempt == attempts && state == "accepted" { ("accepted", 200, None) } else { ("retry", 500, Some(2)) };
        let outcome = if state == "failed" && attempt == attempts { "permanent" } else { outcome };
        sqlx::query(
            "INSERT INTO send_attempts (job_id, attempt, attempted_at, http_status, error_code, outcome, latency_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 40)",
        )
        .bind(job_id)
        .bind(attempt)
        .bind(at(12 + i64::from(attempt)))
        .bind(http)
        .bind(code)
        .bind(outcome)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_jobs_timeline_shows_plan_dispatch_calls_statuses_and_replies_in_order_without_phi() {
    let s = setup().await;
    let job_id = dispatched_job(&s.pool, "enqueued").await;
    send_row(&s.pool, job_id, "accepted", Some("wamid.T1"), 2).await;
    for (status, secs) in [("sent", 30), ("delivered", 31), ("read", 40)] {
        sqlx::query(
            "INSERT INTO message_status_events (wamid, status, job_id, occurred_at) VALUES ('wamid.T1', $1, $2, $3)",
        )
        .bind(status)
        .bind(job_id)
        .bind(at(secs))
        .execute(&s.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO inbound_messages (message_id, phone_number_id, from_e164, received_at, kind, action, job_id)
         VALUES ('wamid.IN1', '106540352240001', $1, $2, 'button', 'confirm', $3)",
    )
    .bind(PHONE)
    .bind(at(50))
    .bind(job_id)
    .execute(&s.pool)
    .await
    .unwrap();

    let timeline = jobs::timeline(&s.pool, job_id).await.expect("timeline");
    let lines: Vec<(&str, &str)> = timeline.entries.iter().map(|e| (e.source, e.what.as_str())).collect();
    let expected_starts = [
        ("scheduler", "planned"),
        ("scheduler", "dispatched"),
        ("sender", "taken on: template e2e_appointment_booked"),
        ("sender", "call 1: retry, HTTP 500, Meta error 2"),
        ("sender", "call 2: accepted, HTTP 200"),
        ("sender", "accepted by Meta, wamid wamid.T1"),
        ("webhook", "status sent"),
        ("webhook", "status delivered"),
        ("webhook", "status read"),
        ("webhook", "patient replied: confirm"),
    ];
    assert_eq!(lines.len(), expected_starts.len(), "{lines:#?}");
    for ((source, what), (want_source, want_start)) in lines.iter().zip(expected_starts) {
        assert_eq!(*source, want_source, "{what}");
        assert!(what.starts_with(want_start), "{what:?} should start with {want_start:?}");
    }
    assert!(timeline.entries.windows(2).all(|w| w[0].at <= w[1].at), "not in time order");

    let mut out = Vec::new();
    jobs::run(jobs::Command::Timeline { job_id }, &s.context, &mut out).await.unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("patient replied: confirm"), "{printed}");
    for phi in [PHONE, PHONE.trim_start_matches('+'), "Asha"] {
        assert!(!printed.contains(phi), "PHI ({phi}) in:\n{printed}");
    }

    let missing = Uuid::new_v4();
    assert!(
        matches!(jobs::timeline(&s.pool, missing).await, Err(jobs::TimelineError::UnknownJob(id)) if id == missing)
    );
}

#[tokio::test]
async fn resending_a_failed_job_archives_the_failed_send_and_publishes_job_due_again() {
    let s = setup().await;
    let job_id = dispatched_job(&s.pool, "enqueued").await;
    send_row(&s.pool, job_id, "failed", None, 1).await;

    let resent = jobs::resend(&s.pool, &s.context, job_id, "alice").await.expect("resend");
    assert_eq!(resent.previous_reason.as_deref(), Some("permanent"));
    assert_eq!(resent.previous_attempts, 1);

    // The sender will see the job as never taken on…
    let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM sends WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM send_attempts WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!((sends, attempts), (0, 0));
    // …the audit keeps what was tried…
    let (by, state, calls, message_id): (String, String, i64, Uuid) = sqlx::query_as(
        "SELECT reset_by, previous_send->>'state', jsonb_array_length(previous_attempts)::bigint, message_id
         FROM send_resets WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!((by.as_str(), state.as_str(), calls, message_id), ("alice", "failed", 1, resent.message_id));
    // …and the sender's queue holds a fresh job.due for it.
    let queued = s.drain(&s.topology.sender_jobs_urgent()).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].message_id, resent.message_id);
    match &queued[0].event {
        Event::JobDue(due) => {
            assert_eq!((due.job_id, due.generation, due.kind.as_str()), (job_id, 1, "booking_confirmation"))
        }
        other => panic!("not a job.due: {other:?}"),
    }
    let timeline = jobs::timeline(&s.pool, job_id).await.unwrap();
    assert!(timeline.entries.iter().any(|e| e.source == "operator" && e.what.starts_with("resend by alice")));

    // Re-running it before the sender took the job on publishes job.due again (harmless: the
    // sender sends a job once); that is also how a resend whose publish failed is finished.
    jobs::resend(&s.pool, &s.context, job_id, "alice").await.unwrap();
    assert_eq!(s.drain(&s.topology.sender_jobs_urgent()).await.len(), 1);
}

#[tokio::test]
async fn resend_refuses_every_job_whose_send_did_not_fail_and_changes_nothing() {
    let s = setup().await;
    let accepted = dispatched_job(&s.pool, "enqueued").await;
    send_row(&s.pool, accepted, "accepted", Some("wamid.OK"), 1).await;
    let unknown = dispatched_job(&s.pool, "enqueued").await;
    send_row(&s.pool, unknown, "unknown", None, 1).await;
    let suppressed = dispatched_job(&s.pool, "enqueued").await;
    send_row(&s.pool, suppressed, "suppressed", None, 0).await;
    let never_taken = dispatched_job(&s.pool, "enqueued").await;
    let revoked = dispatched_job(&s.pool, "revoked").await;
    send_row(&s.pool, revoked, "failed", None, 1).await;

    let refused = |job_id| jobs::resend(&s.pool, &s.context, job_id, "alice");
    let error = refused(accepted).await.unwrap_err();
    assert!(matches!(error, ResendError::Accepted(_, ref w) if w == "wamid.OK"), "{error}");
    assert!(error.to_string().contains("twice"), "{error}");
    assert!(matches!(refused(unknown).await, Err(ResendError::OutcomeUnknown(_))));
    assert!(matches!(refused(suppressed).await, Err(ResendError::Suppressed(_, ref r)) if r == "opted_out"));
    assert!(matches!(refused(never_taken).await, Err(ResendError::NeverSent(_))));
    let error = refused(revoked).await.unwrap_err();
    assert!(error.to_string().contains("is revoked") && error.to_string().contains("cancelled"), "{error}");
    assert!(matches!(refused(Uuid::new_v4()).await, Err(ResendError::UnknownJob(_))));

    let resets: i64 = sqlx::query_scalar("SELECT count(*) FROM send_resets").fetch_one(&s.pool).await.unwrap();
    let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM sends").fetch_one(&s.pool).await.unwrap();
    assert_eq!((resets, sends), (0, 4));
    assert_eq!(
        s.depth(&s.topology.sender_jobs()).await + s.depth(&s.topology.sender_jobs_urgent()).await,
        0,
        "nothing was published"
    );
}
