//! HL7 v2 messages: segments, fields, repetitions, components, subcomponents, escapes.
//!
//! The separators are the ones the message declares in MSH-1 and MSH-2 (`|` and `^~\&` by
//! convention, but any distinct punctuation is honoured), so values are split on the sender's
//! own delimiters and only then unescaped: `\F\ \S\ \T\ \R\ \E\` give back the delimiters,
//! `\Xhh..\` hex bytes, `\.br\` a line break; formatting escapes (`\H\`, `\N\`, `\.sp\`, …)
//! are dropped and unknown ones kept as written.
//!
//! Parsing is tolerant where tolerance cannot change the meaning: segments may end in CR,
//! CRLF or LF; blank lines are skipped; a line that does not start with a segment id is
//! skipped and counted ([`Message::skipped_lines`]); fields beyond a segment's end are simply
//! empty. Text is UTF-8 unless MSH-18 declares ISO 8859 or the bytes are not UTF-8, in which
//! case Latin-1 is assumed (every byte is a character, so decoding never fails).
//!
//! Field numbers follow the standard: `segment.field(3)` of `PID` is PID-3. For MSH, MSH-1 is
//! the field separator itself and MSH-2 the encoding characters, so `MSH-10` is
//! `msh.field(10)` as the specification counts it. Components and subcomponents are 1-based.

use std::fmt;

/// The separators a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    /// Absent when MSH-2 declares none: no escape sequences are then recognised.
    pub escape: Option<char>,
    pub subcomponent: char,
}

impl Default for Delimiters {
    /// `|^~\&`, what nearly every system sends and what Careline answers with.
    fn default() -> Self {
        Self { field: '|', component: '^', repetition: '~', escape: Some('\\'), subcomponent: '&' }
    }
}

impl Delimiters {
    /// MSH-2 as written for these delimiters.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::new();
        s.push(self.component);
        s.push(self.repetition);
        if let Some(e) = self.escape {
            s.push(e);
        }
        s.push(self.subcomponent);
        s
    }

    fn all(&self) -> impl Iterator<Item = char> {
        [Some(self.field), Some(self.component), Some(self.repetition), self.escape, Some(self.subcomponent)]
            .into_iter()
            .flatten()
    }
}

/// Why bytes are not an HL7 v2 message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message does not start with an MSH segment")]
    NoHeader,
    #[error("MSH-1/MSH-2 do not declare usable delimiters: {0}")]
    Delimiters(&'static str),
}

/// One parsed message. Cheap to query; values are unescaped when read.
#[derive(Debug, Clone)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
    skipped_lines: usize,
}

/// One segment: its id and its raw fields, numbered as the standard numbers them.
#[derive(Debug, Clone)]
pub struct Segment {
    id: String,
    /// `fields[n]` is field n; `fields[0]` is the id. For MSH, `fields[1]` is the separator.
    fields: Vec<String>,
    delimiters: Delimiters,
}

impl Message {
    /// Parses a message (the payload of one MLLP frame).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let text = decode_text(bytes);
        let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
        let header = lines.next().ok_or(ParseError::Empty)?;
        let delimiters = read_delimiters(header)?;
        let mut segments = vec![Segment::header(header, delimiters)];
        let mut skipped_lines = 0;
        for line in lines {
            match Segment::parse(line, delimiters) {
                Some(segment) => segments.push(segment),
                None => skipped_lines += 1,
            }
        }
        Ok(Self { delimiters, segments, skipped_lines })
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The MSH segment (always present).
    pub fn header(&self) -> &Segment {
        &self.segments[0]
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Every segment with this id, in message order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// The first segment with this id, wherever it is.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Lines that were not segments (no valid segment id) and were skipped.
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }
}

/// UTF-8 unless MSH-18 says ISO 8859 or the bytes are not UTF-8; then Latin-1.
fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let latin1 = || bytes.iter().map(|&b| char::from(b)).collect::<String>();
    // MSH is ASCII in every character set HL7 allows, so reading it as Latin-1 is safe.
    let head: String = bytes.iter().take_while(|&&b| b != b'\r' && b != b'\n').map(|&b| char::from(b)).collect();
    let declares_8859 =
        read_delimiters(&head).is_ok_and(|d| Segment::header(&head, d).field(18).raw().contains("8859"));
    if declares_8859 {
        return latin1();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => latin1(),
    }
}

