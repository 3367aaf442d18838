//! Meta's error table, row by row, against wa-sandbox answering each code: every class ends
//! where `careline_whatsapp::errors::ERROR_TABLE` says, and retries never hold a consumer (they
//! go through the delay queues).

use std::time::Duration;

use chrono::Duration as ChronoDuration;

use crate::helpers::{Fixture, Options, TestApp, eventually, phone, spawn_app, spawn_app_with};

/// Seeds a job for a new recipient, makes the sandbox answer `code` once, and returns the
/// job's settled row and its attempts.
async fn one_job_answered(
    app: &TestApp,
    n: u32,
    code: i64,
) -> (crate::helpers::SendRow, Vec<(i32, String, Option<i32>)>) {
    app.sandbox.force_next_error(code, 1);
    let job = app.seed(&Fixture { phone: phone(n), ..Fixture::default() }).await;
    app.publish(&job).await;
    let row = app.settled(job.job_id).await;
    (row, app.attempts(job.job_id).await)
}

#[tokio::test]
async fn transient_codes_are_retried_through_a_delay_queue_and_then_accepted() {
    let app = spawn_app().await;
    for (n, code) in [2, 131000, 131016, 133004, 131057, 134101].into_iter().enumerate() {
        let (row, attempts) = one_job_answered(&app, n as u32, code).await;
        assert_eq!(row.state, "accepted", "code {code}: {row:?}");
        assert_eq!(
            attempts,
            [(1, "retry".to_owned(), Some(code as i32)), (2, "accepted".to_owned(), None)],
            "code {code}"
        );
    }
    assert_eq!(app.sandbox.stats().accepted, 6, "one message per job");
}

#[tokio::test]
async fn a_throughput_error_slows_the_whole_number_down_and_the_job_is_retried() {
    let app = spawn_app().await;
    let (row, attempts) = one_job_answered(&app, 1, 130429).await;
    assert_eq!(row.state, "accepted", "{row:?}");
    assert_eq!(attempts[0], (1, "slow_down_number".to_owned(), Some(130429)));
    let slowed: bool = sqlx::query_scalar("SELECT slow_until > now() FROM number_budget WHERE phone_number_id = $1")
        .bind(crate::helpers::NUMBER_ID)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(slowed, "the number's slot rate is halved for a while");
}

#[tokio::test]
async fn a_pair_rate_error_waits_for_that_recipient_only() {
    let app = spawn_app().await;
    app.sandbox.force_next_error(131056, 1);
    let blocked = app.seed(&Fixture { phone: phone(1), ..Fixture::default() }).await;
    app.publish(&blocked).await;
    eventually(Duration::from_secs(5), "the 131056 answer", async || !app.attempts(blocked.job_id).await.is_empty())
        .await;
    let other = app.seed(&Fixture { phone: phone(2), ..Fixture::default() }).await;
    app.publish(&other).await;

    assert_eq!(app.settled(other.job_id).await.state, "accepted", "another recipient goes at once");
    assert_eq!(app.send_row(blocked.job_id).await.unwrap().state, "sending", "still waiting its 4^0 s");
    assert_eq!(app.settled(blocked.job_id).await.state, "accepted");
    let attempts = app.attempts(blocked.job_id).await;
    assert_eq!(attempts[0], (1, "retry_recipient_later".to_owned(), Some(131056)));
    let first = app.messages_for(other.job_id)[0].accepted_at;
    let second = app.messages_for(blocked.job_id)[0].accepted_at;
    assert!(second > first);
}

#[tokio::test]
async fn codes_that_no_send_of_the_number_can_survive_pause_the_number_until_it_is_resumed() {
    let app = spawn_app().await;
    for (n, code) in [190, 368, 131042, 131031, 133010].into_iter().enumerate() {
        app.sandbox.force_next_error(code, 1);
        let job = app.seed(&Fixture { phone: phone(n as u32), ..Fixture::default() }).await;
        app.publish(&job).await;
        eventually(Duration::from_secs(5), "the number paused", async || {
            careline_store::sends::paused_numbers(&app.pool).await.unwrap().len() == 1
        })
        .await;
        let paused = careline_store::sends::paused_numbers(&app.pool).await.unwrap();
        assert_eq!(paused[0].2, Some(code as i32), "the pause keeps Meta's code");
        // Paused: the job waits (re-checked every second here) and nothing else is sent.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(app.send_row(job.job_id).await.unwrap().state, "sending", "code {code}");
        assert!(app.messages_for(job.job_id).is_empty());

        assert!(careline_store::sends::resume_number(&app.pool, crate::helpers::NUMBER_ID).await.unwrap());
        let row = app.settled(job.job_id).await;
        assert_eq!(row.state, "accepted", "code {code}: sent once the number is resumed");
        assert_eq!(app.attempts(job.job_id).await[0], (1, "pause_number".to_owned(), Some(code as i32)));
    }
}

