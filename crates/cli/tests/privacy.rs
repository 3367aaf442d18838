//! The `careline` binary against a fresh PostgreSQL database: template lint, audit
//! verification (and tampering found), consent history, export, erasure and purge.

use std::process::{Command, Output};

use careline_store::audit::{self, AuditRecord};
use sqlx::{Connection, PgConnection};

fn careline(args: &[&str], database_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_careline"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("CARELINE_CONFIG")
        .output()
        .expect("run careline")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const CLEAN: &str = r#"
[templates.booking_confirmation]
name = "booked"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]
[templates.reminder]
name = "reminder"
languages = { en = "en" }
body = ["first_name", "date_time", "clinician", "facility", "address"]
[[facility]]
id = "city"
name = "City"
time_zone = "Asia/Kolkata"
phone_number_id = "1001"
"#;

#[test]
fn templates_lint_refuses_fields_outside_the_whitelist_and_passes_a_clean_file() {
    let dir = std::env::temp_dir().join(format!("careline-lint-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let clean = dir.join("clean.toml");
    std::fs::write(&clean, CLEAN).unwrap();
    let out = careline(&["templates", "lint", clean.to_str().unwrap()], "postgres://unused/x");
    assert!(out.status.success(), "{}", stdout(&out));

    let leaky = dir.join("leaky.toml");
    std::fs::write(&leaky, CLEAN.replace("\"clinician\", ", "\"diagnosis\", \"lab_result\", ")).unwrap();
    let out = careline(&["templates", "lint", leaky.to_str().unwrap()], "postgres://unused/x");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("templates.reminder.body[2]: 'diagnosis' is not a whitelisted field"), "{text}");
    assert!(text.contains("templates.reminder.body[3]: 'lab_result'"), "{text}");

    let out = careline(&["templates", "lint", dir.join("missing.toml").to_str().unwrap()], "postgres://unused/x");
    assert_eq!(out.status.code(), Some(2), "a missing file is an error, not a pass");
    let _ = std::fs::remove_dir_all(dir);
}

async fn append(conn: &mut PgConnection, kind: &str, patient: &str) {
    let mut tx = conn.begin().await.unwrap();
    audit::append(
        &mut tx,
        &AuditRecord {
            kind,
            actor: "test",
            patient_id: Some(patient),
            body: serde_json::json!({ "state": "opted_in", "n": 1 }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn audit_verify_reports_an_intact_chain_then_the_first_row_someone_changed() {
    let (_, url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let out = careline(&["audit", "verify"], &url);
    assert!(out.status.success());
    assert!(stdout(&out).contains("0 rows"), "{}", stdout(&out));
    for kind in ["consent.recorded", "job.planned", "message.status", "reply.received"] {
        append(&mut conn, kind, "P1").await;
    }
    let out = careline(&["audit", "verify"], &url);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("audit chain intact: 4 rows, head "), "{}", stdout(&out));

    // The table refuses changes...
    let refused = sqlx::query("UPDATE audit_log SET kind = 'x' WHERE seq = 2").execute(&mut conn).await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    assert!(sqlx::query("DELETE FROM audit_log").execute(&mut conn).await.is_err());
    // ...and an owner who switches that off is still found out.
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only").execute(&mut conn).await.unwrap();
    sqlx::query("UPDATE audit_log SET body = '{\"state\": \"opted_out\", \"n\": 1}' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = careline(&["audit", "verify"], &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("BROKEN at seq 3: hash does not match"), "{}", stdout(&out));

    // A deleted row (with its successor re-hashed by a careful forger) is a gap.
    sqlx::query("DELETE FROM audit_log WHERE seq >= 3").execute(&mut conn).await.unwrap();
    let out = careline(&["audit", "verify"], &url);
    assert!(out.status.success(), "truncating the tail is only found against a kept head hash");
    sqlx::query("DELETE FROM audit_log WHERE seq = 1").execute(&mut conn).await.unwrap();
    let out = careline(&["audit", "verify"], &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("BROKEN at seq 2: expected seq 1"), "{}", stdout(&out));
}

#[tokio::test]
async fn export_then_erase_removes_contact_data_keeps_the_chain_and_purge_honours_retention() {
    let (_, url) = careline_store::testing::fresh_database(&careline_store::testing::database_url()).await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let phone = "+919812349999";
    for sql in [
        "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
         VALUES ('P1', 'city', 'Meera', '+919812349999', 'hi', now())",
        "INSERT INTO consent_log (patient_id, state, recorded_at, source, recorded_by, actor, wording_version, dedupe_key)
         VALUES ('P1', 'opted_in', now() - interval '1 day', 'front_desk', 'his', 'desk-3', 'v2', 'seed')",
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, status, starts_at, clinician)
         VALUES ('A1', 'city', 'P1', 1, 'booked', now() + interval '2 days', 'Dr. Iyer')",
        "INSERT INTO inbound_messages (message_id, phone_number_id, from_e164, received_at, kind, action)
         VALUES ('wamid.OLD', '1001', '+919812349999', now() - interval '400 days', 'text', 'other'),
                ('wamid.NEW', '1001', '+919812349999', now(), 'text', 'help')",
        "INSERT INTO webhook_inbox (body, processed_at) VALUES (convert_to('{\"from\":\"919812349999\"}', 'UTF8'), now())",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    append(&mut conn, "consent.recorded", "P1").await;

    let out = careline(&["consent", "history", "P1"], &url);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(history[0]["actor"], "desk-3");
    assert_eq!(history[0]["wording_version"], "v2");

    // Purge with a one-year retention: only the 400-day-old message loses its number.
    let out = careline(&["purge", "--retention-days", "365"], &url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let numbers: Vec<(String, String)> =
        sqlx::query_as("SELECT message_id, from_e164 FROM inbound_messages ORDER BY message_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(numbers, [("wamid.NEW".into(), phone.into()), ("wamid.OLD".into(), String::new())]);

    let out = careline(&["patient", "export", "P1"], &url);
    assert!(out.status.success());
    let export: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(export["profile"]["phone_e164"], phone);
    assert_eq!(export["appointments"][0]["clinician"], "Dr. Iyer");
    // The purged message no longer names the number, so it no longer leads to the patient.
    assert_eq!(export["replies"].as_array().unwrap().len(), 1);
    assert!(!export["audit"].as_array().unwrap().is_empty());

    let out = careline(&["patient", "erase", "P1", "--requested-by", "dpo-ticket-17"], &url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = careline(&["patient", "export", "P1"], &url);
    let text = stdout(&out);
    for secret in ["919812349999", "Meera", "Dr. Iyer"] {
        assert!(!text.contains(secret), "{secret} survived erasure: {text}");
    }
    let export: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(export["profile"]["erased_at"].is_string());
    let everywhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT to_jsonb(t)::text AS j FROM patients t UNION ALL SELECT to_jsonb(t)::text FROM consent_log t
            UNION ALL SELECT to_jsonb(t)::text FROM inbound_messages t UNION ALL SELECT to_jsonb(t)::text FROM appointments t
            UNION ALL SELECT convert_from(body, 'UTF8') FROM webhook_inbox) rows
         WHERE j LIKE '%919812349999%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(everywhere, 0, "the number is still stored somewhere");
    let consent = careline_store::consent::current(&mut conn, "P1", "").await.unwrap();
    assert_eq!(consent, Some(careline_domain::consent::ConsentState::OptedOut));

    let out = careline(&["audit", "verify"], &url);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("intact: 5 rows"), "seed, purge, two opt-outs and the erasure: {}", stdout(&out));
}
