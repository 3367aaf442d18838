//! Template rendering, limited to whitelisted fields.
//!
//! A template's body parameters can only name a [`TemplateField`]: first name, clinician,
//! facility, date/time, address, map link. Anything else (department, instructions, diagnosis)
//! is refused when the configuration is read, so it can never reach WhatsApp.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use uuid::Uuid;

use crate::reply::{ReplyAction, button_payload};

/// The only values a template may carry to a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateField {
    FirstName,
    Clinician,
    Facility,
    DateTime,
    Address,
    MapLink,
}

impl TemplateField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstName => "first_name",
            Self::Clinician => "clinician",
            Self::Facility => "facility",
            Self::DateTime => "date_time",
            Self::Address => "address",
            Self::MapLink => "map_link",
        }
    }
}

/// Quick-reply buttons a template may carry, in the order approved with Meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateButton {
    Confirm,
    Reschedule,
    Cancel,
    Stop,
}

impl TemplateButton {
    pub fn action(self) -> ReplyAction {
        match self {
            Self::Confirm => ReplyAction::Confirm,
            Self::Reschedule => ReplyAction::Reschedule,
            Self::Cancel => ReplyAction::Cancel,
            Self::Stop => ReplyAction::Stop,
        }
    }
}

/// An approved template as configured for a kind of message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The template's name at Meta.
    pub name: String,
    /// Patient language (BCP 47, e.g. `pt-BR`) → the approved translation's code at Meta
    /// (`pt_BR`).
    pub languages: BTreeMap<String, String>,
    /// Body parameters `{{1}}`, `{{2}}`, … in order.
    #[serde(default)]
    pub body: Vec<TemplateField>,
    #[serde(default)]
    pub buttons: Vec<TemplateButton>,
}

/// The facts a template may draw from.
#[derive(Debug, Clone)]
pub struct TemplateValues<'a> {
    pub first_name: Option<&'a str>,
    pub clinician: Option<&'a str>,
    pub facility_name: &'a str,
    pub address: Option<&'a str>,
    pub map_link: Option<&'a str>,
    pub starts_at: DateTime<Utc>,
    pub time_zone: Tz,
}

/// A template ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedTemplate {
    pub name: String,
    pub language_code: String,
    pub body: Vec<String>,
    /// One payload per quick-reply button, by button index.
    pub button_payloads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template '{template}' has no approved translation for language '{language}' nor the default")]
    NoTranslation { template: String, language: String },
    #[error("template '{template}' needs '{field}', which this appointment does not have")]
    MissingField { template: String, field: &'static str },
}

impl TemplateSpec {
    /// The approved translation code for a patient's language: exact tag, then `_` form, then
    /// the primary subtag, then the network's default language.
    pub fn language_code(&self, language: &str, default_language: &str) -> Option<&str> {
        let underscored = language.replace('-', "_");
        let primary = language.split(['-', '_']).next().unwrap_or(language);
        [language, underscored.as_str(), primary, default_language]
            .into_iter()
            .find_map(|k| self.languages.get(k).or_else(|| self.languages.get(&k.to_ascii_lowercase())))
            .map(String::as_str)
    }

    pub fn render(
        &self,
        language: &str,
        default_language: &str,
        values: &TemplateValues<'_>,
        job_id: Uuid,
    ) -> Result<RenderedTemplate, RenderError> {
        let language_code = self
            .language_code(language, default_language)
            .ok_or_else(|| RenderError::NoTranslation { template: self.name.clone(), language: language.to_owned() })?
            .to_owned();
        let body = self
            .body
            .iter()
            .map(|field| {
                let value = match field {
                    TemplateField::FirstName => values.first_name.map(str::to_owned),
                    TemplateField::Clinician => values.clinician.map(str::to_owned),
                    TemplateField::Facility => Some(values.facility_name.to_owned()),
                    TemplateField::DateTime => Some(format_local(values.starts_at, values.time_zone)),
                    TemplateField::Address => values.address.map(str::to_owned),
                    TemplateField::MapLink => values.map_link.map(str::to_owned),
                };
                value
                    .filter(|v| !v.trim().is_empty())
                    .ok_or(RenderError::MissingField { template: self.name.clone(), field: field.as_str() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let button_payloads = self.buttons.iter().map(|b| button_payload(b.action(), job_id)).collect();
        Ok(RenderedTemplate { name: self.name.clone(), language_code, body, button_payloads })
    }
}

/// `Tue 12 Nov 2026, 10:30` in the facility's time zone.
pub fn format_local(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%a %-d %b %Y, %H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TemplateSpec {
        TemplateSpec {
            name: "appointment_reminder".into(),
            languages: [("en".to_owned(), "en_US".to_owned()), ("pt".to_owned(), "pt_BR".to_owned())].into(),
            body: vec![TemplateField::FirstName, TemplateField::DateTime, TemplateField::Facility],
            buttons: vec![TemplateButton::Confirm, TemplateButton::Cancel],
        }
    }

    fn values() -> TemplateValues<'static> {
        TemplateValues {
            first_name: Some("Asha"),
            clinician: None,
            facility_name: "City General",
            address: None,
            map_link: None,
            starts_at: "2026-11-12T05:00:00Z".parse().unwrap(),
            time_zone: chrono_tz::Asia::Kolkata,
        }
    }

    #[test]
    fn renders_whitelisted_fields_in_the_facility_time_zone() {
        let job = Uuid::now_v7();
        let r = spec().render("pt-BR", "en", &values(), job).unwrap();
        assert_eq!(r.language_code, "pt_BR");
        assert_eq!(r.body, ["Asha", "Thu 12 Nov 2026, 10:30", "City General"]);
        assert_eq!(r.button_payloads, [format!("CONFIRM:{job}"), format!("CANCEL:{job}")]);
    }

    #[test]
    fn falls_back_to_the_default_language() {
        assert_eq!(spec().language_code("de", "en"), Some("en_US"));
        assert_eq!(spec().language_code("de", "fr"), None);
    }

    #[test]
    fn refuses_to_send_with_a_missing_field() {
        let mut s = spec();
        s.body.push(TemplateField::Clinician);
        assert_eq!(
            s.render("en", "en", &values(), Uuid::nil()),
            Err(RenderError::MissingField { template: "appointment_reminder".into(), field: "clinician" })
        );
    }
}