#[tokio::test]
async fn codes_for_a_message_that_can_never_succeed_fail_it_after_one_call() {
    let app = spawn_app().await;
    for (n, code) in [100, 131008, 131009, 131021, 132000, 132012, 132016].into_iter().enumerate() {
        let (row, attempts) = one_job_answered(&app, n as u32, code).await;
        assert_eq!(row.state, "failed", "code {code}: {row:?}");
        assert_eq!(row.reason.as_deref(), Some("permanent"), "code {code}");
        assert_eq!(row.error_code, Some(code as i32), "code {code}");
        assert_eq!(attempts.len(), 1, "code {code}: {attempts:?}");
    }
    assert_eq!(app.sandbox.stats().accepted, 0);
}

#[tokio::test]
async fn meta_choosing_not_to_deliver_is_never_hot_retried() {
    let app = spawn_app().await;
    let (row, attempts) = one_job_answered(&app, 1, 131049).await;
    assert_eq!(row.state, "failed");
    assert_eq!(row.reason.as_deref(), Some("do_not_hot_retry"));
    assert_eq!(attempts.len(), 1);
}

#[tokio::test]
async fn a_number_not_on_whatsapp_fails_and_the_patient_gets_nothing_more() {
    let app = spawn_app().await;
    let (row, _) = one_job_answered(&app, 7, 131026).await;
    assert_eq!(row.state, "failed");
    assert_eq!(row.reason.as_deref(), Some("not_on_whatsapp"));
    let unreachable: i64 =
        sqlx::query_scalar("SELECT count(*) FROM patients WHERE whatsapp_unreachable_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(unreachable, 1);

    // The same patient's next reminder is not even tried.
    let patient: String = sqlx::query_scalar("SELECT patient_id FROM patients").fetch_one(&app.pool).await.unwrap();
    let next = app.seed(&Fixture { phone: phone(7), kind: "reminder_48h", ..Fixture::default() }).await;
    sqlx::query("UPDATE appointments SET patient_id = $1 WHERE appointment_id = $2")
        .bind(&patient)
        .bind(&next.appointment_id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.publish(&next).await;
    let row = app.settled(next.job_id).await;
    assert_eq!(row.state, "suppressed");
    assert_eq!(row.reason.as_deref(), Some("not_on_whatsapp"));
    assert_eq!(app.sandbox.stats().requests, 1);
}

#[tokio::test]
async fn retries_stop_at_the_configured_attempts_with_the_reason_kept() {
    let app = spawn_app().await;
    app.sandbox.force_next_error(133004, 10);
    let job = app.seed(&Fixture::default()).await;
    app.publish(&job).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = app.send_row(job.job_id).await;
        if let Some(row) = row.filter(|r| r.state != "sending") {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "retries did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row.state, "failed");
    assert_eq!(row.reason.as_deref(), Some("retries_exhausted"));
    assert_eq!(row.error_code, Some(133004));
    assert_eq!(app.attempts(job.job_id).await.len(), 5, "SENDER_MAX_ATTEMPTS");
}

#[tokio::test]
async fn a_reminder_that_can_no_longer_arrive_in_time_is_dropped_not_sent_late() {
    let app = spawn_app().await;
    // A 2 h reminder that fell due 70 minutes ago (it may be late by one hour).
    let starts_at = app.clock_now() + ChronoDuration::minutes(50);
    let late = app
        .seed(&Fixture {
            kind: "reminder_2h",
            starts_at: Some(starts_at),
            due_ago: ChronoDuration::minutes(70),
            ..Fixture::default()
        })
        .await;
    app.publish(&late).await;
    let row = app.settled(late.job_id).await;
    assert_eq!(row.state, "suppressed");
    assert_eq!(row.reason.as_deref(), Some("too_late"));
    assert!(app.messages_for(late.job_id).is_empty());
}

#[tokio::test]
async fn recipients_past_the_portfolios_messaging_tier_are_deferred_not_dropped() {
    let toml = crate::helpers::network_toml(80)
        .replace("default_language = \"en\"", "default_language = \"en\"\n[portfolios.small]\nmessaging_limit = 2")
        .replace("throughput_mps = 80", "throughput_mps = 80\nportfolio = \"small\"");
    let app = spawn_app_with(Options { network_toml: Some(toml), ..Options::default() }).await;
    let mut jobs = Vec::new();
    for n in 0..3 {
        jobs.push(app.seed(&Fixture { phone: phone(n), ..Fixture::default() }).await);
    }
    app.publish_all(&jobs).await;
    eventually(Duration::from_secs(10), "two recipients messaged", async || app.sandbox.stats().accepted == 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.sandbox.stats().accepted, 2, "the third new recipient waits for the window");
    let waiting: Vec<_> = {
        let mut waiting = Vec::new();
        for job in &jobs {
            if app.messages_for(job.job_id).is_empty() {
                waiting.push(app.send_row(job.job_id).await);
            }
        }
        waiting
    };
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].is_none(), "deferred without a final row: {waiting:?}");
}
