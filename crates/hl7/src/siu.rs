//! SIU (scheduling information unsolicited) messages read into what Careline needs to know
//! about an appointment and its patient.
//!
//! | trigger | meaning | Careline status |
//! |---|---|---|
//! | S12 | new appointment booked | `booked` (unless SCH-25 says otherwise) |
//! | S13 | rescheduled | `booked`, new time (reminders re-planned) |
//! | S14 | modified | `booked` (unless SCH-25 says otherwise) |
//! | S15 | cancelled | `cancelled` |
//! | S17 | deleted | `cancelled` |
//! | S26 | patient did not show | `cancelled`: no further reminders |
//!
//! Careline's appointment has two states, so an SCH-25 filler status of `Cancelled`,
//! `Deleted`, `Noshow`, `Complete`, `DC`, `Blocked`, `Pending` or `Waitlist` on S12/S13/S14
//! also means `cancelled` (nothing is sent for an appointment that is not, or no longer,
//! booked); `Booked`, `Overbook`, `Confirmed`, `Arrived`, `Started` or no status mean `booked`.
//!
//! The report is not yet an event: the caller validates it with the same rules as every other
//! way into Careline and turns it into `PatientUpserted`/`AppointmentUpserted`. Each value
//! remembers where it came from ([`SiuReport::location_of`]) so a validation error can name
//! the HL7 field. Segments are looked up by id, so their order does not matter; SCH and PID
//! must each appear at most once (one appointment, one patient per message).
//!
//! SIU carries no WhatsApp consent, so the report carries none either: consent is recorded
//! through Careline's own API, never assumed from a scheduling message.

use careline_domain::Phone;
use careline_domain::events::AppointmentStatus;
use careline_domain::facility::NetworkConfig;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::ack::{ErrorCode, Issue};
use crate::datetime::{DateTimeError, HlDateTime};
use crate::message::{Field, Location, Message, Repetition, Segment};

/// The SIU trigger events Careline accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    S12,
    S13,
    S14,
    S15,
    S17,
    S26,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [Self::S12, Self::S13, Self::S14, Self::S15, Self::S17, Self::S26];

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(code.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::S12 => "S12",
            Self::S13 => "S13",
            Self::S14 => "S14",
            Self::S15 => "S15",
            Self::S17 => "S17",
            Self::S26 => "S26",
        }
    }

    /// Whether the trigger ends the appointment whatever its SCH-25 says.
    pub fn ends_appointment(self) -> bool {
        matches!(self, Self::S15 | Self::S17 | Self::S26)
    }
}

/// The names Careline's validation gives the fields (see ingest's JSON API).
pub mod fields {
    pub const PATIENT_ID: &str = "patient_id";
    pub const FACILITY_ID: &str = "facility_id";
    pub const FIRST_NAME: &str = "first_name";
    pub const PHONE: &str = "phone";
    pub const LANGUAGE: &str = "language";
    pub const APPOINTMENT_ID: &str = "appointment_id";
    pub const VERSION: &str = "version";
    pub const STATUS: &str = "status";
    pub const STARTS_AT: &str = "starts_at";
    pub const DURATION_MINUTES: &str = "duration_minutes";
    pub const CLINICIAN: &str = "clinician";
    pub const DEPARTMENT: &str = "department";
}

/// The patient as the message describes them. No consent: SIU does not carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientReport {
    /// PID-3: the identifier of type `MR`, else the first.
    pub patient_id: Option<String>,
    /// PID-5 given name (of the legal name when several are sent).
    pub first_name: Option<String>,
    /// PID-13: a mobile number in E.164, when one could be chosen.
    pub phone: Option<String>,
    /// PID-15 as a language tag; the network's default language when absent.
    pub language: Option<String>,
}

/// The appointment as the message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentReport {
    /// SCH-2 filler id, else SCH-1 placer id.
    pub appointment_id: Option<String>,
    pub status: AppointmentStatus,
    /// TQ1-7, else SCH-11.4, else AIS-4.
    pub starts_at: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i64>,
    /// AIP-3: prefix, given and family name of the first person named.
    pub clinician: Option<String>,
    /// AIS-3: the service's text, else its code.
    pub department: Option<String>,
}

