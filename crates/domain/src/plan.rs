//! Reminder planning: which messages an appointment gets, and when.
//!
//! A booking confirmation goes out at once; a reminder goes out at each of the facility's
//! offsets before the start (elapsed time, so a 48 h reminder is 48 real hours ahead even
//! across a DST change). Nothing is sent inside the facility's quiet hours, judged on the local
//! wall clock of the facility's time zone:
//!
//! * a reminder that falls in quiet hours moves **earlier**, to one minute before they begin,
//!   so it keeps at least its lead time;
//! * if that moment has already passed, it moves **later**, to the end of quiet hours, as long
//!   as that still leaves [`MIN_LEAD`] before the appointment;
//! * otherwise, or when the reminder's time has already passed, it is skipped with a reason.
//!
//! A booking confirmation in quiet hours waits for their end.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::facility::{Facility, QuietHours};

pub const BOOKING_CONFIRMATION: &str = "booking_confirmation";

/// A reminder later than this before the appointment is not worth sending.
pub const MIN_LEAD: Duration = Duration::minutes(30);

/// Reminders this close to the appointment, and booking confirmations, travel in the sender's
/// urgent lane: when a number is saturated they go ahead of reminders days ahead.
pub const URGENT_WITHIN: Duration = Duration::hours(6);

/// The lead time of a reminder kind (`reminder_2h` is 2 h); `None` for other kinds.
pub fn reminder_lead(kind: &str) -> Option<Duration> {
    kind.strip_prefix("reminder_")?.parse::<crate::facility::Offset>().ok().map(|offset| offset.0)
}

/// Whether a job of this kind travels in the urgent lane (see [`URGENT_WITHIN`]).
pub fn is_urgent_kind(kind: &str) -> bool {
    kind == BOOKING_CONFIRMATION || reminder_lead(kind).is_some_and(|lead| lead <= URGENT_WITHIN)
}

/// How late a booking confirmation may still go out.
pub const CONFIRMATION_LATENESS: Duration = Duration::hours(12);

/// The latest moment a job of this kind, due at `due_at`, may still go out for an appointment
/// starting at `starts_at`; past it the message would serve no purpose, and the sender drops it
/// with the reason `too_late` instead of sending it late (after an outage, a long backlog or
/// many retries).
///
/// - A reminder may be late by half its lead (a 48 h reminder by 24 h, a 2 h reminder by 1 h).
/// - A booking confirmation may be late by [`CONFIRMATION_LATENESS`].
/// - Nothing goes out later than [`MIN_LEAD`] before the start (the planner never plans a job
///   after that, so a job is always sendable at its due time).
pub fn send_deadline(kind: &str, due_at: DateTime<Utc>, starts_at: DateTime<Utc>) -> DateTime<Utc> {
    let lateness = reminder_lead(kind).map_or(CONFIRMATION_LATENESS, |lead| lead / 2);
    (due_at + lateness).min(starts_at - MIN_LEAD)
}

/// How far before quiet hours a moved reminder goes out.
const BEFORE_QUIET: Duration = Duration::minutes(1);

/// What the planner decided for one kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    SendAt(DateTime<Utc>),
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The reminder's time had already passed when the appointment was (re)booked.
    TooLate,
    /// Quiet hours left no acceptable moment before the appointment.
    QuietHours,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLate => "too_late",
            Self::QuietHours => "quiet_hours",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMessage {
    pub kind: String,
    pub decision: Decision,
}

