//! Per-facility configuration, read from the file named by `CARELINE_CONFIG` (TOML).
//!
//! A facility has a time zone, quiet hours, a reminder cadence, the WhatsApp business number
//! it sends from (and that number's throughput ceiling) and the approved template to use for
//! each kind of message, per patient language. Templates can be declared once at the top level
//! and overridden per facility.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Duration, NaiveTime};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

use crate::keywords::KeywordConfig;
use crate::template::TemplateSpec;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("facility '{facility}': {problem}")]
    Facility { facility: String, problem: String },
    #[error("configuration names no facility")]
    Empty,
}

/// The whole network: every facility Careline sends for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Language used when a patient's language has no approved translation.
    #[serde(default = "default_language")]
    pub default_language: String,
    /// Templates shared by every facility, by message kind (`booking_confirmation`, `reminder`,
    /// or a specific `reminder_2h`).
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    #[serde(rename = "facility", default)]
    pub facilities: Vec<Facility>,
    /// Business portfolios and their messaging tier, by id (`[portfolios.<id>]`). A facility
    /// names its portfolio; one that names none belongs to [`DEFAULT_PORTFOLIO`].
    #[serde(default)]
    pub portfolios: BTreeMap<String, Portfolio>,
    /// Words added to the built-in STOP / START / HELP lists (`[keywords]`).
    #[serde(default)]
    pub keywords: KeywordConfig,
}

/// The portfolio of facilities that name none.
pub const DEFAULT_PORTFOLIO: &str = "default";

/// A Meta business portfolio: its numbers share one messaging tier.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Portfolio {
    /// Meta's messaging limit: unique recipients of business-initiated messages per rolling
    /// 24 h (250, 2000, 10000, 100000; absent for unlimited). Sends to new recipients past it
    /// are deferred, not dropped.
    #[serde(default)]
    pub messaging_limit: Option<u32>,
}

fn default_language() -> String {
    "en".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    pub id: String,
    /// Shown to patients (`{{facility}}`).
    pub name: String,
    pub time_zone: Tz,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub map_link: Option<String>,
    /// WhatsApp business phone number id the facility sends from.
    pub phone_number_id: String,
    /// That number's throughput ceiling in messages per second (Meta: 80 by default).
    #[serde(default = "default_throughput")]
    pub throughput_mps: u32,
    /// The business portfolio the number belongs to (its messaging tier); default
    /// [`DEFAULT_PORTFOLIO`].
    #[serde(default)]
    pub portfolio: Option<String>,
    /// Send a confirmation as soon as an appointment is booked.
    #[serde(default = "yes")]
    pub booking_confirmation: bool,
    /// How long before the start each reminder goes out.
    #[serde(default = "default_offsets")]
    pub reminder_offsets: Vec<Offset>,
    /// No message is sent inside these local hours.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    /// How patients reach the facility; the answer to HELP.
    #[serde(default)]
    pub contact: Option<FacilityContact>,
}

/// The facility's public contact details (never a person's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityContact {
    /// A switchboard or help-desk number, as patients should dial it.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Opening hours as free text, e.g. `Mon–Fri 08:00–18:00`.
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
}

fn default_throughput() -> u32 {
    80
}
fn yes() -> bool {
    true
}
fn default_offsets() -> Vec<Offset> {
    vec![Offset(Duration::hours(48)), Offset(Duration::hours(2))]
}

/// Local wall-clock hours during which nothing is sent; `start > end` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    #[serde(deserialize_with = "hh_mm")]
    pub start: NaiveTime,
    #[serde(deserialize_with = "hh_mm")]
    pub end: NaiveTime,
}

fn hh_mm<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
    let raw = String::deserialize(d)?;
    NaiveTime::parse_from_str(&raw, "%H:%M").map_err(|_| serde::de::Error::custom(format!("'{raw}' is not HH:MM")))
}

/// A reminder lead time written as `48h`, `90m` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub Duration);

impl Offset {
    /// The job kind of a reminder at this offset: `reminder_48h`, `reminder_90m`.
    pub fn job_kind(&self) -> String {
        format!("reminder_{self}")
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minutes = self.0.num_minutes();
        if minutes % 60 == 0 { write!(f, "{}h", minutes / 60) } else { write!(f, "{minutes}m") }
    }
}