fn read_delimiters(header: &str) -> Result<Delimiters, ParseError> {
    let mut chars = header.chars();
    if chars.by_ref().take(3).collect::<String>() != "MSH" {
        return Err(ParseError::NoHeader);
    }
    let field = chars.next().ok_or(ParseError::Delimiters("MSH-1 is missing"))?;
    let encoding: Vec<char> = chars.take_while(|&c| c != field).take(5).collect();
    let defaults = Delimiters::default();
    let d = Delimiters {
        field,
        component: *encoding.first().ok_or(ParseError::Delimiters("MSH-2 is empty"))?,
        repetition: encoding.get(1).copied().unwrap_or(defaults.repetition),
        escape: if encoding.len() >= 3 { Some(encoding[2]) } else { defaults.escape },
        subcomponent: encoding.get(3).copied().unwrap_or(defaults.subcomponent),
    };
    let all: Vec<char> = d.all().collect();
    if all.iter().any(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_control()) {
        return Err(ParseError::Delimiters("a delimiter is a letter, digit, space or control character"));
    }
    for (i, c) in all.iter().enumerate() {
        if all[i + 1..].contains(c) {
            return Err(ParseError::Delimiters("two delimiters are the same character"));
        }
    }
    Ok(d)
}

impl Segment {
    fn header(line: &str, delimiters: Delimiters) -> Self {
        // "MSH|^~\&|APP|..." splits into ["MSH", "^~\&", "APP", ...]; MSH-1 is the separator.
        let mut fields: Vec<String> = line.split(delimiters.field).map(str::to_owned).collect();
        fields.insert(1, delimiters.field.to_string());
        Self { id: "MSH".to_owned(), fields, delimiters }
    }

    /// A segment line, or `None` when it does not start with a segment id.
    fn parse(line: &str, delimiters: Delimiters) -> Option<Self> {
        let mut fields = line.split(delimiters.field);
        let id = fields.next()?;
        let valid_id = id.len() == 3
            && id.starts_with(|c: char| c.is_ascii_uppercase())
            && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !valid_id {
            return None;
        }
        if id == "MSH" {
            // A second header (batched messages) is not a segment of this message.
            return None;
        }
        let fields = std::iter::once(id).chain(fields).map(str::to_owned).collect();
        Some(Self { id: id.to_owned(), fields, delimiters })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Field `n` (1-based, as the standard numbers it); empty when the segment is shorter.
    pub fn field(&self, n: usize) -> Field<'_> {
        let raw = if n == 0 { "" } else { self.fields.get(n).map_or("", String::as_str) };
        // MSH-1 and MSH-2 hold delimiters: never split or unescape them.
        let literal = self.id == "MSH" && n <= 2;
        Field { raw, delimiters: &self.delimiters, literal }
    }

    /// How many fields the segment carries.
    pub fn field_count(&self) -> usize {
        self.fields.len().saturating_sub(1)
    }
}

/// One field, possibly repeated.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    delimiters: &'a Delimiters,
    literal: bool,
}

impl<'a> Field<'a> {
    /// The field as written, escapes and delimiters included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.trim().is_empty()
    }

    /// Each repetition (one when the field does not repeat; none when it is empty).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let delimiters = self.delimiters;
        let pieces: Box<dyn Iterator<Item = &'a str>> = if self.raw.is_empty() {
            Box::new(std::iter::empty())
        } else if self.literal {
            Box::new(std::iter::once(self.raw))
        } else {
            Box::new(self.raw.split(delimiters.repetition))
        };
        let literal = self.literal;
        pieces.map(move |raw| Repetition { raw, delimiters, literal })
    }

    /// The first repetition (empty when the field is empty).
    pub fn first(&self) -> Repetition<'a> {
        self.repetitions().next().unwrap_or(Repetition { raw: "", delimiters: self.delimiters, literal: self.literal })
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Option<String> {
        self.first().component(n)
    }

    /// The first component of the first repetition: the field's value for simple types.
    pub fn value(&self) -> Option<String> {
        self.first().component(1)
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a str,
    delimiters: &'a Delimiters,
    literal: bool,
}

impl<'a> Repetition<'a> {
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Component `n` (1-based), raw.
    pub fn component_raw(&self, n: usize) -> &'a str {
        if n == 0 {
            return "";
        }
        if self.literal {
            return if n == 1 { self.raw } else { "" };
        }
        self.raw.split(self.delimiters.component).nth(n - 1).unwrap_or("")
    }

    /// Component `n`'s first subcomponent, unescaped and trimmed; `None` when empty or the
    /// HL7 null `""`.
    pub fn component(&self, n: usize) -> Option<String> {
        self.subcomponent(n, 1)
    }

    /// Subcomponent `s` of component `n`, unescaped and trimmed; `None` when empty.
    pub fn subcomponent(&self, n: usize, s: usize) -> Option<String> {
        let component = self.component_raw(n);
        let raw = if self.literal {
            if s == 1 { component } else { "" }
        } else if s == 0 {
            ""
        } else {
            component.split(self.delimiters.subcomponent).nth(s - 1).unwrap_or("")
        };
        let value = if self.literal { raw.to_owned() } else { unescape(raw, self.delimiters) };
        let value = value.trim();
        (!value.is_empty() && value != "\"\"").then(|| value.to_owned())
    }

    /// How many components the repetition carries.
    pub fn component_count(&self) -> usize {
        if self.raw.is_empty() { 0 } else { self.raw.split(self.delimiters.component).count() }
    }
}

