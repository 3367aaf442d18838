//! Acknowledgements: what Careline answers to every message it receives.
//!
//! Original mode (MSH-15 and MSH-16 both empty): `AA` accepted, `AE` error (the message was
//! understood but cannot be applied as sent, or could not be stored right now: see ERR-3),
//! `AR` rejected (not a message Careline takes: wrong type, trigger, processing id, version,
//! or a source not allowed for the facility).
//!
//! Enhanced mode (either field valued): the same decisions as commit acknowledgements `CA`,
//! `CE`, `CR`, sent when MSH-15 asks for them (`AL` or empty: always, `ER`: only on error,
//! `SU`: only on success, `NE`: never). Careline sends its answer only after the broker has
//! confirmed the resulting events, so the commit acknowledgement already means "applied";
//! no separate application acknowledgement follows.
//!
//! The ACK's MSH swaps sender and receiver (MSH-3/4 ↔ MSH-5/6), echoes the trigger, the
//! processing id and the version, and MSA-2 echoes the message's control id (MSH-10).
//! Each problem becomes one ERR segment with its location (ERR-2, and ERR-1 for v2.3/2.4
//! receivers), the HL7 error code (ERR-3, table 0357), the severity (ERR-4) and a short
//! explanation (ERR-8). Explanations name fields, never values: no PHI leaves in an ACK.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::datetime::format_utc;
use crate::message::{Delimiters, Location, Message, escape, reencode};

/// HL7 table 0357 (message error condition codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    ApplicationInternalError,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            Self::SegmentSequenceError => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataTypeError => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::UnsupportedProcessingId => 202,
            Self::UnsupportedVersionId => 203,
            Self::ApplicationInternalError => 207,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::SegmentSequenceError => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataTypeError => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::ApplicationInternalError => "Application internal error",
        }
    }
}

/// ERR-4: how bad a problem is. Warnings accompany an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Self::Error => "E",
            Self::Warning => "W",
        }
    }
}

/// One problem with a message, reported in an ERR segment. `text` must name fields only,
/// never carry values from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: ErrorCode,
    pub location: Option<Location>,
    pub text: String,
}

impl Issue {
    pub fn error(code: ErrorCode, location: Option<Location>, text: impl Into<String>) -> Self {
        Self { severity: Severity::Error, code, location, text: text.into() }
    }

    pub fn warning(code: ErrorCode, location: Option<Location>, text: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, code, location, text: text.into() }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The decision an acknowledgement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA / CA: the events are confirmed by the broker.
    Accept,
    /// AE / CE: not applied; fix the message (ERR says what) or, for ERR-3 207, re-send.
    Error,
    /// AR / CR: not a message Careline takes; re-sending will not help.
    Reject,
}

/// When the sender asked to be answered (MSH-15 in enhanced mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    Always,
    Never,
    OnError,
    OnSuccess,
}

/// Original or enhanced acknowledgement, as the message's MSH-15/MSH-16 ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Original,
    Enhanced(AckCondition),
}

impl AckMode {
    /// Reads MSH-15 (accept acknowledgement type) and MSH-16 (application acknowledgement type).
    pub fn of(message: &Message) -> Self {
        let msh = message.header();
        let accept = msh.field(15).value().map(|v| v.to_ascii_uppercase());
        let application = msh.field(16).value();
        if accept.is_none() && application.is_none() {
            return Self::Original;
        }
        Self::Enhanced(match accept.as_deref() {
            Some("NE") => AckCondition::Never,
            Some("ER") => AckCondition::OnError,
            Some("SU") => AckCondition::OnSuccess,
            _ => AckCondition::Always,
        })
    }

    /// The MSA-1 code for a decision.
    pub fn code(self, decision: AckCode) -> &'static str {
        match (self, decision) {
            (Self::Original, AckCode::Accept) => "AA",
            (Self::Original, AckCode::Error) => "AE",
            (Self::Original, AckCode::Reject) => "AR",
            (Self::Enhanced(_), AckCode::Accept) => "CA",
            (Self::Enhanced(_), AckCode::Error) => "CE",
            (Self::Enhanced(_), AckCode::Reject) => "CR",
        }
    }

    /// Whether an acknowledgement is sent at all for this decision.
    pub fn answers(self, decision: AckCode) -> bool {
        match self {
            Self::Original | Self::Enhanced(AckCondition::Always) => true,
            Self::Enhanced(AckCondition::Never) => false,
            Self::Enhanced(AckCondition::OnError) => decision != AckCode::Accept,
            Self::Enhanced(AckCondition::OnSuccess) => decision == AckCode::Accept,
        }
    }
}

/// Who Careline says it is when the message names no receiver (MSH-5 empty).
pub const DEFAULT_APPLICATION: &str = "CARELINE";
/// The version written when the message's own (MSH-12) cannot be read.
pub const DEFAULT_VERSION: &str = "2.5.1";