/// Plans every message for an appointment starting at `starts_at`, as seen at `now`.
/// `confirm` is false when the appointment was already confirmed to the patient at this start
/// time (an update that did not move it).
pub fn plan_messages(
    facility: &Facility,
    starts_at: DateTime<Utc>,
    now: DateTime<Utc>,
    confirm: bool,
) -> Vec<PlannedMessage> {
    let mut plan = Vec::new();
    if facility.booking_confirmation && confirm {
        let decision = if now >= starts_at - MIN_LEAD {
            Decision::Skip(SkipReason::TooLate)
        } else {
            match quiet_window(facility, now) {
                None => Decision::SendAt(now),
                Some((_, end)) if end <= starts_at - MIN_LEAD => Decision::SendAt(end),
                Some(_) => Decision::Skip(SkipReason::QuietHours),
            }
        };
        plan.push(PlannedMessage { kind: crate::plan::BOOKING_CONFIRMATION.to_owned(), decision });
    }
    for offset in &facility.reminder_offsets {
        let target = starts_at - offset.0;
        let decision = if target <= now {
            Decision::Skip(SkipReason::TooLate)
        } else {
            match quiet_window(facility, target) {
                None => Decision::SendAt(target),
                Some((start, end)) => {
                    let earlier = start - BEFORE_QUIET;
                    if earlier > now {
                        Decision::SendAt(earlier)
                    } else if end <= starts_at - MIN_LEAD {
                        Decision::SendAt(end)
                    } else {
                        Decision::Skip(SkipReason::QuietHours)
                    }
                }
            }
        };
        plan.push(PlannedMessage { kind: offset.job_kind(), decision });
    }
    plan
}

/// Whether `at` falls in the facility's quiet hours; if so, the instants they began and end.
pub fn quiet_window(facility: &Facility, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let quiet = facility.quiet_hours?;
    quiet_window_in(quiet, facility.time_zone, at)
}

fn quiet_window_in(quiet: QuietHours, tz: Tz, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let local = at.with_timezone(&tz).naive_local();
    let (date, time) = (local.date(), local.time());
    let (start_date, end_date) = if quiet.start == quiet.end {
        return None;
    } else if quiet.start < quiet.end {
        if time < quiet.start || time >= quiet.end {
            return None;
        }
        (date, date)
    } else if time >= quiet.start {
        (date, date.succ_opt()?)
    } else if time < quiet.end {
        (date.pred_opt()?, date)
    } else {
        return None;
    };
    Some((instant_of(tz, start_date, quiet.start, Edge::Earliest), instant_of(tz, end_date, quiet.end, Edge::Latest)))
}

#[derive(Clone, Copy)]
enum Edge {
    Earliest,
    Latest,
}