/// Everything read from one SIU message.
#[derive(Debug, Clone)]
pub struct SiuReport {
    pub trigger: Trigger,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-3 (first component).
    pub sending_application: Option<String>,
    /// AIL-3 when it names a configured facility, else MSH-4.
    pub facility_id: Option<String>,
    /// MSH-7 in epoch milliseconds: a message sent later wins over one sent earlier.
    pub version: Option<i64>,
    pub patient: PatientReport,
    pub appointment: AppointmentReport,
    /// Problems found while reading: errors mean the message cannot be applied as sent;
    /// warnings accompany an accepted message.
    pub issues: Vec<Issue>,
    locations: Vec<(&'static str, Location)>,
}

impl SiuReport {
    /// Where the value of a Careline field was read (or would have been).
    pub fn location_of(&self, field: &str) -> Option<Location> {
        self.locations.iter().find(|(f, _)| *f == field).map(|(_, l)| *l)
    }

    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(Issue::is_error)
    }
}

/// Checks MSH before anything else: an SIU message, a supported trigger, HL7 v2, and (when
/// given) the expected processing id. An `Err` means the message is rejected (AR).
pub fn check_header(message: &Message, processing_id: Option<&str>) -> Result<Trigger, Issue> {
    let msh = message.header();
    let message_type = msh.field(9);
    if !message_type.component(1).is_some_and(|t| t.eq_ignore_ascii_case("SIU")) {
        return Err(Issue::error(
            ErrorCode::UnsupportedMessageType,
            Some(Location::component("MSH", 9, 1)),
            "only SIU scheduling messages are accepted",
        ));
    }
    let trigger = message_type.component(2).as_deref().and_then(Trigger::parse).ok_or_else(|| {
        Issue::error(
            ErrorCode::UnsupportedEventCode,
            Some(Location::component("MSH", 9, 2)),
            "trigger event not supported; accepted: S12, S13, S14, S15, S17, S26",
        )
    })?;
    if msh.field(12).value().is_some_and(|v| !v.starts_with("2.")) {
        return Err(Issue::error(
            ErrorCode::UnsupportedVersionId,
            Some(Location::field("MSH", 12)),
            "only HL7 version 2.x is accepted",
        ));
    }
    if let Some(expected) = processing_id
        && msh.field(11).value().is_some_and(|p| !p.eq_ignore_ascii_case(expected))
    {
        return Err(Issue::error(
            ErrorCode::UnsupportedProcessingId,
            Some(Location::field("MSH", 11)),
            format!("this interface accepts processing id {expected} only"),
        ));
    }
    Ok(trigger)
}

/// The facility a message is for: the first AIL-3 whose first component (or facility
/// component, PL-4) is a configured facility id, else MSH-4's first component as sent.
pub fn facility_of(message: &Message, network: &NetworkConfig) -> (Option<String>, Location) {
    for ail in message.segments_named("AIL") {
        for rep in ail.field(3).repetitions() {
            for candidate in [rep.component(1), rep.component(4)].into_iter().flatten() {
                if network.facility(&candidate).is_some() {
                    return (Some(candidate), Location::field("AIL", 3));
                }
            }
        }
    }
    (message.header().field(4).value(), Location::field("MSH", 4))
}

/// Reads an SIU message whose header passed [`check_header`].
pub fn read_siu(message: &Message, trigger: Trigger, network: &NetworkConfig) -> SiuReport {
    let mut r = Reader::default();
    let msh = message.header();
    let (facility_id, facility_at) = facility_of(message, network);
    r.locate(fields::FACILITY_ID, facility_at);
    let zone = facility_id.as_deref().and_then(|id| network.facility(id)).map_or(chrono_tz::UTC, |f| f.time_zone);

    let version_at = Location::field("MSH", 7);
    r.locate(fields::VERSION, version_at);
    let version = r.datetime(msh.field(7).value(), version_at, zone).map(|at| at.timestamp_millis());

    let sch = r.single(message, "SCH", "one appointment per message");
    let pid = r.single(message, "PID", "group appointments (several patients) are not supported");
    let appointment_id = r.appointment_id(sch);
    let (starts_at, end) = r.start(message, sch, zone);
    let duration_minutes = r.duration(message, sch, starts_at, end, zone);
    let status = status_of(trigger, sch);
    r.locate(fields::STATUS, Location::field("SCH", 25));
    let clinician = r.clinician(message);
    let department = r.department(message);
    let patient = r.patient(pid, network);

    SiuReport {
        trigger,
        control_id: msh.field(10).value(),
        sending_application: msh.field(3).value(),
        facility_id,
        version,
        patient,
        appointment: AppointmentReport { appointment_id, status, starts_at, duration_minutes, clinician, department },
        issues: r.issues,
        locations: r.locations,
    }
}

