//! HL7 date/times (`DTM`, and the first component of `TS`):
//! `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
//!
//! Most hospital systems send local wall-clock time without an offset; such a value means the
//! facility's local time and is resolved in the facility's time zone. When the clocks go back
//! the earlier of the two instants is taken; a wall-clock time skipped when they go forward is
//! moved forward by the gap, as calendar systems do.

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// How much of a date/time was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// A parsed HL7 date/time: wall-clock fields, and the offset when one was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlDateTime {
    pub local: NaiveDateTime,
    pub offset: Option<FixedOffset>,
    pub precision: Precision,
}

/// Why a value is not an HL7 date/time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    #[error("not an HL7 date/time (YYYYMMDDHHMM[SS][+/-ZZZZ])")]
    Format,
    #[error("not a real calendar date or time")]
    OutOfRange,
    #[error("a date without a time of day")]
    NoTime,
}

impl HlDateTime {
    pub fn parse(value: &str) -> Result<Self, DateTimeError> {
        let value = value.trim();
        let (digits, offset) = match value.char_indices().skip(4).find(|(_, c)| *c == '+' || *c == '-') {
            Some((at, _)) => (&value[..at], Some(parse_offset(&value[at..])?)),
            None => (value, None),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (digits, None),
        };
        if !whole.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&whole.len()) {
            return Err(DateTimeError::Format);
        }
        let nanos = match fraction {
            None => 0,
            Some(f) if whole.len() == 14 && (1..=4).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
                let digits: u32 = f.parse().map_err(|_| DateTimeError::Format)?;
                digits * 10u32.pow(9 - f.len() as u32)
            }
            Some(_) => return Err(DateTimeError::Format),
        };
        let num = |range: std::ops::Range<usize>, default: u32| -> u32 {
            whole.get(range).and_then(|s| s.parse().ok()).unwrap_or(default)
        };
        let year = i32::try_from(num(0..4, 0)).map_err(|_| DateTimeError::Format)?;
        let date = NaiveDate::from_ymd_opt(year, num(4..6, 1), num(6..8, 1)).ok_or(DateTimeError::OutOfRange)?;
        let time = NaiveTime::from_hms_nano_opt(num(8..10, 0), num(10..12, 0), num(12..14, 0), nanos)
            .ok_or(DateTimeError::OutOfRange)?;
        let precision = match whole.len() {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            _ => Precision::Second,
        };
        Ok(Self { local: date.and_time(time), offset, precision })
    }

    /// The instant, reading an offset-less value as wall-clock time in `zone`.
    pub fn resolve(&self, zone: Tz) -> Result<DateTime<Utc>, DateTimeError> {
        if let Some(offset) = self.offset {
            return offset
                .from_local_datetime(&self.local)
                .single()
                .map(|at| at.with_timezone(&Utc))
                .ok_or(DateTimeError::OutOfRange);
        }
        match zone.from_local_datetime(&self.local) {
            LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
            LocalResult::Ambiguous(earlier, _) => Ok(earlier.with_timezone(&Utc)),
            LocalResult::None => {
                // Read it with the offset in force just before the gap: 02:30 in a gap from
                // 02:00 to 03:00 becomes 03:30.
                let before = zone
                    .from_local_datetime(&(self.local - Duration::hours(3)))
                    .earliest()
                    .ok_or(DateTimeError::OutOfRange)?;
                let offset = Duration::seconds(i64::from(before.offset().fix().local_minus_utc()));
                Ok(Utc.from_utc_datetime(&(self.local - offset)))
            }
        }
    }

    /// Like [`HlDateTime::resolve`], but a value without a time of day is refused.
    pub fn resolve_with_time(&self, zone: Tz) -> Result<DateTime<Utc>, DateTimeError> {
        if self.precision < Precision::Hour {
            return Err(DateTimeError::NoTime);
        }
        self.resolve(zone)
    }
}

fn parse_offset(s: &str) -> Result<FixedOffset, DateTimeError> {
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let digits = &s[1..];
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DateTimeError::Format);
    }
    let hours: i32 = digits[..2].parse().map_err(|_| DateTimeError::Format)?;
    let minutes: i32 = digits[2..].parse().map_err(|_| DateTimeError::Format)?;
    if hours > 14 || minutes > 59 {
        return Err(DateTimeError::OutOfRange);
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or(DateTimeError::OutOfRange)
}

/// `YYYYMMDDHHMMSS+0000`: how Careline writes a date/time (always UTC).
pub fn format_utc(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H%M%S+0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn reads_every_precision_and_an_offset() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let cases = [
            ("202603010930", "2026-03-01T04:00:00Z"),
            ("20260301093015", "2026-03-01T04:00:15Z"),
            ("20260301093015.25", "2026-03-01T04:00:15.250Z"),
            ("2026030109", "2026-03-01T03:30:00Z"),
            ("202603010930+0000", "2026-03-01T09:30:00Z"),
            ("20260301093000-0500", "2026-03-01T14:30:00Z"),
            ("20260301093000+0530", "2026-03-01T04:00:00Z"),
        ];
        for (hl7, expected) in cases {
            assert_eq!(HlDateTime::parse(hl7).unwrap().resolve_with_time(kolkata).unwrap(), utc(expected), "{hl7}");
        }
        assert_eq!(HlDateTime::parse("20260301").unwrap().precision, Precision::Day);
    }

    #[test]
    fn refuses_malformed_and_impossible_values() {
        for bad in ["", "2026", "2026-03-01", "20260301T0930", "202603010930+05", "2026030109301", "abcd0301"] {
            let parsed = HlDateTime::parse(bad);
            let zone: Tz = "UTC".parse().unwrap();
            assert!(parsed.and_then(|p| p.resolve_with_time(zone)).is_err(), "{bad}");
        }
        assert_eq!(HlDateTime::parse("20260230").unwrap_err(), DateTimeError::OutOfRange);
        assert_eq!(HlDateTime::parse("202603012561").unwrap_err(), DateTimeError::OutOfRange);
        assert_eq!(HlDateTime::parse("202603010930+2500").unwrap_err(), DateTimeError::OutOfRange);
        let day = HlDateTime::parse("20260301").unwrap();
        assert_eq!(day.resolve_with_time("UTC".parse().unwrap()).unwrap_err(), DateTimeError::NoTime);
    }

    #[test]
    fn local_times_follow_daylight_saving_in_both_directions() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 02:30 does not exist on 29 March 2026: moved to 03:30 local, 01:30 UTC.
        let gap = HlDateTime::parse("202603290230").unwrap().resolve(berlin).unwrap();
        assert_eq!(gap, utc("2026-03-29T01:30:00Z"));
        // 02:30 happens twice on 25 October 2026: the first one (summer time) is taken.
        let twice = HlDateTime::parse("202610250230").unwrap().resolve(berlin).unwrap();
        assert_eq!(twice, utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn formats_utc_as_hl7() {
        assert_eq!(format_utc(utc("2026-03-01T04:00:15.5Z")), "20260301040015+0000");
    }
}