/// An acknowledgement to build. `request` is `None` when the frame was not an HL7 message.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    pub request: Option<&'a Message>,
    pub decision: AckCode,
    pub issues: &'a [Issue],
    /// MSA-3, a short text for engines that show only that (errors only; no PHI).
    pub text: Option<&'a str>,
    /// The ACK's own MSH-10.
    pub control_id: &'a str,
    pub now: DateTime<Utc>,
}

impl Ack<'_> {
    /// The acknowledgement's mode (original unless the request asks for enhanced).
    pub fn mode(&self) -> AckMode {
        self.request.map_or(AckMode::Original, AckMode::of)
    }

    /// The ACK message (segments ended by CR), or `None` when the sender asked not to be
    /// answered in this case (enhanced mode, MSH-15 `NE`/`ER`/`SU`).
    pub fn to_hl7(&self) -> Option<String> {
        let mode = self.mode();
        if !mode.answers(self.decision) {
            return None;
        }
        let d = Delimiters::default();
        let mut out = String::new();
        let echo = |n: usize| self.request.map(|m| reencode(m.header().field(n), &d)).unwrap_or_default();
        let value = |n: usize| self.request.and_then(|m| m.header().field(n).value());
        let receiver = echo(5);
        let sending_application = if receiver.is_empty() { DEFAULT_APPLICATION.to_owned() } else { receiver };
        let trigger = self.request.and_then(|m| m.header().field(9).component(2));
        let message_type = match trigger {
            Some(t) => format!("ACK{c}{}{c}ACK", escape(&t, &d), c = d.component),
            None => "ACK".to_owned(),
        };
        let processing_id = self.request.map(|m| reencode(m.header().field(11), &d)).filter(|p| !p.is_empty());
        let version = value(12).map(|v| escape(&v, &d)).unwrap_or_else(|| DEFAULT_VERSION.to_owned());
        let f = d.field;
        let _ = write!(
            out,
            "MSH{f}{enc}{f}{app}{f}{fac}{f}{to_app}{f}{to_fac}{f}{now}{f}{f}{message_type}{f}{control}{f}{pid}{f}{version}\r",
            enc = d.encoding_characters(),
            app = sending_application,
            fac = echo(6),
            to_app = echo(3),
            to_fac = echo(4),
            now = format_utc(self.now),
            control = escape(self.control_id, &d),
            pid = processing_id.unwrap_or_else(|| "P".to_owned()),
        );
        let original_control_id = value(10).map(|v| escape(&v, &d)).unwrap_or_default();
        let _ = write!(out, "MSA{f}{}{f}{original_control_id}", mode.code(self.decision));
        if let Some(text) = self.text {
            let _ = write!(out, "{f}{}", escape(&bounded(text, 80), &d));
        }
        out.push('\r');
        for issue in self.issues {
            out.push_str(&err_segment(issue, &d));
        }
        Some(out)
    }
}

fn err_segment(issue: &Issue, d: &Delimiters) -> String {
    let (f, c, s) = (d.field, d.component, d.subcomponent);
    let code = issue.code.code();
    let code_text = issue.code.text();
    // ERR-1 (v2.3/2.4 receivers): segment^sequence^field^code&text&table.
    // ERR-2 (v2.5+): segment^sequence^field^repetition^component.
    let (eld, erl) = match issue.location {
        Some(l) if l.field > 0 => (
            format!("{seg}{c}1{c}{field}{c}{code}{s}{code_text}{s}HL70357", seg = l.segment, field = l.field),
            format!(
                "{seg}{c}1{c}{field}{c}{c}{component}",
                seg = l.segment,
                field = l.field,
                component = l.component.map(|n| n.to_string()).unwrap_or_default()
            )
            .trim_end_matches(c)
            .to_owned(),
        ),
        Some(l) => {
            (format!("{seg}{c}1{c}{c}{code}{s}{code_text}{s}HL70357", seg = l.segment), format!("{}{c}1", l.segment))
        }
        None => (format!("{c}{c}{c}{code}{s}{code_text}{s}HL70357"), String::new()),
    };
    let message = match issue.location {
        Some(l) => format!("{l}: {}", issue.text),
        None => issue.text.clone(),
    };
    format!(
        "ERR{f}{eld}{f}{erl}{f}{code}{c}{code_text}{c}HL70357{f}{severity}{f}{f}{f}{f}{message}\r",
        severity = issue.severity.code(),
        message = escape(&bounded(&message, 250), d),
    )
}