fn status_of(trigger: Trigger, sch: Option<&Segment>) -> AppointmentStatus {
    if trigger.ends_appointment() {
        return AppointmentStatus::Cancelled;
    }
    let status = sch.map(|s| s.field(25)).and_then(|f| f.component(1).or_else(|| f.component(2)));
    match status.map(|s| s.to_ascii_uppercase().replace([' ', '-', '_'], "")).as_deref() {
        Some(
            "CANCELLED" | "CANCELED" | "DELETED" | "NOSHOW" | "COMPLETE" | "COMPLETED" | "DC" | "DISCONTINUED"
            | "BLOCKED" | "PENDING" | "WAITLIST",
        ) => AppointmentStatus::Cancelled,
        _ => AppointmentStatus::Booked,
    }
}

#[derive(Default)]
struct Reader {
    issues: Vec<Issue>,
    locations: Vec<(&'static str, Location)>,
}

impl Reader {
    fn locate(&mut self, field: &'static str, at: Location) {
        self.locations.retain(|(f, _)| *f != field);
        self.locations.push((field, at));
    }

    fn single<'m>(&mut self, message: &'m Message, id: &'static str, why: &str) -> Option<&'m Segment> {
        let mut found = message.segments_named(id);
        let first = found.next();
        match (first, found.count()) {
            (None, _) => {
                self.issues.push(Issue::error(
                    ErrorCode::SegmentSequenceError,
                    Some(Location::segment(id)),
                    format!("the {id} segment is missing"),
                ));
                None
            }
            (Some(segment), 0) => Some(segment),
            (Some(_), more) => {
                self.issues.push(Issue::error(
                    ErrorCode::SegmentSequenceError,
                    Some(Location::segment(id)),
                    format!("{id} appears {} times; {why}", more + 1),
                ));
                None
            }
        }
    }

    /// A date/time with a time of day; an issue at `at` when present but unreadable.
    fn datetime(&mut self, value: Option<String>, at: Location, zone: Tz) -> Option<DateTime<Utc>> {
        let value = value?;
        match HlDateTime::parse(&value).and_then(|dt| dt.resolve_with_time(zone)) {
            Ok(instant) => Some(instant),
            Err(e) => {
                let text = match e {
                    DateTimeError::NoTime => "a date and a time of day are required".to_owned(),
                    other => other.to_string(),
                };
                self.issues.push(Issue::error(ErrorCode::DataTypeError, Some(at), text));
                None
            }
        }
    }

    fn appointment_id(&mut self, sch: Option<&Segment>) -> Option<String> {
        let filler = sch.and_then(|s| s.field(2).value());
        let placer = sch.and_then(|s| s.field(1).value());
        let (id, at) = match (filler, placer) {
            (Some(id), _) => (Some(id), Location::field("SCH", 2)),
            (None, Some(id)) => (Some(id), Location::field("SCH", 1)),
            (None, None) => (None, Location::field("SCH", 2)),
        };
        self.locate(fields::APPOINTMENT_ID, at);
        id
    }

