//! What the simulated WABA owns: registered business numbers and message templates.
//!
//! Meta approves each *translation* of a template separately and a send must name the exact
//! code of an approved one (`en` is not `en_US`), so the registry is keyed by
//! (name, language code). A template declares how many body/header parameters it takes and its
//! quick-reply buttons; that is all Meta checks a send against.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A registered business phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneNumberSpec {
    /// The Graph id used in the URL (`/{phone_number_id}/messages`).
    pub id: String,
    /// The number as displayed, in webhooks' `metadata` and replies' `context.from`.
    #[serde(default)]
    pub display_phone_number: String,
    /// Throughput ceiling in messages per second; `None` takes `SANDBOX_DEFAULT_MPS`.
    #[serde(default)]
    pub mps: Option<u32>,
}

impl PhoneNumberSpec {
    /// Parses `ID[:DISPLAY[:MPS]]`, comma-separated.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let mut parts = item.split(':').map(str::trim);
                let id = parts.next().unwrap_or_default().to_owned();
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("phone number id {id:?} is not digits"));
                }
                let display = parts.next().filter(|d| !d.is_empty()).unwrap_or(&id).to_owned();
                let mps = parts.next().map(|m| m.parse::<u32>().map_err(|e| format!("mps {m:?}: {e}"))).transpose()?;
                if parts.next().is_some() {
                    return Err(format!("{item:?} has more than ID:DISPLAY:MPS"));
                }
                Ok(Self { id, display_phone_number: display, mps })
            })
            .collect()
    }
}

/// A template's review status; only `APPROVED` can be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    /// Can be sent.
    #[default]
    Approved,
    /// In review: 132001.
    Pending,
    /// Rejected: 132001.
    Rejected,
    /// Paused for low quality: 132015.
    Paused,
    /// Disabled after repeated pauses: 132016.
    Disabled,
    /// Appealing a rejection: 132001.
    InAppeal,
    /// Archived: 132001.
    Archived,
}

/// One template, in one or more approved languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Name at Meta.
    pub name: String,
    /// Language codes of the translations this entry describes (exact codes: `en`, `en_US`).
    pub languages: Vec<String>,
    /// `{{n}}` parameters of the body.
    #[serde(default)]
    pub body_params: usize,
    /// Text parameters of the header.
    #[serde(default)]
    pub header_params: usize,
    /// Labels of the quick-reply buttons, in index order.
    #[serde(default)]
    pub quick_replies: Vec<String>,
    /// Alternative to `quick_replies` when labels do not matter: that many buttons, labelled
    /// `Option 1`, `Option 2`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick_reply_buttons: Option<usize>,
    /// Review status of these translations.
    #[serde(default)]
    pub status: TemplateStatus,
    /// `UTILITY`, `MARKETING` or `AUTHENTICATION`; drives `pricing.category` on statuses.
    #[serde(default = "utility")]
    pub category: String,
    /// Body with `{{1}}`…; when set, the hydrated text is checked against 1024 characters
    /// (132005) and shown in `/_sandbox/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
}

fn utility() -> String {
    "UTILITY".to_owned()
}

impl Default for TemplateSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            languages: Vec::new(),
            body_params: 0,
            header_params: 0,
            quick_replies: Vec::new(),
            quick_reply_buttons: None,
            status: TemplateStatus::Approved,
            category: utility(),
            body_text: None,
        }
    }
}

impl TemplateSpec {
    /// Button labels, index order, counting `quick_reply_buttons`.
    pub fn button_titles(&self) -> Vec<String> {
        let count = self.quick_replies.len().max(self.quick_reply_buttons.unwrap_or(0));
        (0..count).map(|i| self.quick_replies.get(i).cloned().unwrap_or_else(|| format!("Option {}", i + 1))).collect()
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a template has an empty name".to_owned());
        }
        if self.languages.is_empty() || self.languages.iter().any(|l| l.trim().is_empty()) {
            return Err(format!("template {:?} lists no language", self.name));
        }
        Ok(())
    }
}

/// The file named by `SANDBOX_TEMPLATES`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// `[[phone_numbers]]`.
    #[serde(default)]
    pub phone_numbers: Vec<PhoneNumberSpec>,
    /// `[[templates]]`.
    #[serde(default)]
    pub templates: Vec<TemplateSpec>,
}

/// The registry file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML/JSON of the expected shape, or inconsistent.
    #[error("invalid {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl RegistryFile {
    /// Reads a TOML file, or JSON when the name ends in `.json`.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: shown.clone(), source })?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|reason| RegistryError::Invalid { path: shown, reason })
    }
}

/// Why a template cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateRefusal {
    /// No such name, or not in that language.
    NotFound,
    /// Exists in that language but is not approved.
    NotApproved(TemplateStatus),
}

/// Registered numbers and templates.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    numbers: HashMap<String, PhoneNumberSpec>,
    templates: BTreeMap<(String, String), TemplateSpec>,
}