/// Resolves escape sequences in one leaf value (already split on the delimiters).
pub fn unescape(raw: &str, d: &Delimiters) -> String {
    let Some(esc) = d.escape else { return raw.to_owned() };
    if !raw.contains(esc) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            // Unterminated: keep the escape character and the rest as written.
            out.push_str(&rest[start..]);
            return out;
        };
        let sequence = &after[..end];
        match expand_escape(sequence, d) {
            Some(text) => out.push_str(&text),
            None => {
                // Unknown: keep it as written rather than guess.
                out.push(esc);
                out.push_str(sequence);
                out.push(esc);
            }
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// What an escape sequence (without its escape characters) stands for; `None` if unknown.
fn expand_escape(sequence: &str, d: &Delimiters) -> Option<String> {
    let one = |c: char| Some(c.to_string());
    match sequence {
        "F" => one(d.field),
        "S" => one(d.component),
        "T" => one(d.subcomponent),
        "R" => one(d.repetition),
        "E" => d.escape.and_then(one),
        ".br" => one('\n'),
        s if s.starts_with(".sp") => one('\n'),
        // Highlighting and layout carry no text of their own.
        "H" | "N" | ".fi" | ".nf" | ".ce" => Some(String::new()),
        s if s.starts_with(".in") || s.starts_with(".ti") || s.starts_with(".sk") => Some(String::new()),
        s if s.starts_with('X') => decode_hex(&s[1..]),
        // Character-set switches and locally defined escapes: nothing to show.
        s if (s.starts_with('C') || s.starts_with('M') || s.starts_with('Z')) && s.len() > 1 => Some(String::new()),
        _ => None,
    }
}

/// `\Xhhhh\`: hex bytes, read as UTF-8 when they are, else Latin-1.
fn decode_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect::<Result<_, _>>().ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

/// Escapes a value so it can be written into a field with these delimiters. Line breaks
/// become `\.br\`; other control characters are dropped.
pub fn escape(value: &str, d: &Delimiters) -> String {
    let esc = d.escape.unwrap_or('\\');
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        let code = match c {
            c if c == esc => Some("E"),
            c if c == d.field => Some("F"),
            c if c == d.component => Some("S"),
            c if c == d.subcomponent => Some("T"),
            c if c == d.repetition => Some("R"),
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                Some(".br")
            }
            c if c.is_control() => continue,
            _ => None,
        };
        match code {
            Some(code) => {
                out.push(esc);
                out.push_str(code);
                out.push(esc);
            }
            None => out.push(c),
        }
    }
    out
}

/// Re-writes a whole field (repetitions, components, subcomponents) from the sender's
/// delimiters into `to`, so a value can be echoed in a message Careline writes.
pub fn reencode(field: Field<'_>, to: &Delimiters) -> String {
    if field.literal {
        return escape(field.raw, to);
    }
    let from = field.delimiters;
    field
        .raw
        .split(from.repetition)
        .map(|rep| {
            rep.split(from.component)
                .map(|comp| {
                    comp.split(from.subcomponent)
                        .map(|sub| escape(&unescape(sub, from), to))
                        .collect::<Vec<_>>()
                        .join(&to.subcomponent.to_string())
                })
                .collect::<Vec<_>>()
                .join(&to.component.to_string())
        })
        .collect::<Vec<_>>()
        .join(&to.repetition.to_string())
}

/// Where in a message a value sits: `PID-13`, `SCH-11.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: &'static str,
    pub field: u16,
    pub component: Option<u16>,
}

impl Location {
    pub const fn field(segment: &'static str, field: u16) -> Self {
        Self { segment, field, component: None }
    }

    pub const fn component(segment: &'static str, field: u16, component: u16) -> Self {
        Self { segment, field, component: Some(component) }
    }