    /// The start, and the end written next to it (with its location) when there is one.
    fn start(
        &mut self,
        message: &Message,
        sch: Option<&Segment>,
        zone: Tz,
    ) -> (Option<DateTime<Utc>>, Option<(String, Location)>) {
        let tq1 = message.segment("TQ1");
        let from_tq1 = tq1.and_then(|t| {
            let start = t.field(7).value()?;
            Some((start, Location::field("TQ1", 7), t.field(8).value().map(|e| (e, Location::field("TQ1", 8)))))
        });
        let from_sch = || {
            let timing = sch?.field(11);
            let start = timing.component(4)?;
            Some((
                start,
                Location::component("SCH", 11, 4),
                timing.component(5).map(|e| (e, Location::component("SCH", 11, 5))),
            ))
        };
        let from_ais = || {
            message
                .segments_named("AIS")
                .find_map(|ais| ais.field(4).value())
                .map(|start| (start, Location::field("AIS", 4), None))
        };
        match from_tq1.or_else(from_sch).or_else(from_ais) {
            Some((start, at, end)) => {
                self.locate(fields::STARTS_AT, at);
                (self.datetime(Some(start), at, zone), end)
            }
            None => {
                let at = if tq1.is_some() { Location::field("TQ1", 7) } else { Location::component("SCH", 11, 4) };
                self.locate(fields::STARTS_AT, at);
                (None, None)
            }
        }
    }

    /// The length, from the first of: the end next to the start, TQ1-13, SCH-11.3, SCH-9/10,
    /// AIS-7/8.
    fn duration(
        &mut self,
        message: &Message,
        sch: Option<&Segment>,
        starts_at: Option<DateTime<Utc>>,
        end: Option<(String, Location)>,
        zone: Tz,
    ) -> Option<i64> {
        self.locate(fields::DURATION_MINUTES, Location::field("SCH", 9));
        if let Some((end, at)) = end {
            self.locate(fields::DURATION_MINUTES, at);
            let end = self.datetime(Some(end), at, zone);
            if let (Some(start), Some(end)) = (starts_at, end) {
                let seconds = (end - start).num_seconds();
                return Some(seconds.div_euclid(60) + i64::from(seconds.rem_euclid(60) > 0));
            }
            return None;
        }
        let tq1 = message.segment("TQ1");
        let ais = message.segments_named("AIS").find(|a| !a.field(7).is_empty());
        let sources = [
            tq1.map(|t| (t.field(13).component(1), t.field(13).component(2), false, Location::field("TQ1", 13))),
            sch.map(|s| (s.field(11).component(3), None, true, Location::component("SCH", 11, 3))),
            sch.map(|s| (s.field(9).value(), unit_of(s.field(10)), false, Location::field("SCH", 9))),
            ais.map(|a| (a.field(7).value(), unit_of(a.field(8)), false, Location::field("AIS", 7))),
        ];
        for (value, unit, coded, at) in sources.into_iter().flatten() {
            let Some(value) = value else { continue };
            if coded && value.eq_ignore_ascii_case("INDEF") {
                continue;
            }
            let minutes = if coded { coded_duration(&value) } else { minutes_of(&value, unit.as_deref()) };
            match minutes {
                Some(minutes) => {
                    self.locate(fields::DURATION_MINUTES, at);
                    return Some(minutes);
                }
                // The length is optional: an unreadable one is reported and the next source tried.
                None => self.issues.push(Issue::warning(
                    ErrorCode::DataTypeError,
                    Some(at),
                    "duration not understood (a number of minutes, hours, seconds or days, or M20/H1); ignored",
                )),
            }
        }
        None
    }