impl Registry {
    /// Adds or replaces a number.
    pub fn register_number(&mut self, spec: PhoneNumberSpec) -> Result<(), String> {
        if spec.id.is_empty() || !spec.id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("phone number id {:?} is not digits", spec.id));
        }
        let mut spec = spec;
        if spec.display_phone_number.is_empty() {
            spec.display_phone_number = spec.id.clone();
        }
        self.numbers.insert(spec.id.clone(), spec);
        Ok(())
    }

    /// Adds or replaces every translation a template entry lists.
    pub fn register_template(&mut self, spec: TemplateSpec) -> Result<(), String> {
        spec.check()?;
        for language in &spec.languages {
            let mut one = spec.clone();
            one.languages = vec![language.clone()];
            self.templates.insert((spec.name.clone(), language.clone()), one);
        }
        Ok(())
    }

    /// Loads a registry file's content.
    pub fn register_file(&mut self, file: RegistryFile) -> Result<(), String> {
        for number in file.phone_numbers {
            self.register_number(number)?;
        }
        for template in file.templates {
            self.register_template(template)?;
        }
        Ok(())
    }

    /// The number with this Graph id.
    pub fn number(&self, id: &str) -> Option<&PhoneNumberSpec> {
        self.numbers.get(id)
    }

    /// All numbers, by id.
    pub fn numbers(&self) -> Vec<PhoneNumberSpec> {
        let mut all: Vec<_> = self.numbers.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The translation `language` of template `name`, if it may be sent.
    pub fn template(&self, name: &str, language: &str) -> Result<&TemplateSpec, TemplateRefusal> {
        let spec = self.templates.get(&(name.to_owned(), language.to_owned())).ok_or(TemplateRefusal::NotFound)?;
        match spec.status {
            TemplateStatus::Approved => Ok(spec),
            other => Err(TemplateRefusal::NotApproved(other)),
        }
    }

    /// All translations, one entry each.
    pub fn templates(&self) -> Vec<TemplateSpec> {
        self.templates.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_file_registers_numbers_and_each_translation() {
        let file: RegistryFile = toml::from_str(
            r#"
            [[phone_numbers]]
            id = "1001"
            display_phone_number = "15550001001"
            mps = 20

            [[templates]]
            name = "appointment_reminder"
            languages = ["en", "hi"]
            body_params = 3
            quick_replies = ["Confirm", "Reschedule"]

            [[templates]]
            name = "appointment_reminder"
            languages = ["pt_BR"]
            body_params = 3
            status = "PAUSED"
            "#,
        )
        .unwrap();
        let mut registry = Registry::default();
        registry.register_file(file).unwrap();
        assert_eq!(registry.number("1001").unwrap().mps, Some(20));
        let en = registry.template("appointment_reminder", "en").unwrap();
        assert_eq!(en.button_titles(), vec!["Confirm", "Reschedule"]);
        assert!(registry.template("appointment_reminder", "hi").is_ok());
        assert_eq!(registry.template("appointment_reminder", "en_US"), Err(TemplateRefusal::NotFound));
        assert_eq!(
            registry.template("appointment_reminder", "pt_BR"),
            Err(TemplateRefusal::NotApproved(TemplateStatus::Paused))
        );
        assert_eq!(registry.templates().len(), 3);
    }

    #[test]
    fn typos_in_the_file_are_refused() {
        let err = toml::from_str::<RegistryFile>("[[templates]]\nname = \"x\"\nlanguages = [\"en\"]\nbody_param = 2\n");
        assert!(err.is_err());
        let mut registry = Registry::default();
        assert!(registry.register_template(TemplateSpec { name: "x".into(), ..TemplateSpec::default() }).is_err());
        assert!(
            registry
                .register_number(PhoneNumberSpec { id: "12a".into(), display_phone_number: String::new(), mps: None })
                .is_err()
        );
    }

    #[test]
    fn quick_reply_buttons_counts_unlabelled_buttons() {
        let spec = TemplateSpec {
            name: "t".into(),
            languages: vec!["en".into()],
            quick_replies: vec!["Yes".into()],
            quick_reply_buttons: Some(3),
            ..TemplateSpec::default()
        };
        assert_eq!(spec.button_titles(), vec!["Yes", "Option 2", "Option 3"]);
    }

    #[test]
    fn the_example_file_shipped_with_the_crate_loads() {
        let file: RegistryFile = toml::from_str(include_str!("../templates.example.toml")).unwrap();
        let mut registry = Registry::default();
        registry.register_file(file).unwrap();
        assert_eq!(registry.number("106540352242923").unwrap().mps, Some(20));
        assert!(registry.template("appointment_reminder", "pt_BR").is_ok());
        assert_eq!(
            registry.template("appointment_reminder", "ar"),
            Err(TemplateRefusal::NotApproved(TemplateStatus::Paused))
        );
    }

    #[test]
    fn phone_number_lists_parse() {
        let list = PhoneNumberSpec::parse_list("1001, 1002:15550001002, 1003:15550001003:20").unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].display_phone_number, "1001");
        assert_eq!(list[2].mps, Some(20));
        assert!(PhoneNumberSpec::parse_list("1001:1:x").is_err());
        assert!(PhoneNumberSpec::parse_list("1:2:3:4").is_err());
        assert!(PhoneNumberSpec::parse_list("").unwrap().is_empty());
    }
}