    /// A location that names a segment only (a missing or repeated segment).
    pub const fn segment(segment: &'static str) -> Self {
        Self { segment, field: 0, component: None }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment)?;
        if self.field > 0 {
            write!(f, "-{}", self.field)?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_declared_delimiters_and_numbers_msh_fields_as_the_standard_does() {
        let m =
            Message::parse(b"MSH|^~\\&|HIS|CITY|CARELINE|NET|20260301093000||SIU^S12^SIU_S12|MSG1|P|2.5.1").unwrap();
        let msh = m.header();
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&");
        assert_eq!(msh.field(3).value().as_deref(), Some("HIS"));
        assert_eq!(msh.field(9).component(2).as_deref(), Some("S12"));
        assert_eq!(msh.field(10).value().as_deref(), Some("MSG1"));
        assert_eq!(msh.field(12).value().as_deref(), Some("2.5.1"));
        assert!(msh.field(40).is_empty());
    }

    #[test]
    fn honours_unusual_delimiters() {
        let m = Message::parse(b"MSH#$*/%#APP#FAC\rPID#1##123$$$$MR*456$$$$XX#A/F/B").unwrap();
        assert_eq!(m.delimiters().component, '$');
        let pid = m.segment("PID").unwrap();
        let ids: Vec<_> = pid.field(3).repetitions().map(|r| (r.component(1), r.component(5))).collect();
        assert_eq!(ids, [(Some("123".into()), Some("MR".into())), (Some("456".into()), Some("XX".into()))]);
        assert_eq!(pid.field(4).value().as_deref(), Some("A#B"));
    }

    #[test]
    fn segments_may_end_in_cr_crlf_or_lf() {
        for sep in ["\r", "\r\n", "\n", "\n\r"] {
            let text = ["MSH|^~\\&|A", "SCH|1", "PID|1||77", ""].join(sep);
            let m = Message::parse(text.as_bytes()).unwrap();
            assert_eq!(m.segments().iter().map(Segment::id).collect::<Vec<_>>(), ["MSH", "SCH", "PID"], "{sep:?}");
            assert_eq!(m.segment("PID").unwrap().field(3).value().as_deref(), Some("77"));
        }
    }

    #[test]
    fn unescapes_every_standard_sequence() {
        let d = Delimiters::default();
        assert_eq!(unescape(r"A\F\B\S\C\T\D\R\E\E\F", &d), r"A|B^C&D~E\F");
        assert_eq!(unescape(r"line1\.br\line2", &d), "line1\nline2");
        assert_eq!(unescape(r"caf\XC3A9\", &d), "café");
        assert_eq!(unescape(r"caf\XE9\", &d), "café");
        assert_eq!(unescape(r"\H\bold\N\", &d), "bold");
        assert_eq!(unescape(r"keep \Q\ and \X1\ and tail\", &d), r"keep \Q\ and \X1\ and tail\");
    }

    #[test]
    fn escaping_round_trips_through_unescaping() {
        let d = Delimiters::default();
        for s in ["plain", "a|b^c&d~e\\f", "two\nlines", ""] {
            assert_eq!(unescape(&escape(s, &d), &d), s, "{s:?}");
        }
    }

    #[test]
    fn reencodes_a_field_into_other_delimiters() {
        let m = Message::parse(b"MSH#$*/%#EPIC$1.2.3$ISO#F|$B").unwrap();
        assert_eq!(reencode(m.header().field(3), &Delimiters::default()), "EPIC^1.2.3^ISO");
        assert_eq!(reencode(m.header().field(4), &Delimiters::default()), "F\\F\\^B");
    }

    #[test]
    fn refuses_what_is_not_an_hl7_message() {
        assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(Message::parse(b"\r\n  ").unwrap_err(), ParseError::Empty);
        assert_eq!(Message::parse(b"PID|1").unwrap_err(), ParseError::NoHeader);
        assert!(matches!(Message::parse(b"MSH").unwrap_err(), ParseError::Delimiters(_)));
        assert!(matches!(Message::parse(b"MSH|^^\\&|A").unwrap_err(), ParseError::Delimiters(_)));
        assert!(matches!(Message::parse(b"MSHa^~\\&").unwrap_err(), ParseError::Delimiters(_)));
    }

    #[test]
    fn skips_lines_that_are_not_segments_and_treats_the_hl7_null_as_empty() {
        let m = Message::parse(b"MSH|^~\\&|A\rnot a segment\rPID|1||\"\"|x\r").unwrap();
        assert_eq!(m.skipped_lines(), 1);
        assert_eq!(m.segment("PID").unwrap().field(3).value(), None);
    }

    #[test]
    fn latin1_text_is_read_when_declared_or_when_not_utf8() {
        let mut bytes = b"MSH|^~\\&|A|||||||||||||||8859/1\rPID|1||1||M\xfcller".to_vec();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.segment("PID").unwrap().field(5).value().as_deref(), Some("Müller"));
        bytes = b"MSH|^~\\&|A\rPID|1||1||M\xfcller".to_vec();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.segment("PID").unwrap().field(5).value().as_deref(), Some("Müller"));
    }

    #[test]
    fn locations_print_as_the_standard_writes_them() {
        assert_eq!(Location::field("PID", 13).to_string(), "PID-13");
        assert_eq!(Location::component("SCH", 11, 4).to_string(), "SCH-11.4");
        assert_eq!(Location::segment("SCH").to_string(), "SCH");
    }
}
