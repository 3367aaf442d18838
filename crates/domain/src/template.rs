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
    /// Every field a template may carry.
    pub const ALL: [Self; 6] =
        [Self::FirstName, Self::Clinician, Self::Facility, Self::DateTime, Self::Address, Self::MapLink];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

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
    /// What `first_name` becomes when the number is shared by several patients (neutral
    /// wording: no one's name reaches a phone others read), by patient language; the built-in
    /// [`neutral_first_name`] otherwise.
    #[serde(default)]
    pub neutral_first_name: BTreeMap<String, String>,
}

/// Whom a message is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressee {
    /// The patient alone uses the number: the first name may be used.
    #[default]
    Named,
    /// Several patients share the number: neutral wording, no first name.
    SharedNumber,
}

/// The built-in neutral stand-in for `{{first_name}}` in the six languages Careline ships
/// texts for (English otherwise).
pub fn neutral_first_name(language: &str) -> &'static str {
    match crate::service_reply::text_language(language) {
        "hi" => "मरीज़",
        "es" => "paciente",
        "pt" => "paciente",
        "ar" => "عزيزي المريض",
        "de" => "Patientin, Patient",
        _ => "there",
    }
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

    /// Renders for an addressee: on a shared number `first_name` becomes the neutral wording
    /// of the patient's language. The sender calls this with
    /// `careline_store::patients::addressee(..)`.
    pub fn render_for(
        &self,
        language: &str,
        default_language: &str,
        values: &TemplateValues<'_>,
        job_id: Uuid,
        addressee: Addressee,
    ) -> Result<RenderedTemplate, RenderError> {
        match addressee {
            Addressee::Named => self.render(language, default_language, values, job_id),
            Addressee::SharedNumber => {
                let primary = language.split(['-', '_']).next().unwrap_or(language);
                let neutral = self
                    .neutral_first_name
                    .get(language)
                    .or_else(|| self.neutral_first_name.get(primary))
                    .map_or_else(|| neutral_first_name(language), String::as_str);
                let neutral_values = TemplateValues { first_name: Some(neutral), ..values.clone() };
                self.render(language, default_language, &neutral_values, job_id)
            }
        }
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

/// One refusal of the template lint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintProblem {
    /// Where, as a TOML path: `templates.reminder.body[2]`, `facility[0].templates.x.body[0]`.
    pub location: String,
    pub problem: String,
}

impl std::fmt::Display for LintProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.problem)
    }
}

/// Checks every template parameter mapping of a network file against the whitelist and
/// reports each field outside it (all of them, not only the first), then any other reason the
/// file would be refused. An empty list means the file is safe to deploy.
pub fn lint(config_text: &str) -> Vec<LintProblem> {
    let value: toml::Value = match toml::from_str(config_text) {
        Ok(v) => v,
        Err(e) => return vec![LintProblem { location: "(file)".into(), problem: format!("not valid TOML: {e}") }],
    };
    let allowed = TemplateField::ALL.map(TemplateField::as_str).join(", ");
    let mut problems = Vec::new();
    let mut check_templates = |prefix: String, templates: Option<&toml::Value>| {
        let Some(templates) = templates.and_then(toml::Value::as_table) else { return };
        for (kind, spec) in templates {
            let Some(body) = spec.get("body") else { continue };
            let Some(body) = body.as_array() else {
                problems
                    .push(LintProblem { location: format!("{prefix}{kind}.body"), problem: "must be a list".into() });
                continue;
            };
            for (i, field) in body.iter().enumerate() {
                let name = field.as_str().unwrap_or("");
                if TemplateField::parse(name).is_none() {
                    problems.push(LintProblem {
                        location: format!("{prefix}{kind}.body[{i}]"),
                        problem: format!("'{}' is not a whitelisted field (allowed: {allowed})", field_label(field)),
                    });
                }
            }
        }
    };
    check_templates("templates.".into(), value.get("templates"));
    if let Some(facilities) = value.get("facility").and_then(toml::Value::as_array) {
        for (i, facility) in facilities.iter().enumerate() {
            check_templates(format!("facility[{i}].templates."), facility.get("templates"));
        }
    }
    if problems.is_empty()
        && let Err(e) = crate::facility::NetworkConfig::from_toml(config_text)
    {
        problems.push(LintProblem { location: "(file)".into(), problem: e.to_string() });
    }
    problems
}

fn field_label(field: &toml::Value) -> String {
    match field {
        toml::Value::String(s) => s.chars().take(64).collect(),
        other => format!("a {}", other.type_str()),
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
            neutral_first_name: BTreeMap::new(),
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
    fn a_shared_number_gets_neutral_wording_without_the_first_name() {
        let job = Uuid::now_v7();
        let named = spec().render_for("en", "en", &values(), job, Addressee::Named).unwrap();
        assert_eq!(named.body[0], "Asha");
        let shared = spec().render_for("en", "en", &values(), job, Addressee::SharedNumber).unwrap();
        assert_eq!(shared.body, ["there", "Thu 12 Nov 2026, 10:30", "City General"]);
        let shared = spec().render_for("pt-BR", "en", &values(), job, Addressee::SharedNumber).unwrap();
        assert_eq!(shared.body[0], "paciente");
        let mut configured = spec();
        configured.neutral_first_name.insert("pt".into(), "cliente".into());
        let shared = configured.render_for("pt-BR", "en", &values(), job, Addressee::SharedNumber).unwrap();
        assert_eq!(shared.body[0], "cliente");
        // No first name on file is no reason to fail a shared number's message.
        let anonymous = TemplateValues { first_name: None, ..values() };
        assert!(spec().render_for("en", "en", &anonymous, job, Addressee::SharedNumber).is_ok());
    }

    #[test]
    fn falls_back_to_the_default_language() {
        assert_eq!(spec().language_code("de", "en"), Some("en_US"));
        assert_eq!(spec().language_code("de", "fr"), None);
    }

    #[test]
    fn the_lint_names_every_field_outside_the_whitelist_with_its_place() {
        let config = r#"
            [templates.booking_confirmation]
            name = "booked"
            languages = { en = "en" }
            body = ["first_name", "diagnosis", "date_time"]
            [templates.reminder]
            name = "reminder"
            languages = { en = "en" }
            [[facility]]
            id = "city"
            name = "City"
            time_zone = "Asia/Kolkata"
            phone_number_id = "1"
            [facility.templates.reminder]
            name = "reminder_city"
            languages = { en = "en" }
            body = ["medication", "facility"]
        "#;
        let problems: Vec<String> = lint(config).iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("templates.booking_confirmation.body[1]: 'diagnosis' is not a whitelisted"));
        assert!(problems[1].starts_with("facility[0].templates.reminder.body[0]: 'medication'"));
        let clean = config.replace("\"diagnosis\", ", "").replace("\"medication\", ", "");
        assert_eq!(lint(&clean), []);
        assert_eq!(lint("not = [toml").len(), 1);
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