impl FromStr for Offset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: i64 = number.parse().map_err(|_| format!("'{s}' is not an offset like 48h, 90m or 2d"))?;
        let d = match unit {
            "m" => Duration::minutes(n),
            "h" => Duration::hours(n),
            "d" => Duration::days(n),
            _ => return Err(format!("'{s}' is not an offset like 48h, 90m or 2d")),
        };
        if n <= 0 {
            return Err(format!("offset '{s}' must be positive"));
        }
        Ok(Offset(d))
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl NetworkConfig {
    /// Parses and checks a configuration: every facility must have a template for every kind
    /// of message it will send, ids must be unique.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NetworkConfig = toml::from_str(text)?;
        if config.facilities.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut seen = std::collections::BTreeSet::new();
        for facility in &config.facilities {
            let problem = |problem: String| ConfigError::Facility { facility: facility.id.clone(), problem };
            if !seen.insert(facility.id.as_str()) {
                return Err(problem("facility id appears twice".into()));
            }
            if facility.throughput_mps == 0 {
                return Err(problem("throughput_mps must be at least 1".into()));
            }
            if let Some(portfolio) = &facility.portfolio
                && !config.portfolios.contains_key(portfolio)
            {
                return Err(problem(format!("portfolio '{portfolio}' is not declared under [portfolios]")));
            }
            for kind in facility.job_kinds() {
                let spec =
                    config.template_for(facility, &kind).ok_or_else(|| problem(format!("no template for '{kind}'")))?;
                if spec.languages.is_empty() {
                    return Err(problem(format!("template '{}' lists no language", spec.name)));
                }
            }
        }
        Ok(config)
    }

    /// A portfolio's messaging limit (unique recipients per rolling 24 h); `None` is unlimited.
    pub fn messaging_limit(&self, portfolio: &str) -> Option<u32> {
        self.portfolios.get(portfolio).and_then(|p| p.messaging_limit)
    }

    pub fn facility(&self, id: &str) -> Option<&Facility> {
        self.facilities.iter().find(|f| f.id == id)
    }

    /// The facility sending from a business number (the first, if several share it).
    pub fn facility_by_number(&self, phone_number_id: &str) -> Option<&Facility> {
        self.facilities.iter().find(|f| f.phone_number_id == phone_number_id)
    }

    /// The template for a kind of message: the facility's own, else the network's; a
    /// `reminder_<offset>` falls back to the generic `reminder` template.
    pub fn template_for<'a>(&'a self, facility: &'a Facility, kind: &str) -> Option<&'a TemplateSpec> {
        let generic = kind.starts_with("reminder_").then_some("reminder");
        [Some(kind), generic]
            .into_iter()
            .flatten()
            .find_map(|k| facility.templates.get(k).or_else(|| self.templates.get(k)))
    }
}

impl Facility {
    /// The facility's business portfolio.
    pub fn portfolio(&self) -> &str {
        self.portfolio.as_deref().unwrap_or(DEFAULT_PORTFOLIO)
    }

    /// Every job kind this facility plans.
    pub fn job_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.reminder_offsets.iter().map(Offset::job_kind).collect();
        if self.booking_confirmation {
            kinds.insert(0, crate::plan::BOOKING_CONFIRMATION.to_owned());
        }
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        default_language = "en"
        [templates.booking_confirmation]
        name = "appointment_booked"
        languages = { en = "en", hi = "hi" }
        body = ["first_name", "date_time", "facility"]
        buttons = ["confirm", "reschedule", "cancel"]
        [templates.reminder]
        name = "appointment_reminder"
        languages = { en = "en_US" }
        body = ["first_name", "date_time", "clinician", "facility", "address"]

        [[facility]]
        id = "city"
        name = "City General"
        time_zone = "Asia/Kolkata"
        phone_number_id = "1001"
        reminder_offsets = ["48h", "2h", "90m"]
        quiet_hours = { start = "21:00", end = "08:00" }
        contact = { phone = "+91 80 4000 0000", email = "desk@city.example", hours = "Mon-Sat 08:00-20:00" }

        [keywords]
        stop = ["halt"]
    "#;

    #[test]
    fn parses_a_network_with_shared_templates() {
        let config = NetworkConfig::from_toml(SAMPLE).unwrap();
        let city = config.facility("city").unwrap();
        assert_eq!(city.throughput_mps, 80);
        assert_eq!(city.job_kinds(), ["booking_confirmation", "reminder_48h", "reminder_2h", "reminder_90m"]);
        assert_eq!(config.template_for(city, "reminder_90m").unwrap().name, "appointment_reminder");
        assert_eq!(city.quiet_hours.unwrap().start, NaiveTime::from_hms_opt(21, 0, 0).unwrap());
        assert_eq!(city.contact.as_ref().unwrap().email.as_deref(), Some("desk@city.example"));
        assert_eq!(config.keywords.stop, ["halt"]);
        assert_eq!(config.facility_by_number("1001").unwrap().id, "city");
    }

    #[test]
    fn refuses_a_facility_without_a_template_for_its_messages() {
        let text = SAMPLE.replace("[templates.reminder]", "[templates.other]");
        let err = NetworkConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("no template for 'reminder_48h'"), "{err}");
    }

    #[test]
    fn refuses_template_fields_outside_the_whitelist() {
        let text = SAMPLE.replace("\"clinician\", \"facility\", \"address\"", "\"diagnosis\"");
        let err = NetworkConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("diagnosis"), "{err}");
    }

    #[test]
    fn refuses_unknown_time_zones_and_bad_offsets() {
        assert!(NetworkConfig::from_toml(&SAMPLE.replace("Asia/Kolkata", "Mars/Olympus")).is_err());
        assert!(NetworkConfig::from_toml(&SAMPLE.replace("\"90m\"", "\"soon\"")).is_err());
        assert!("0h".parse::<Offset>().is_err());
        assert_eq!("2d".parse::<Offset>().unwrap().to_string(), "48h");
    }
}