/// The instant a local wall-clock time names. In a fall-back overlap it picks the earliest
/// (for a start) or latest (for an end) reading, so quiet hours are never shortened; in a
/// spring-forward gap it takes the first instant after the gap.
fn instant_of(tz: Tz, date: NaiveDate, time: NaiveTime, edge: Edge) -> DateTime<Utc> {
    let mut naive = NaiveDateTime::new(date, time);
    // DST gaps are at most a few hours; step forward until the wall time exists.
    for _ in 0..(4 * 60) {
        match (tz.from_local_datetime(&naive), edge) {
            (LocalResult::Single(t), _) => return t.with_timezone(&Utc),
            (LocalResult::Ambiguous(a, _), Edge::Earliest) => return a.with_timezone(&Utc),
            (LocalResult::Ambiguous(_, b), Edge::Latest) => return b.with_timezone(&Utc),
            (LocalResult::None, _) => naive += Duration::minutes(1),
        }
    }
    // Unreachable for real time zones; fall back to reading the wall time as UTC.
    naive.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facility::Offset;

    fn facility(tz: Tz, quiet: Option<(&str, &str)>) -> Facility {
        Facility {
            id: "f".into(),
            name: "F".into(),
            time_zone: tz,
            address: None,
            map_link: None,
            phone_number_id: "1".into(),
            throughput_mps: 80,
            portfolio: None,
            booking_confirmation: true,
            reminder_offsets: vec![Offset(Duration::hours(48)), Offset(Duration::hours(2))],
            quiet_hours: quiet.map(|(s, e)| QuietHours {
                start: NaiveTime::parse_from_str(s, "%H:%M").unwrap(),
                end: NaiveTime::parse_from_str(e, "%H:%M").unwrap(),
            }),
            templates: Default::default(),
            contact: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn decisions(plan: &[PlannedMessage]) -> Vec<(&str, Decision)> {
        plan.iter().map(|p| (p.kind.as_str(), p.decision.clone())).collect()
    }

    #[test]
    fn plans_a_confirmation_now_and_reminders_48h_and_2h_before() {
        let f = facility(chrono_tz::UTC, None);
        let plan = plan_messages(&f, t("2026-06-10T12:00:00Z"), t("2026-06-01T09:00:00Z"), true);
        assert_eq!(
            decisions(&plan),
            [
                ("booking_confirmation", Decision::SendAt(t("2026-06-01T09:00:00Z"))),
                ("reminder_48h", Decision::SendAt(t("2026-06-08T12:00:00Z"))),
                ("reminder_2h", Decision::SendAt(t("2026-06-10T10:00:00Z"))),
            ]
        );
    }

    #[test]
    fn skips_reminders_whose_time_has_passed() {
        let f = facility(chrono_tz::UTC, None);
        let plan = plan_messages(&f, t("2026-06-10T12:00:00Z"), t("2026-06-09T12:00:00Z"), false);
        assert_eq!(
            decisions(&plan),
            [
                ("reminder_48h", Decision::Skip(SkipReason::TooLate)),
                ("reminder_2h", Decision::SendAt(t("2026-06-10T10:00:00Z")))
            ]
        );
    }

    #[test]
    fn a_reminder_in_quiet_hours_moves_to_just_before_they_begin() {
        // Kolkata is UTC+05:30. Appointment 07:30 local; 2 h reminder would be 05:30 local.
        let f = facility(chrono_tz::Asia::Kolkata, Some(("21:00", "08:00")));
        let plan = plan_messages(&f, t("2026-06-10T02:00:00Z"), t("2026-06-01T00:00:00Z"), false);
        // 20:59 local on 9 June = 15:29Z.
        assert_eq!(plan[1].decision, Decision::SendAt(t("2026-06-09T15:29:00Z")));
    }

    #[test]
    fn a_reminder_moves_later_when_before_quiet_hours_has_passed() {
        // Now is 22:00 local (inside quiet hours); appointment 11:00 local next day.
        let f = facility(chrono_tz::Asia::Kolkata, Some(("21:00", "08:00")));
        let now = t("2026-06-09T16:30:00Z");
        let starts = t("2026-06-10T05:30:00Z");
        let plan = plan_messages(&f, starts, now, true);
        // Confirmation and the 2 h reminder (09:00 local) outside quiet: confirmation waits to 08:00.
        assert_eq!(plan[0].decision, Decision::SendAt(t("2026-06-10T02:30:00Z")));
        assert_eq!(plan[2].decision, Decision::SendAt(t("2026-06-10T03:30:00Z")));
    }

    #[test]
    fn a_reminder_is_skipped_when_quiet_hours_leave_no_room() {
        // Now 22:00 local, appointment 07:00 local next morning: 2 h reminder at 05:00 local is
        // quiet, before-quiet is past, after-quiet (08:00) is after the appointment.
        let f = facility(chrono_tz::Asia::Kolkata, Some(("21:00", "08:00")));
        let plan = plan_messages(&f, t("2026-06-10T01:30:00Z"), t("2026-06-09T16:30:00Z"), true);
        assert_eq!(plan[0].decision, Decision::Skip(SkipReason::QuietHours));
        assert_eq!(plan[2].decision, Decision::Skip(SkipReason::QuietHours));
    }

    #[test]
    fn quiet_hours_follow_the_spring_forward_transition() {
        // Berlin moves from CET (+1) to CEST (+2) at 02:00 on 29 March 2026.
        // Appointment 09:00 CEST on 29 March = 07:00Z; 2 h reminder = 05:00Z = 07:00 CEST (quiet).
        // Quiet began 21:00 CET on 28 March = 20:00Z; the reminder goes at 19:59Z.
        let f = facility(chrono_tz::Europe::Berlin, Some(("21:00", "08:00")));
        let plan = plan_messages(&f, t("2026-03-29T07:00:00Z"), t("2026-03-20T00:00:00Z"), false);
        assert_eq!(plan[1].decision, Decision::SendAt(t("2026-03-28T19:59:00Z")));
        // The same local hours end at 08:00 CEST = 06:00Z.
        assert_eq!(quiet_window(&f, t("2026-03-29T05:00:00Z")).unwrap().1, t("2026-03-29T06:00:00Z"));
    }

    #[test]
    fn quiet_hours_follow_the_fall_back_transition() {
        // New York moves from EDT (-4) to EST (-5) at 02:00 on 1 November 2026.
        // Appointment 08:30 EST = 13:30Z; 2 h reminder = 11:30Z = 06:30 EST (quiet 22:00-07:00).
        // Quiet began 22:00 EDT on 31 October = 02:00Z on 1 November.
        let f = facility(chrono_tz::America::New_York, Some(("22:00", "07:00")));
        let plan = plan_messages(&f, t("2026-11-01T13:30:00Z"), t("2026-10-25T00:00:00Z"), false);
        assert_eq!(plan[1].decision, Decision::SendAt(t("2026-11-01T01:59:00Z")));
        // Quiet hours end at 07:00 EST = 12:00Z, not 11:00Z as a fixed -4 offset would say.
        assert_eq!(quiet_window(&f, t("2026-11-01T11:30:00Z")).unwrap().1, t("2026-11-01T12:00:00Z"));
    }

    #[test]
    fn quiet_hours_boundaries_inside_dst_gaps_and_overlaps_are_never_shortened() {
        // Quiet 02:30-03:30 does not exist on 29 March in Berlin (02:00 -> 03:00): it starts at
        // the first instant after the gap.
        let f = facility(chrono_tz::Europe::Berlin, Some(("02:30", "03:30")));
        let w = quiet_window(&f, t("2026-03-29T01:15:00Z")).unwrap();
        assert_eq!(w, (t("2026-03-29T01:00:00Z"), t("2026-03-29T01:30:00Z")));
        // 01:30 happens twice on 1 November in New York: quiet 01:00-01:30 ends at the later one.
        let f = facility(chrono_tz::America::New_York, Some(("01:00", "01:30")));
        let w = quiet_window(&f, t("2026-11-01T05:10:00Z")).unwrap();
        assert_eq!(w, (t("2026-11-01T05:00:00Z"), t("2026-11-01T06:30:00Z")));
    }

    #[test]
    fn two_time_zones_judge_the_same_instant_differently() {
        let at = t("2026-06-10T03:00:00Z"); // 08:30 in Kolkata, 23:00 the day before in New York
        let kolkata = facility(chrono_tz::Asia::Kolkata, Some(("21:00", "08:00")));
        let new_york = facility(chrono_tz::America::New_York, Some(("21:00", "08:00")));
        assert!(quiet_window(&kolkata, at).is_none());
        assert!(quiet_window(&new_york, at).is_some());
    }

    #[test]
    fn urgent_lane_holds_confirmations_and_reminders_within_six_hours() {
        assert!(is_urgent_kind(BOOKING_CONFIRMATION));
        assert!(is_urgent_kind("reminder_2h"));
        assert!(is_urgent_kind("reminder_90m"));
        assert!(is_urgent_kind("reminder_6h"));
        assert!(!is_urgent_kind("reminder_48h"));
        assert!(!is_urgent_kind("reminder_7h"));
        assert!(!is_urgent_kind("reminder_bogus"));
    }

    #[test]
    fn a_reminder_may_be_late_by_half_its_lead_but_never_past_the_minimum_lead() {
        let start = Utc.with_ymd_and_hms(2026, 5, 10, 12, 0, 0).unwrap();
        let due = start - Duration::hours(48);
        assert_eq!(send_deadline("reminder_48h", due, start), start - Duration::hours(24));
        let due = start - Duration::hours(2);
        assert_eq!(send_deadline("reminder_2h", due, start), start - Duration::hours(1));
        // Moved later by quiet hours to 45 min before the start: 15 min of slack, not 1 h.
        let due = start - Duration::minutes(45);
        assert_eq!(send_deadline("reminder_2h", due, start), start - MIN_LEAD);
        let booked = start - Duration::days(10);
        assert_eq!(send_deadline(BOOKING_CONFIRMATION, booked, start), booked + CONFIRMATION_LATENESS);
    }
}