    fn clinician(&mut self, message: &Message) -> Option<String> {
        self.locate(fields::CLINICIAN, Location::field("AIP", 3));
        message.segments_named("AIP").flat_map(|aip| aip.field(3).repetitions().collect::<Vec<_>>()).find_map(|xcn| {
            let parts: Vec<String> =
                [xcn.component(6), xcn.component(3), xcn.component(2)].into_iter().flatten().collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
    }

    fn department(&mut self, message: &Message) -> Option<String> {
        self.locate(fields::DEPARTMENT, Location::field("AIS", 3));
        message.segments_named("AIS").find_map(|ais| {
            let service = ais.field(3).first();
            service.component(2).or_else(|| service.component(1))
        })
    }

    fn patient(&mut self, pid: Option<&Segment>, network: &NetworkConfig) -> PatientReport {
        self.locate(fields::PATIENT_ID, Location::field("PID", 3));
        self.locate(fields::FIRST_NAME, Location::component("PID", 5, 2));
        self.locate(fields::PHONE, Location::field("PID", 13));
        self.locate(fields::LANGUAGE, Location::field("PID", 15));
        let Some(pid) = pid else { return PatientReport::default() };

        let ids: Vec<Repetition<'_>> = pid.field(3).repetitions().filter(|r| r.component(1).is_some()).collect();
        let patient_id = ids
            .iter()
            .find(|r| r.component(5).is_some_and(|t| t.eq_ignore_ascii_case("MR")))
            .or(ids.first())
            .and_then(|r| r.component(1));

        let names: Vec<Repetition<'_>> = pid.field(5).repetitions().collect();
        let first_name = names
            .iter()
            .find(|n| n.component(7).is_some_and(|t| t.eq_ignore_ascii_case("L")))
            .or(names.first())
            .and_then(|n| n.component(2));

        let phone = choose_mobile(pid.field(13));
        if phone.is_none() {
            self.issues.push(Issue::warning(
                ErrorCode::RequiredFieldMissing,
                Some(Location::field("PID", 13)),
                "no mobile number with a country code; the patient's contact details were not updated",
            ));
        }

        let language = pid
            .field(15)
            .first()
            .component(1)
            .or_else(|| pid.field(15).first().component(2))
            .map(|l| language_tag(&l))
            .unwrap_or_else(|| network.default_language.clone());

        PatientReport { patient_id, first_name, phone: phone.map(|p| p.e164().to_owned()), language: Some(language) }
    }
}

fn unit_of(field: Field<'_>) -> Option<String> {
    field.component(1).or_else(|| field.component(2))
}

/// A quantity in a unit (minutes when none is given) as whole minutes, rounded up.
fn minutes_of(quantity: &str, unit: Option<&str>) -> Option<i64> {
    let quantity: f64 = quantity.trim().parse().ok().filter(|q: &f64| q.is_finite() && q.abs() < 1e7)?;
    let per_unit = match unit.map(|u| u.trim().to_ascii_lowercase()).as_deref() {
        None | Some("min" | "mins" | "minute" | "minutes" | "m" | "mn") => 1.0,
        Some("h" | "hr" | "hrs" | "hour" | "hours") => 60.0,
        Some("s" | "sec" | "secs" | "second" | "seconds") => 1.0 / 60.0,
        Some("d" | "day" | "days") => 1440.0,
        Some(_) => return None,
    };
    Some((quantity * per_unit).ceil() as i64)
}

/// TQ duration codes: `S<n>`, `M<n>`, `H<n>`, `D<n>`; a bare number is minutes.
fn coded_duration(code: &str) -> Option<i64> {
    let code = code.trim();
    if let Ok(minutes) = code.parse::<i64>() {
        return (0..10_000_000).contains(&minutes).then_some(minutes);
    }
    let unit = code.get(..1)?;
    let n: i64 = code.get(1..)?.parse().ok().filter(|n| (0..10_000_000).contains(n))?;
    match unit.to_ascii_uppercase().as_str() {
        "S" => Some((n + 59) / 60),
        "M" => Some(n),
        "H" => Some(n * 60),
        "D" => Some(n * 1440),
        _ => None,
    }
}

/// PID-13: the number to message. A home or other-residence number on a cellular phone
/// (XTN-2 `PRN`/`ORN`, XTN-3 `CP`) first; else the first number that is a mobile number.
/// Only numbers with a country code can be used (`+…`, `00…`, or XTN-5 country code).
fn choose_mobile(field: Field<'_>) -> Option<Phone> {
    let candidates: Vec<(Repetition<'_>, Phone)> =
        field.repetitions().filter_map(|r| phone_of(&r).map(|p| (r, p))).collect();
    let is = |r: &Repetition<'_>, n: usize, codes: &[&str]| {
        r.component(n).is_some_and(|v| codes.iter().any(|c| v.eq_ignore_ascii_case(c)))
    };
    candidates
        .iter()
        .find(|(r, _)| is(r, 2, &["PRN", "ORN"]) && is(r, 3, &["CP"]))
        .or_else(|| {
            candidates.iter().find(|(r, p)| !is(r, 3, &["FX", "BP", "MD", "Internet", "X.400"]) && is_mobile(p))
        })
        .map(|(_, p)| p.clone())
}

fn phone_of(xtn: &Repetition<'_>) -> Option<Phone> {
    // An extension or notes after the number ("…X123", "…B note") are not part of it.
    let number_part = |s: &str| s.split(|c: char| c.is_ascii_alphabetic()).next().unwrap_or("").trim().to_owned();
    let unformatted = xtn.component(12).map(|s| number_part(&s)).filter(|s| s.starts_with('+'));
    let parts = xtn.component(5).map(|country| {
        let digits: String = [Some(country), xtn.component(6), xtn.component(7)]
            .into_iter()
            .flatten()
            .flat_map(|s| s.chars().filter(char::is_ascii_digit).collect::<Vec<_>>())
            .collect();
        format!("+{digits}")
    });
    let formatted = xtn
        .component(1)
        .map(|s| number_part(&s))
        .and_then(|s| if s.starts_with('+') { Some(s) } else { s.strip_prefix("00").map(|rest| format!("+{rest}")) });
    [unformatted, parts, formatted].into_iter().flatten().find_map(|candidate| Phone::parse(&candidate).ok())
}

fn is_mobile(phone: &Phone) -> bool {
    use phonenumber::Type;
    phonenumber::parse(None, phone.e164()).is_ok_and(|n| {
        matches!(n.number_type(&phonenumber::metadata::DATABASE), Type::Mobile | Type::FixedLineOrMobile)
    })
}

/// ISO 639-2 codes and English names hospital systems write in PID-15, as ISO 639-1.
const LANGUAGES: &[(&str, &str, &str)] = &[
    ("eng", "english", "en"),
    ("hin", "hindi", "hi"),
    ("ben", "bengali", "bn"),
    ("tam", "tamil", "ta"),
    ("tel", "telugu", "te"),
    ("mar", "marathi", "mr"),
    ("guj", "gujarati", "gu"),
    ("kan", "kannada", "kn"),
    ("mal", "malayalam", "ml"),
    ("pan", "punjabi", "pa"),
    ("urd", "urdu", "ur"),
    ("ori", "oriya", "or"),
    ("asm", "assamese", "as"),
    ("nep", "nepali", "ne"),
    ("sin", "sinhala", "si"),
    ("spa", "spanish", "es"),
    ("por", "portuguese", "pt"),
    ("fra", "french", "fr"),
    ("fre", "french", "fr"),
    ("deu", "german", "de"),
    ("ger", "german", "de"),
    ("ita", "italian", "it"),
    ("nld", "dutch", "nl"),
    ("dut", "dutch", "nl"),
    ("ara", "arabic", "ar"),
    ("zho", "chinese", "zh"),
    ("chi", "chinese", "zh"),
    ("jpn", "japanese", "ja"),
    ("kor", "korean", "ko"),
    ("rus", "russian", "ru"),
    ("tur", "turkish", "tr"),
    ("pol", "polish", "pl"),
    ("ukr", "ukrainian", "uk"),
    ("ron", "romanian", "ro"),
    ("rum", "romanian", "ro"),
    ("ell", "greek", "el"),
    ("gre", "greek", "el"),
    ("heb", "hebrew", "he"),
    ("fas", "persian", "fa"),
    ("per", "persian", "fa"),
    ("tha", "thai", "th"),
    ("vie", "vietnamese", "vi"),
    ("ind", "indonesian", "id"),
    ("msa", "malay", "ms"),
    ("may", "malay", "ms"),
    ("tgl", "tagalog", "tl"),
    ("swa", "swahili", "sw"),
    ("swe", "swedish", "sv"),
    ("nor", "norwegian", "no"),
    ("dan", "danish", "da"),
    ("fin", "finnish", "fi"),
];

/// PID-15 as a language tag: ISO 639-2 codes and English names become ISO 639-1; anything
/// else is passed on as written (lower-cased primary subtag) for validation to judge.
fn language_tag(value: &str) -> String {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    if let Some((_, _, tag)) = LANGUAGES.iter().find(|(code, name, _)| *code == lower || *name == lower) {
        return (*tag).to_owned();
    }
    match value.split_once(['-', '_']) {
        Some((primary, rest)) => format!("{}-{rest}", primary.to_ascii_lowercase()),
        None => lower,
    }
}

#[cfg(test)]
mod tests;
