//! Quiet hours in the facility's time zone: nothing goes out between 21:00 and 08:00 in
//! Kolkata, whatever the servers' clock says.

use careline_domain::Clock;
use careline_tests::*;
use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Asia::Kolkata;

/// The next `hh:mm` in Kolkata after `now`, as UTC.
fn next_local(now: DateTime<Utc>, hh: u32, mm: u32) -> DateTime<Utc> {
    let today = now.with_timezone(&Kolkata).date_naive();
    let time = NaiveTime::from_hms_opt(hh, mm, 0).expect("a valid time");
    [today, today + Days::new(1)]
        .into_iter()
        .map(|day| Kolkata.from_local_datetime(&day.and_time(time)).unwrap().with_timezone(&Utc))
        .find(|t| *t > now)
        .expect("one of today and tomorrow is later")
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Kolkata).format("%H:%M").to_string()
}

#[tokio::test]
async fn a_booking_at_night_is_confirmed_at_eight_and_a_reminder_due_at_dawn_goes_the_evening_before() {
    let fleet = spawn_fleet().await;
    // 22:00 in Kolkata: inside quiet hours.
    fleet.clock.set(next_local(fleet.clock.now(), 22, 0));
    let ravi = phone(41);
    fleet.ingest_patient("P1", SOUTH, &ravi, Consent::OptedIn).await;
    // 08:30 local, three days on: the 2 h reminder would be due at 06:30, inside quiet hours.
    let starts_at = next_local(fleet.clock.now() + chrono::Duration::days(2), 8, 30);
    fleet.ingest_appointment("A1", SOUTH, "P1", 1, starts_at).await;

    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let reminder_48h = fleet.job("A1", 1, "reminder_48h").await;
    let reminder_2h = fleet.job("A1", 1, "reminder_2h").await;
    assert_eq!(local(confirmation.due_at), "08:00", "the confirmation waits for the end of quiet hours");
    assert_eq!(reminder_48h.due_at, starts_at - chrono::Duration::hours(48), "08:30 is outside quiet hours");
    assert_eq!(local(reminder_2h.due_at), "20:59", "moved earlier, before quiet hours begin");
    assert_eq!(reminder_2h.due_at.date_naive() + Days::new(1), starts_at.date_naive());

    // One minute before 08:00: the whole fleet is at rest and nothing has gone out.
    fleet.clock.set(confirmation.due_at - chrono::Duration::minutes(1));
    fleet.settle().await;
    assert!(fleet.messages_to(&ravi).is_empty(), "a message went out during quiet hours");

    fleet.clock.set(confirmation.due_at);
    let sent = fleet.wait_for_messages_to(&ravi, 1).await;
    assert_eq!(sent[0].biz_opaque_callback_data, Some(confirmation.job_id.to_string()));

    fleet.clock.set(reminder_48h.due_at);
    fleet.wait_for_messages_to(&ravi, 2).await;
    fleet.clock.set(reminder_2h.due_at - chrono::Duration::minutes(1));
    fleet.settle().await;
    assert_eq!(fleet.messages_to(&ravi).len(), 2, "the 2 h reminder is not due yet");
    fleet.clock.set(reminder_2h.due_at);
    let sent = fleet.wait_for_messages_to(&ravi, 3).await;
    assert_eq!(sent[2].biz_opaque_callback_data, Some(reminder_2h.job_id.to_string()));
}
