//! The progress counts read the real schema: each number counts what its label says.

use careline_demo::progress::read_counts;
use careline_store::testing::{database_url, fresh_database};

#[tokio::test]
async fn counts_read_every_table_the_summary_reports_on() {
    let (pool, _) = fresh_database(&database_url()).await;
    assert_eq!(read_counts(&pool).await.unwrap(), Default::default());

    let statements = [
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, status, starts_at, patient_response)
         VALUES ('a1', 'f', 'p1', 1, 'booked', now() + interval '2 hours', 'confirmed'),
                ('a2', 'f', 'p2', 2, 'cancelled', now() + interval '2 days', NULL),
                ('a3', 'f', 'p3', 1, 'booked', now() + interval '2 days', 'reschedule_requested')",
        "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state, reason) VALUES
         ('00000000-0000-0000-0000-000000000001', 'a1', 1, 'booking_confirmation', now() - interval '1 minute', 'enqueued', NULL),
         ('00000000-0000-0000-0000-000000000002', 'a1', 1, 'reminder_48h', now() - interval '1 minute', 'skipped', 'too_late'),
         ('00000000-0000-0000-0000-000000000003', 'a1', 1, 'reminder_2h', now() - interval '1 second', 'planned', NULL),
         ('00000000-0000-0000-0000-000000000004', 'a2', 1, 'reminder_48h', now() + interval '1 minute', 'revoked', 'cancelled'),
         ('00000000-0000-0000-0000-000000000005', 'a3', 1, 'booking_confirmation', now() - interval '1 minute', 'enqueued', NULL),
         ('00000000-0000-0000-0000-000000000006', 'a3', 1, 'reminder_48h', now() - interval '1 minute', 'enqueued', NULL),
         ('00000000-0000-0000-0000-000000000007', 'a2', 1, 'booking_confirmation', now() - interval '1 minute', 'enqueued', NULL)",
        "INSERT INTO sends (job_id, state, reason, wamid) VALUES
         ('00000000-0000-0000-0000-000000000001', 'accepted', NULL, 'wamid.1'),
         ('00000000-0000-0000-0000-000000000005', 'suppressed', 'no_consent', NULL),
         ('00000000-0000-0000-0000-000000000006', 'suppressed', 'opted_out', NULL),
         ('00000000-0000-0000-0000-000000000007', 'sending', NULL, NULL)",
        "INSERT INTO message_delivery (wamid, status, status_rank, status_at) VALUES ('wamid.1', 'read', 3, now())",
        "INSERT INTO consent_log (patient_id, phone_e164, state, recorded_at, source, recorded_by) VALUES
         ('p1', '+919812345678', 'opted_out', now(), 'whatsapp_keyword', 'webhook-consumer'),
         ('p9', '+919812345678', 'opted_out', now(), 'whatsapp_keyword', 'webhook-consumer'),
         ('p2', NULL, 'opted_in', now(), 'booking_form', 'scheduler')",
    ];
    for sql in statements {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }

    let c = read_counts(&pool).await.unwrap();
    assert_eq!((c.planned, c.skipped, c.skipped_too_late, c.skipped_quiet_hours, c.revoked), (7, 1, 1, 0, 1));
    assert_eq!((c.due_waiting, c.in_flight), (1, 1), "a due planned job; an enqueued job still sending");
    assert_eq!((c.sent, c.delivered, c.read), (1, 1, 1));
    assert_eq!((c.confirmed, c.reschedule_requested, c.cancelled_by_hospital), (1, 1, 1));
    assert_eq!(c.opted_out, 1, "one number, however many patients share it");
    assert_eq!((c.suppressed_no_consent, c.suppressed_opted_out, c.suppressed_other), (1, 1, 0));
    assert_eq!((c.failed, c.unknown), (0, 0));
    assert!(!c.all_due_handled());
}