fn bounded(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-01T04:00:00Z".parse().unwrap()
    }

    const REQUEST: &str = "MSH|^~\\&|EPIC|CITY^1.2.3^ISO|CARELINE|NET|20260301093000||SIU^S12^SIU_S12|CTRL-1|P|2.5.1";

    fn segments(ack: &str) -> Vec<Vec<String>> {
        let m = Message::parse(ack.as_bytes()).unwrap();
        m.segments()
            .iter()
            .map(|s| {
                std::iter::once(s.id().to_owned())
                    .chain((1..=s.field_count()).map(|n| s.field(n).raw().to_owned()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn an_accept_swaps_sender_and_receiver_and_echoes_the_control_id() {
        let request = Message::parse(REQUEST.as_bytes()).unwrap();
        let ack = Ack {
            request: Some(&request),
            decision: AckCode::Accept,
            issues: &[],
            text: None,
            control_id: "ACK-9",
            now: now(),
        }
        .to_hl7()
        .unwrap();
        assert_eq!(
            ack,
            "MSH|^~\\&|CARELINE|NET|EPIC|CITY^1.2.3^ISO|20260301040000+0000||ACK^S12^ACK|ACK-9|P|2.5.1\rMSA|AA|CTRL-1\r"
        );
    }

    #[test]
    fn errors_carry_one_err_segment_per_issue_with_location_code_and_severity() {
        let request = Message::parse(REQUEST.as_bytes()).unwrap();
        let issues = [
            Issue::error(ErrorCode::DataTypeError, Some(Location::component("SCH", 11, 4)), "not a date/time"),
            Issue::warning(ErrorCode::RequiredFieldMissing, Some(Location::field("PID", 13)), "no mobile number"),
            Issue::error(ErrorCode::SegmentSequenceError, Some(Location::segment("PID")), "several patients"),
        ];
        let ack = Ack {
            request: Some(&request),
            decision: AckCode::Error,
            issues: &issues,
            text: Some("the message has errors"),
            control_id: "ACK-9",
            now: now(),
        }
        .to_hl7()
        .unwrap();
        let segs = segments(&ack);
        assert_eq!(segs[1][1..], ["AE", "CTRL-1", "the message has errors"]);
        assert_eq!(segs[2][0], "ERR");
        assert_eq!(segs[2][1], "SCH^1^11^102&Data type error&HL70357");
        assert_eq!(segs[2][2], "SCH^1^11^^4");
        assert_eq!(segs[2][3], "102^Data type error^HL70357");
        assert_eq!(segs[2][4], "E");
        assert_eq!(segs[2][8], "SCH-11.4: not a date/time");
        assert_eq!(segs[3][2], "PID^1^13");
        assert_eq!(segs[3][4], "W");
        assert_eq!(segs[4][2], "PID^1");
    }

    #[test]
    fn enhanced_mode_answers_with_commit_codes_when_asked() {
        let with = |accept: &str, app: &str| {
            let text = format!("{REQUEST}|||{accept}|{app}");
            Message::parse(text.as_bytes()).unwrap()
        };
        let answer = |m: &Message, decision| {
            Ack { request: Some(m), decision, issues: &[], text: None, control_id: "A", now: now() }
                .to_hl7()
                .map(|a| segments(&a)[1][1].clone())
        };
        assert_eq!(answer(&with("AL", "NE"), AckCode::Accept).as_deref(), Some("CA"));
        assert_eq!(answer(&with("", "AL"), AckCode::Error).as_deref(), Some("CE"));
        assert_eq!(answer(&with("ER", ""), AckCode::Accept), None);
        assert_eq!(answer(&with("ER", ""), AckCode::Reject).as_deref(), Some("CR"));
        assert_eq!(answer(&with("SU", ""), AckCode::Error), None);
        assert_eq!(answer(&with("NE", "NE"), AckCode::Accept), None);
        assert_eq!(answer(&with("", ""), AckCode::Reject).as_deref(), Some("AR"));
    }

    #[test]
    fn a_frame_that_was_not_hl7_still_gets_a_reject() {
        let issues = [Issue::error(ErrorCode::SegmentSequenceError, Some(Location::segment("MSH")), "no MSH")];
        let ack =
            Ack { request: None, decision: AckCode::Reject, issues: &issues, text: None, control_id: "A1", now: now() }
                .to_hl7()
                .unwrap();
        let segs = segments(&ack);
        assert_eq!(segs[0][3], "CARELINE");
        assert_eq!(segs[0][9], "ACK");
        assert_eq!(segs[1][1..], ["AR", ""]);
    }

    #[test]
    fn echoed_values_are_escaped_into_careline_delimiters() {
        let request = Message::parse(b"MSH#$*/%#A^B#F#CARE#NET#2026##SIU$S12#C|1#P#2.4").unwrap();
        let ack = Ack {
            request: Some(&request),
            decision: AckCode::Accept,
            issues: &[],
            text: None,
            control_id: "A",
            now: now(),
        }
        .to_hl7()
        .unwrap();
        let segs = segments(&ack);
        assert_eq!(segs[0][5], "A\\S\\B");
        assert_eq!(segs[1][2], "C\\F\\1");
        assert_eq!(segs[0][12], "2.4");
    }
}
