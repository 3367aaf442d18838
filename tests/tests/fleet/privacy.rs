//! No PHI in logs or metrics, and an audit trail that answers a data protection officer.
//!
//! The log scan installs a `tracing` subscriber for the whole test process (each test runs in
//! its own process under nextest) at DEBUG for every target — Careline's crates, wa-sandbox,
//! lapin, sqlx, reqwest, hyper — whose writer keeps every formatted line, runs a busy story
//! (bookings, reminders, statuses, a button, STOP, HELP, START, free text), and searches every
//! line and the Prometheus rendering for the patients' phone numbers (E.164, wa_id and
//! national forms), first names and message texts.

use std::io::Write;
use std::sync::{Arc, Mutex};

use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration;

/// Every byte the process logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_all_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the log scan owns this test process's subscriber");
    captured
}

/// The free text a patient types; it must reach the hospital's inbox only through Meta.
const FREE_TEXT: &str = "My knee still hurts after the surgery";

#[tokio::test]
async fn a_busy_fleet_logs_no_phone_number_name_or_message_text() {
    let captured = capture_all_logs();
    let fleet = spawn_fleet().await;
    let patients = [(41u32, "P1"), (42, "P2"), (43, "P3")];
    for (n, id) in patients {
        fleet.ingest_patient(id, NORTH, &phone(n), Consent::OptedIn).await;
    }
    let starts_at = fleet.clock.now() + Duration::days(3);
    for (_, id) in patients {
        fleet.ingest_appointment(&format!("A-{id}"), NORTH, id, 1, starts_at).await;
    }
    for (n, _) in patients {
        fleet.wait_for_messages_to(&phone(n), 1).await;
    }
    let reminder = fleet.job("A-P1", 1, "reminder_48h").await;
    fleet.clock.set(reminder.due_at);
    for (n, _) in patients {
        fleet.wait_for_messages_to(&phone(n), 2).await;
    }
    let p1 = fleet.messages_to(&phone(41));
    fleet.sandbox.tap_button(&p1[1].wamid, 0).expect("P1 confirms");
    fleet.sandbox.type_text(&p1[1].wa_id, FREE_TEXT).expect("P1 writes");
    let p2 = fleet.messages_to(&phone(42));
    fleet.sandbox.type_text(&p2[1].wa_id, "STOP").expect("P2 stops");
    fleet.sandbox.type_text(&p2[1].wa_id, "START").expect("P2 starts again");
    let p3 = fleet.messages_to(&phone(43));
    fleet.sandbox.type_text(&p3[1].wa_id, "help").expect("P3 asks for help");
    wait_until("the three answers are sent", DEADLINE, || async {
        fleet.texts_to(&phone(42)).len() == 2 && fleet.texts_to(&phone(43)).len() == 1
    })
    .await;
    fleet.settle().await;

    let metrics = careline_telemetry::metrics_handle().render();
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    if let Ok(path) = std::env::var("CARELINE_LOG_SCAN_DUMP") {
        let _ = std::fs::write(path, &logs);
    }
    let lines: Vec<&str> = logs.lines().collect();
    let mut needles: Vec<String> = vec![FIRST_NAME.to_owned(), FREE_TEXT.to_owned(), CLINICIAN.to_owned()];
    for (n, _) in patients {
        let e164 = phone(n);
        needles.push(e164.clone()); // +919812340041
        needles.push(e164.trim_start_matches('+').to_owned()); // 919812340041 (wa_id)
        needles.push(e164[3..].to_owned()); // 9812340041 (national)
    }
    let hits: Vec<(&String, &str)> = lines
        .iter()
        .flat_map(|line| needles.iter().filter(|n| line.contains(n.as_str())).map(move |n| (n, *line)))
        .collect();
    let metric_hits: Vec<&String> = needles.iter().filter(|n| metrics.contains(n.as_str())).collect();
    let careline_lines = lines
        .iter()
        .filter(|l| {
            ["careline_", "webhook_consumer", "sender::", "scheduler::", "ingest::", "whatsapp.send", "process_webhook"]
                .iter()
                .any(|target| l.contains(target))
        })
        .count();
    eprintln!(
        "log scan: {} lines ({} from Careline's services), {} bytes, {} metric lines; {} needles; {} hits in logs, {} in metrics",
        lines.len(),
        careline_lines,
        logs.len(),
        metrics.lines().count(),
        needles.len(),
        hits.len(),
        metric_hits.len()
    );
    assert!(hits.is_empty(), "PHI in logs: {hits:#?}");
    assert!(metric_hits.is_empty(), "PHI in metrics: {metric_hits:?}");
    assert!(lines.len() > 1000, "the scan saw too little to mean anything: {} lines", lines.len());
    assert!(careline_lines > 100, "too few lines from Careline itself: {careline_lines}");
    assert!(metrics.contains("careline_webhook_inbound_total"), "the metrics scanned are the fleet's");
}

#[tokio::test]
async fn the_audit_trail_answers_what_was_sent_when_and_on_what_consent_and_survives_erasure() {
    let fleet = spawn_fleet().await;
    let asha = phone(51);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;
    let sent = fleet.wait_for_messages_to(&asha, 1).await;
    fleet.sandbox.tap_button(&sent[0].wamid, 0).expect("confirm");
    fleet.sandbox.type_text(&sent[0].wa_id, "STOP").expect("stop");
    wait_until("the acknowledgement is sent", DEADLINE, || async { fleet.texts_to(&asha).len() == 1 }).await;
    fleet.settle().await;
    let pool = &fleet.pool;
    wait_until("the read status is recorded", DEADLINE, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log WHERE kind = 'message.status'")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
            >= 3
    })
    .await;

    let mut conn = fleet.pool.acquire().await.unwrap();
    let export = careline_store::privacy::export_patient(&mut conn, "P1").await.unwrap();
    let kinds: std::collections::BTreeSet<String> =
        export["audit"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap().to_owned()).collect();
    for kind in ["consent.recorded", "job.planned", "message.status", "reply.received"] {
        assert!(kinds.contains(kind), "no {kind} in the patient's audit rows: {kinds:?}");
    }
    assert_eq!(export["sends"][0]["state"], "accepted");
    assert!(export["statuses"].as_array().unwrap().len() >= 3, "sent, delivered, read");
    // The opt-in, then STOP for care and marketing, for the patient and for the number.
    assert_eq!(export["consent"].as_array().unwrap().len(), 5);
    assert_eq!(export["service_replies"][0]["kind"], "stop_ack");

    let before = careline_store::audit::verify(&mut conn).await.unwrap();
    assert!(before.first_broken.is_none(), "{before:?}");
    let mut tx = fleet.pool.begin().await.unwrap();
    careline_store::privacy::erase_patient(&mut tx, "P1", "dpo-test").await.unwrap();
    tx.commit().await.unwrap();
    let after = careline_store::audit::verify(&mut conn).await.unwrap();
    eprintln!("audit before erasure: {before:?}\naudit after erasure: {after:?}");
    assert!(after.first_broken.is_none(), "{after:?}");
    assert_eq!(after.rows, before.rows + 3, "two opt-outs and the erasure itself: {after:?}");
    let export = careline_store::privacy::export_patient(&mut conn, "P1").await.unwrap().to_string();
    assert!(!export.contains(&asha[1..]) && !export.contains(FIRST_NAME), "{export}");
}
