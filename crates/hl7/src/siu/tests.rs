use super::*;
use crate::ack::Severity;

const NETWORK: &str = r#"
    default_language = "en"
    [templates.booking_confirmation]
    name = "appointment_booked"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]
    [templates.reminder]
    name = "appointment_reminder"
    languages = { en = "en", hi = "hi" }
    body = ["first_name", "date_time", "facility"]

    [[facility]]
    id = "city-general"
    name = "City General Hospital"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"

    [[facility]]
    id = "north-clinic"
    name = "North Clinic"
    time_zone = "Europe/Berlin"
    phone_number_id = "1002"
"#;

fn network() -> NetworkConfig {
    NetworkConfig::from_toml(NETWORK).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A new booking as an Epic-style interface engine sends it: TQ1 and SCH-11 both valued,
/// repeated identifiers, names and phones, a Z-segment, and NTE/PV1/RGS segments Careline
/// does not need.
const S12: &str = concat!(
    "MSH|^~\\&|EPIC|CITYGEN|CARELINE|CARELINE|20260301091500||SIU^S12^SIU_S12|MSG00001|P|2.5.1|||AL|NE\r",
    "SCH|PL-5566^EPIC|FL-77^EPIC|||||FOLLOWUP^Follow-up^HL70276|ROUTINE^Routine^HL70277|20|min|^^20^202603050930^202603050950",
    "||||||||||||||Booked^Booked\r",
    "TQ1|1||||||202603050930|202603050950\r",
    "NTE|1||Bring previous reports\r",
    "PID|1||9876^^^GOV^NI~P-1001^^^CITYGEN^MR||Sharma^Asha^K^^^^L~Ash^Ashu^^^^^N||19850412|F|||",
    "12 MG Road^^Bengaluru^KA^560001^IND||^PRN^PH^^91^80^41234567~^PRN^CP^^91^98123^45678|^WPN^PH^^91^80^22334455|HIN^Hindi^ISO6392\r",
    "PV1|1|O|CARD^^^city-general\r",
    "RGS|1|A\r",
    "AIS|1|A|CARD-FU^Cardiology follow-up^L|202603050930|||20|min\r",
    "AIL|1|A|city-general^Room 4^^city-general|||202603050930|||20|min\r",
    "AIP|1|A|1001^Rao^Priya^^^Dr|ATTENDING^Attending^L|||202603050930|||20|min\r",
    "ZCL|1|loyalty^gold|anything\\F\\here\r",
);

fn read(text: &str) -> SiuReport {
    let message = Message::parse(text.as_bytes()).expect("parses");
    let trigger = check_header(&message, Some("P")).expect("an accepted header");
    read_siu(&message, trigger, &network())
}

fn errors(report: &SiuReport) -> Vec<String> {
    report
        .issues
        .iter()
        .filter(|i| i.is_error())
        .map(|i| i.location.map(|l| l.to_string()).unwrap_or_default())
        .collect()
}

#[test]
fn a_new_booking_is_read_with_every_field_careline_uses() {
    let r = read(S12);
    assert_eq!(r.trigger, Trigger::S12);
    assert_eq!(r.control_id.as_deref(), Some("MSG00001"));
    assert_eq!(r.sending_application.as_deref(), Some("EPIC"));
    assert_eq!(r.facility_id.as_deref(), Some("city-general"));
    // MSH-7 is local time in the facility's zone (Asia/Kolkata, +05:30).
    assert_eq!(r.version, Some(utc("2026-03-01T03:45:00Z").timestamp_millis()));
    assert_eq!(
        r.patient,
        PatientReport {
            patient_id: Some("P-1001".into()),
            first_name: Some("Asha".into()),
            phone: Some("+919812345678".into()),
            language: Some("hi".into()),
        }
    );
    assert_eq!(
        r.appointment,
        AppointmentReport {
            appointment_id: Some("FL-77".into()),
            status: AppointmentStatus::Booked,
            starts_at: Some(utc("2026-03-05T04:00:00Z")),
            duration_minutes: Some(20),
            clinician: Some("Dr Priya Rao".into()),
            department: Some("Cardiology follow-up".into()),
        }
    );
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert_eq!(r.location_of(fields::STARTS_AT), Some(Location::field("TQ1", 7)));
    assert_eq!(r.location_of(fields::DURATION_MINUTES), Some(Location::field("TQ1", 8)));
    assert_eq!(r.location_of(fields::APPOINTMENT_ID), Some(Location::field("SCH", 2)));
}

#[test]
fn a_reschedule_with_crlf_segments_in_another_order_reads_the_new_time() {
    // PID before SCH, AIL before AIS, no TQ1: SCH-11 carries the new time, with an offset.
    let text = [
        "MSH|^~\\&|CERNER|NORTH|CARELINE|NET|20260302100000+0100||SIU^S13|MSG00002|P|2.3",
        "PID|1||MRN-5^^^NORTH^MR||Weber^J\\XC3BC\\rgen||19700101|M|||||+49 151 23456789^PRN^CP||ger",
        "AIL|1||north-clinic^^^NORTH",
        "SCH||FL-90^CERNER|||||||||^^^202603101415^202603101500||||||||||||||Booked",
        "AIS|1||GP^General practice",
        "",
    ]
    .join("\r\n");
    let r = read(&text);
    assert_eq!(r.trigger, Trigger::S13);
    assert_eq!(r.facility_id.as_deref(), Some("north-clinic"));
    assert_eq!(r.version, Some(utc("2026-03-02T09:00:00Z").timestamp_millis()));
    assert_eq!(r.patient.first_name.as_deref(), Some("Jürgen"));
    assert_eq!(r.patient.phone.as_deref(), Some("+4915123456789"));
    assert_eq!(r.patient.language.as_deref(), Some("de"));
    assert_eq!(r.appointment.appointment_id.as_deref(), Some("FL-90"));
    // Europe/Berlin, winter time: 14:15 local is 13:15 UTC.
    assert_eq!(r.appointment.starts_at, Some(utc("2026-03-10T13:15:00Z")));
    assert_eq!(r.appointment.duration_minutes, Some(45));
    assert_eq!(r.appointment.department.as_deref(), Some("General practice"));
    assert_eq!(r.appointment.status, AppointmentStatus::Booked);
    assert!(errors(&r).is_empty(), "{:?}", r.issues);
}

#[test]
fn a_modification_with_only_the_required_fields_uses_defaults_and_warns_about_the_phone() {
    let text = concat!(
        "MSH|^~\\&|HIS|city-general|||20260303080000||SIU^S14|MSG00003\n",
        "SCH|PL-1||||||||30||^^^202603201000\n",
        "PID|1||P-2001\n",
    );
    let r = read(text);
    assert_eq!(r.facility_id.as_deref(), Some("city-general"), "MSH-4 names the facility");
    assert_eq!(r.appointment.appointment_id.as_deref(), Some("PL-1"), "placer id when no filler id");
    assert_eq!(r.location_of(fields::APPOINTMENT_ID), Some(Location::field("SCH", 1)));
    assert_eq!(r.appointment.duration_minutes, Some(30), "SCH-9 in minutes by default");
    assert_eq!(r.appointment.clinician, None);
    assert_eq!(r.appointment.department, None);
    assert_eq!(r.patient.patient_id.as_deref(), Some("P-2001"));
    assert_eq!(r.patient.first_name, None);
    assert_eq!(r.patient.phone, None);
    assert_eq!(r.patient.language.as_deref(), Some("en"), "the network's default language");
    assert!(!r.has_errors());
    assert_eq!(r.issues.len(), 1);
    assert_eq!(r.issues[0].severity, Severity::Warning);
    assert_eq!(r.issues[0].location, Some(Location::field("PID", 13)));
}

#[test]
fn a_cancellation_is_cancelled_whatever_sch_25_says_and_escapes_are_resolved() {
    let text = concat!(
        "MSH|^~\\&|EPIC|CITYGEN|CARELINE|CARELINE|20260304120000||SIU^S15^SIU_S12|MSG00004|P|2.5\r",
        "SCH||FL-77^EPIC|||||||||^^^202603050930||||||||||||||Booked\r",
        "PID|1||P-1001^^^CITYGEN^MR||Sharma^Asha||||||||^PRN^CP^^91^98123^45678\r",
        "AIS|1|D|CARD^Cardiology \\T\\ Vascular\\.br\\Block B\r",
        "AIL|1|D|city-general\r",
        "AIP|1|D|^O\\S\\Brien^Mary\r",
    );
    let r = read(text);
    assert_eq!(r.appointment.status, AppointmentStatus::Cancelled);
    assert_eq!(r.appointment.department.as_deref(), Some("Cardiology & Vascular\nBlock B"));
    assert_eq!(r.appointment.clinician.as_deref(), Some("Mary O^Brien"));
    assert_eq!(r.appointment.duration_minutes, None);
}

#[test]
fn deletion_and_no_show_also_end_the_appointment() {
    for trigger in ["S17", "S26"] {
        let text = format!(
            "MSH|^~\\&|HIS|city-general|||20260304120000||SIU^{trigger}|M-{trigger}\rSCH|A1|A1|||||||||^^^202603050930\rPID|1||P1"
        );
        let r = read(&text);
        assert_eq!(r.trigger.as_str(), trigger);
        assert_eq!(r.appointment.status, AppointmentStatus::Cancelled, "{trigger}");
    }
}

#[test]
fn a_filler_status_that_is_not_booked_means_cancelled() {
    let with_status = |status: &str| {
        read(&format!(
            "MSH|^~\\&|HIS|city-general|||20260304120000||SIU^S14|M1\rSCH|A1|A1|||||||||^^^202603050930||||||||||||||{status}\rPID|1||P1"
        ))
        .appointment
        .status
    };
    for status in ["Cancelled", "Noshow", "Deleted", "Complete", "DC", "Pending", "Waitlist", "^No Show"] {
        assert_eq!(with_status(status), AppointmentStatus::Cancelled, "{status}");
    }
    for status in ["Booked", "Overbook", "Started", "", "Whatever"] {
        assert_eq!(with_status(status), AppointmentStatus::Booked, "{status}");
    }
}

#[test]
fn unreadable_values_are_errors_that_name_their_field() {
    let text = concat!(
        "MSH|^~\\&|HIS|city-general|||2026-03-04||SIU^S12|M1\r",
        "SCH|A1|||||||||fortnights|^^^20260305\r",
        "PID|1||P1\r",
    );
    let r = read(text);
    assert_eq!(errors(&r), ["MSH-7", "SCH-11.4"]);
    assert_eq!(r.version, None);
    assert_eq!(r.appointment.starts_at, None);
    assert!(r.issues.iter().all(|i| !i.text.contains("2026")), "no values in the texts: {:?}", r.issues);
}

#[test]
fn a_missing_schedule_or_several_patients_are_segment_errors() {
    let r = read("MSH|^~\\&|HIS|city-general|||20260304120000||SIU^S12|M1\rPID|1||P1\rPID|2||P2");
    assert_eq!(errors(&r), ["SCH", "PID"]);
    assert_eq!(r.patient.patient_id, None);
}

#[test]
fn the_facility_comes_from_ail_when_configured_else_from_msh_4() {
    let ail = |value: &str| {
        let m = Message::parse(format!("MSH|^~\\&|HIS|SENDER\rAIL|1||{value}").as_bytes()).unwrap();
        facility_of(&m, &network()).0
    };
    assert_eq!(ail("north-clinic^Room 1").as_deref(), Some("north-clinic"));
    assert_eq!(ail("OPD^Room 1^^north-clinic").as_deref(), Some("north-clinic"));
    assert_eq!(ail("unknown-ward").as_deref(), Some("SENDER"));
}

#[test]
fn the_mobile_number_is_chosen_by_use_and_equipment_then_by_number_type() {
    let pick = |xtn: &str| {
        let m = Message::parse(format!("MSH|^~\\&|A\rPID|1||1||||||||||{xtn}").as_bytes()).unwrap();
        choose_mobile(m.segment("PID").unwrap().field(13)).map(|p| p.e164().to_owned())
    };
    // PRN on a cellular phone wins even when listed last.
    assert_eq!(
        pick("+912223456789^PRN^PH~+919812345678^WPN^CP~+919812300000^PRN^CP").as_deref(),
        Some("+919812300000")
    );
    // Otherwise the first mobile number: the landline is skipped.
    assert_eq!(pick("+912223456789^PRN^PH~+919812345678^WPN^PH").as_deref(), Some("+919812345678"));
    // XTN-5/6/7, XTN-12 and the 00 international prefix are read.
    assert_eq!(pick("^PRN^CP^^91^98123^45678").as_deref(), Some("+919812345678"));
    assert_eq!(pick("^PRN^CP^^^^^^^^^+919812345678").as_deref(), Some("+919812345678"));
    assert_eq!(pick("00919812345678X12^PRN^CP").as_deref(), Some("+919812345678"));
    // No country code, a fax, an e-mail address: nothing to message.
    assert_eq!(pick("9812345678^PRN^CP"), None);
    assert_eq!(pick("+919812345678^PRN^FX"), None);
    assert_eq!(pick("^NET^Internet^asha@example.org"), None);
}

#[test]
fn languages_are_normalised_to_iso_639_1() {
    assert_eq!(language_tag("ENG"), "en");
    assert_eq!(language_tag("Hindi"), "hi");
    assert_eq!(language_tag("pt_BR"), "pt-BR");
    assert_eq!(language_tag("EN-in"), "en-in");
    assert_eq!(language_tag("xx"), "xx");
}

#[test]
fn durations_are_read_in_their_units() {
    assert_eq!(minutes_of("20", None), Some(20));
    assert_eq!(minutes_of("1.5", Some("h")), Some(90));
    assert_eq!(minutes_of("90", Some("s")), Some(2));
    assert_eq!(minutes_of("20", Some("fortnights")), None);
    assert_eq!(minutes_of("NaN", None), None);
    assert_eq!(coded_duration("M20"), Some(20));
    assert_eq!(coded_duration("H2"), Some(120));
    assert_eq!(coded_duration("45"), Some(45));
    assert_eq!(coded_duration("X2"), None);
}

#[test]
fn the_header_check_rejects_other_messages_triggers_versions_and_processing_ids() {
    let check = |msh: &str, processing: Option<&str>| {
        let m = Message::parse(msh.as_bytes()).unwrap();
        check_header(&m, processing).map_err(|i| (i.code, i.location.map(|l| l.to_string())))
    };
    assert_eq!(check("MSH|^~\\&|A||||||SIU^S12|1|P|2.5", Some("P")), Ok(Trigger::S12));
    assert_eq!(check("MSH|^~\\&|A||||||siu^s26|1|P|2.5", Some("P")), Ok(Trigger::S26));
    assert_eq!(
        check("MSH|^~\\&|A||||||ADT^A01|1|P|2.5", None),
        Err((ErrorCode::UnsupportedMessageType, Some("MSH-9.1".into())))
    );
    assert_eq!(
        check("MSH|^~\\&|A||||||SIU^S16|1|P|2.5", None),
        Err((ErrorCode::UnsupportedEventCode, Some("MSH-9.2".into())))
    );
    assert_eq!(
        check("MSH|^~\\&|A||||||SIU^S12|1|P|3.0", None),
        Err((ErrorCode::UnsupportedVersionId, Some("MSH-12".into())))
    );
    assert_eq!(
        check("MSH|^~\\&|A||||||SIU^S12|1|T|2.5", Some("P")),
        Err((ErrorCode::UnsupportedProcessingId, Some("MSH-11".into())))
    );
    assert_eq!(check("MSH|^~\\&|A||||||SIU^S12|1|T|2.5", None), Ok(Trigger::S12));
}

#[test]
fn z_segments_and_unknown_segments_change_nothing() {
    let without = read(&S12.replace("ZCL|1|loyalty^gold|anything\\F\\here\r", ""));
    let with_more = read(&format!("{S12}ZXX|1|2\rOBX|1|TX|note||text\r"));
    assert_eq!(without.patient, read(S12).patient);
    assert_eq!(without.appointment, read(S12).appointment);
    assert_eq!(with_more.appointment, read(S12).appointment);
}

#[test]
fn an_unreadable_timing_duration_is_a_warning_and_sch_9_is_used_instead() {
    let r = read(
        "MSH|^~\\&|HIS|city-general|||20260304120000||SIU^S12|M1\rSCH|A1||||||||30|min|^^soon^202603050930\rPID|1||P1",
    );
    assert_eq!(r.appointment.duration_minutes, Some(30));
    assert!(!r.has_errors(), "{:?}", r.issues);
    assert!(r.issues.iter().any(|i| i.location == Some(Location::component("SCH", 11, 3))));
}
