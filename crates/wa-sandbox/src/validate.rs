//! Meta's checks on a send request, in Meta's order and with Meta's codes.
//!
//! The body is read as untyped JSON on purpose: a typed parse would turn every mistake into
//! one generic error, whereas Meta names the offending field (`(#100) The parameter to is
//! required.`), and Careline's error classification must be exercised with the real codes:
//! 100 for malformed requests, 131008/131009 for missing/invalid values, 131021 for sending to
//! oneself, 132001 for an unknown or unapproved translation, 132000 for a parameter count
//! mismatch, 132005 for hydrated text over 1024 characters, 132015/132016 for paused/disabled
//! templates, 132018 for parameter text with new-lines, tabs or 5+ consecutive spaces.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::graph_error::GraphError;
use crate::registry::{PhoneNumberSpec, Registry, TemplateRefusal, TemplateStatus};

/// Meta's limit on a text message body, in characters.
pub const TEXT_BODY_MAX_CHARS: usize = careline_whatsapp::types::TEXT_BODY_MAX_CHARS;
/// Meta's limit on a hydrated template body, in characters.
pub const TEMPLATE_BODY_MAX_CHARS: usize = 1024;
/// Meta's limit on `biz_opaque_callback_data`, in characters.
pub const CALLBACK_DATA_MAX_CHARS: usize = 512;
const INTERACTIVE_BODY_MAX_CHARS: usize = 1024;
const REPLY_BUTTON_TITLE_MAX_CHARS: usize = 20;
const REPLY_BUTTON_ID_MAX_CHARS: usize = 256;
const MEDIA_TYPES: &[&str] = &["audio", "contacts", "document", "image", "location", "reaction", "sticker", "video"];

/// A button of a sent message, as the patient will see and tap it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentButton {
    /// Position in the template / interactive message.
    pub index: usize,
    /// Label.
    pub title: String,
    /// Quick-reply payload (templates) or reply id (interactive); a template button sent
    /// without a payload comes back with its label as payload, as on WhatsApp.
    pub payload: Option<String>,
}

/// What a valid request asks to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A template.
    Template {
        /// Template name.
        name: String,
        /// Translation code.
        language: String,
        /// `UTILITY`, …
        category: String,
        /// Body parameter values in order.
        params: Vec<String>,
        /// Header text parameter values.
        header_params: Vec<String>,
        /// Every quick-reply button of the template.
        buttons: Vec<SentButton>,
        /// Hydrated body, when the registry knows the body text.
        rendered: Option<String>,
    },
    /// A free-form text.
    Text {
        /// The text.
        body: String,
    },
    /// An interactive message.
    Interactive {
        /// Body text.
        body: String,
        /// Reply buttons.
        buttons: Vec<SentButton>,
    },
    /// Media, location, contacts, reaction: accepted without further checks.
    Other {
        /// The `type`.
        message_type: String,
    },
}

impl Content {
    /// The `type` of the message.
    pub fn message_type(&self) -> &str {
        match self {
            Self::Template { .. } => "template",
            Self::Text { .. } => "text",
            Self::Interactive { .. } => "interactive",
            Self::Other { message_type } => message_type,
        }
    }

    /// Only templates may be sent outside the customer-service window.
    pub fn needs_open_window(&self) -> bool {
        !matches!(self, Self::Template { .. })
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSend {
    /// `to` as sent (echoed as `contacts[].input`).
    pub to_input: String,
    /// Normalised digits (`contacts[].wa_id`, `recipient_id`).
    pub wa_id: String,
    /// What to send.
    pub content: Content,
    /// Echoed on statuses.
    pub biz_opaque_callback_data: Option<String>,
}

type Obj = Map<String, Value>;

fn present<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn required(what: &str) -> GraphError {
    GraphError::invalid_parameter(format!("The parameter {what} is required."))
}

fn opt_str<'a>(obj: &'a Obj, key: &str, path: &str) -> Result<Option<&'a str>, GraphError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GraphError::invalid_parameter(format!("Param {path} must be a string."))),
    }
}

fn req_str<'a>(obj: &'a Obj, key: &str, path: &str) -> Result<&'a str, GraphError> {
    opt_str(obj, key, path)?.ok_or_else(|| required(path))
}

fn req_obj<'a>(obj: &'a Obj, key: &str, path: &str) -> Result<&'a Obj, GraphError> {
    match present(obj, key) {
        None => Err(required(path)),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(GraphError::invalid_parameter(format!("Param {path} must be a JSON object."))),
    }
}

fn opt_array<'a>(obj: &'a Obj, key: &str, path: &str) -> Result<&'a [Value], GraphError> {
    match present(obj, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(GraphError::invalid_parameter(format!("Param {path} must be an array."))),
    }
}

fn as_obj<'a>(value: &'a Value, path: &str) -> Result<&'a Obj, GraphError> {
    value.as_object().ok_or_else(|| GraphError::invalid_parameter(format!("Param {path} must be a JSON object.")))
}

/// `+91 98123-45678` → `919812345678`, or `None` if that is not 8–15 digits.
pub fn normalise_phone(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    let ok = (8..=15).contains(&digits.len()) && !digits.starts_with('0');
    ok.then_some(digits)
}

/// Checks a `POST /{phone_number_id}/messages` body for `number`.
pub fn validate_send(body: &[u8], number: &PhoneNumberSpec, registry: &Registry) -> Result<ValidSend, GraphError> {
    // Graph reads form and JSON bodies alike; anything it cannot read simply has no fields.
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let empty = Obj::new();
    let req = value.as_object().unwrap_or(&empty);

    let product = req_str(req, "messaging_product", "messaging_product")?;
    if !product.eq_ignore_ascii_case("whatsapp") {
        return Err(GraphError::invalid_parameter(format!(
            "Param messaging_product must be one of {{WHATSAPP}} - got \"{product}\"."
        )));
    }
    if let Some(kind) = opt_str(req, "recipient_type", "recipient_type")?
        && !kind.eq_ignore_ascii_case("individual")
    {
        return Err(GraphError::invalid_parameter(format!(
            "Param recipient_type must be one of {{INDIVIDUAL}} - got \"{kind}\"."
        )));
    }
    let to_input = req_str(req, "to", "to")?;
    let wa_id = normalise_phone(to_input).ok_or_else(|| {
        GraphError::whatsapp(
            131009,
            "Invalid parameter value: to must be a phone number with country code, 8 to 15 digits.",
        )
    })?;
    if normalise_phone(&number.display_phone_number).as_deref() == Some(wa_id.as_str()) {
        return Err(GraphError::whatsapp(131021, "Recipient phone number is the sender's phone number."));
    }
    let callback = opt_str(req, "biz_opaque_callback_data", "biz_opaque_callback_data")?;
    if callback.is_some_and(|c| c.chars().count() > CALLBACK_DATA_MAX_CHARS) {
        return Err(GraphError::invalid_parameter(format!(
            "Param biz_opaque_callback_data must be at most {CALLBACK_DATA_MAX_CHARS} characters long."
        )));
    }
    let message_type = opt_str(req, "type", "type")?.unwrap_or("text");
    let content = match message_type {
        "template" => validate_template(req_obj(req, "template", "template")?, registry)?,
        "text" => validate_text(req_obj(req, "text", "text")?)?,
        "interactive" => validate_interactive(req_obj(req, "interactive", "interactive")?)?,
        other if MEDIA_TYPES.contains(&other) => {
            req_obj(req, other, other)?;
            Content::Other { message_type: other.to_owned() }
        }
        other => {
            return Err(GraphError::invalid_parameter(format!(
                "Param type must be one of {{AUDIO, CONTACTS, DOCUMENT, IMAGE, INTERACTIVE, LOCATION, REACTION, STICKER, TEMPLATE, TEXT, VIDEO}} - got \"{other}\"."
            )));
        }
    };
    Ok(ValidSend {
        to_input: to_input.to_owned(),
        wa_id,
        content,
        biz_opaque_callback_data: callback.map(str::to_owned),
    })
}

fn validate_text(text: &Obj) -> Result<Content, GraphError> {
    let body = req_str(text, "body", "text['body']")?;
    if body.is_empty() {
        return Err(required("text['body']"));
    }
    if body.chars().count() > TEXT_BODY_MAX_CHARS {
        return Err(GraphError::invalid_parameter(format!(
            "Param text['body'] must be at most {TEXT_BODY_MAX_CHARS} characters long."
        )));
    }
    Ok(Content::Text { body: body.to_owned() })
}

fn validate_interactive(interactive: &Obj) -> Result<Content, GraphError> {
    let kind = req_str(interactive, "type", "interactive['type']")?;
    let body = match present(interactive, "body") {
        Some(_) => {
            req_str(req_obj(interactive, "body", "interactive['body']")?, "text", "interactive['body']['text']")?
        }
        None if kind == "button" || kind == "list" => return Err(required("interactive['body']")),
        None => "",
    };
    if body.chars().count() > INTERACTIVE_BODY_MAX_CHARS {
        return Err(GraphError::invalid_parameter(format!(
            "Param interactive['body']['text'] must be at most {INTERACTIVE_BODY_MAX_CHARS} characters long."
        )));
    }
    let mut buttons = Vec::new();
    if kind == "button" {
        let action = req_obj(interactive, "action", "interactive['action']")?;
        let list = opt_array(action, "buttons", "interactive['action']['buttons']")?;
        if list.is_empty() || list.len() > 3 {
            return Err(GraphError::whatsapp(131009, "Interactive button messages need 1 to 3 buttons."));
        }
        for (index, button) in list.iter().enumerate() {
            let path = format!("interactive['action']['buttons'][{index}]");
            let reply = req_obj(as_obj(button, &path)?, "reply", &format!("{path}['reply']"))?;
            let id = req_str(reply, "id", &format!("{path}['reply']['id']"))?;
            let title = req_str(reply, "title", &format!("{path}['reply']['title']"))?;
            if id.is_empty() || id.chars().count() > REPLY_BUTTON_ID_MAX_CHARS {
                return Err(GraphError::whatsapp(
                    131009,
                    format!("Button id must be 1 to {REPLY_BUTTON_ID_MAX_CHARS} characters."),
                ));
            }
            if title.is_empty() || title.chars().count() > REPLY_BUTTON_TITLE_MAX_CHARS {
                return Err(GraphError::whatsapp(
                    131009,
                    format!("Button title must be 1 to {REPLY_BUTTON_TITLE_MAX_CHARS} characters."),
                ));
            }
            if buttons.iter().any(|b: &SentButton| b.title == title) {
                return Err(GraphError::whatsapp(131009, "Button titles must be unique."));
            }
            buttons.push(SentButton { index, title: title.to_owned(), payload: Some(id.to_owned()) });
        }
    }
    Ok(Content::Interactive { body: body.to_owned(), buttons })
}

/// Meta refuses parameter text with new-lines, tabs or more than four consecutive spaces.
fn check_param_text(text: &str) -> Result<(), GraphError> {
    if text.contains(['\n', '\t']) || text.contains("     ") {
        return Err(GraphError::whatsapp(
            132018,
            "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        ));
    }
    Ok(())
}

/// Reads a component's parameters; text values are checked and returned, other types count
/// as parameters with their fallback value.
fn read_parameters(component: &Obj, path: &str) -> Result<Vec<String>, GraphError> {
    let params = opt_array(component, "parameters", &format!("{path}['parameters']"))?;
    let mut values = Vec::with_capacity(params.len());
    for (i, param) in params.iter().enumerate() {
        let ppath = format!("{path}['parameters'][{i}]");
        let param = as_obj(param, &ppath)?;
        let kind = req_str(param, "type", &format!("{ppath}['type']"))?;
        let value = match kind.to_ascii_lowercase().as_str() {
            "text" => {
                let text = opt_str(param, "text", &format!("{ppath}['text']"))?.filter(|t| !t.is_empty()).ok_or_else(
                    || {
                        GraphError::whatsapp(
                            131008,
                            format!("{ppath}: parameter of type text requires a non-empty text."),
                        )
                    },
                )?;
                check_param_text(text)?;
                text.to_owned()
            }
            "currency" | "date_time" => {
                let inner = req_obj(param, kind, &format!("{ppath}['{kind}']"))?;
                opt_str(inner, "fallback_value", "fallback_value")?.unwrap_or_default().to_owned()
            }
            "image" | "video" | "document" | "location" => {
                req_obj(param, kind, &format!("{ppath}['{kind}']"))?;
                format!("[{kind}]")
            }
            other => {
                return Err(GraphError::whatsapp(
                    132012,
                    format!("{ppath}: parameter type {other:?} is not valid here."),
                ));
            }
        };
        values.push(value);
    }
    Ok(values)
}

fn validate_template(template: &Obj, registry: &Registry) -> Result<Content, GraphError> {
    let name = req_str(template, "name", "template['name']")?;
    let language = req_obj(template, "language", "template['language']")?;
    let code = req_str(language, "code", "template['language']['code']")?;
    let spec = registry.template(name, code).map_err(|refusal| match refusal {
        TemplateRefusal::NotApproved(TemplateStatus::Paused) => GraphError::whatsapp(
            132015,
            format!("Template {name} is paused due to low quality, so it can't be sent in a template message."),
        ),
        TemplateRefusal::NotApproved(TemplateStatus::Disabled) => GraphError::whatsapp(
            132016,
            format!(
                "Template {name} has been paused too many times due to low quality and is now permanently disabled."
            ),
        ),
        // Not found, pending, rejected, in appeal or archived: Meta says "does not exist".
        _ => GraphError::whatsapp(132001, format!("template name ({name}) does not exist in {code}")),
    })?;

    let titles = spec.button_titles();
    let mut buttons: Vec<SentButton> = titles
        .iter()
        .enumerate()
        .map(|(index, title)| SentButton { index, title: title.clone(), payload: None })
        .collect();
    let mut seen_buttons = vec![false; titles.len()];
    let mut params = Vec::new();
    let mut header_params = Vec::new();

    let components = opt_array(template, "components", "template['components']")?;
    for (i, component) in components.iter().enumerate() {
        let path = format!("template['components'][{i}]");
        let component = as_obj(component, &path)?;
        let kind = req_str(component, "type", &format!("{path}['type']"))?;
        match kind.to_ascii_lowercase().as_str() {
            "header" => header_params.extend(read_parameters(component, &path)?),
            "body" => params.extend(read_parameters(component, &path)?),
            "button" => {
                let sub_type = req_str(component, "sub_type", &format!("{path}['sub_type']"))?;
                let index = match present(component, "index") {
                    None => return Err(required(&format!("{path}['index']"))),
                    Some(Value::String(s)) => s.trim().parse::<usize>().ok(),
                    Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
                    Some(_) => None,
                }
                .ok_or_else(|| GraphError::whatsapp(131009, format!("{path}: button index is not valid.")))?;
                if !sub_type.eq_ignore_ascii_case("quick_reply") {
                    return Err(GraphError::whatsapp(
                        131009,
                        format!("Button at index {index} is not of type {sub_type}."),
                    ));
                }
                let Some(slot) = seen_buttons.get_mut(index) else {
                    return Err(GraphError::whatsapp(
                        131009,
                        format!("Button at index {index} of type Quick_reply does not exist."),
                    ));
                };
                if std::mem::replace(slot, true) {
                    return Err(GraphError::whatsapp(
                        131009,
                        format!("Button at index {index} is given more than once."),
                    ));
                }
                let payload = opt_array(component, "parameters", &format!("{path}['parameters']"))?
                    .iter()
                    .filter_map(Value::as_object)
                    .find(|p| p.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("payload")))
                    .and_then(|p| p.get("payload"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        GraphError::whatsapp(
                            131008,
                            format!(
                                "Button at index {index} of type Quick_reply requires a parameter of type payload."
                            ),
                        )
                    })?;
                if let Some(button) = buttons.get_mut(index) {
                    button.payload = Some(payload.to_owned());
                }
            }
            other => {
                return Err(GraphError::invalid_parameter(format!(
                    "Param {path}['type'] must be one of {{HEADER, BODY, BUTTON}} - got \"{other}\"."
                )));
            }
        }
    }
    if header_params.len() != spec.header_params {
        return Err(GraphError::whatsapp(
            132000,
            format!(
                "header: number of localizable_params ({}) does not match the expected number of params ({})",
                header_params.len(),
                spec.header_params
            ),
        ));
    }
    if params.len() != spec.body_params {
        return Err(GraphError::whatsapp(
            132000,
            format!(
                "body: number of localizable_params ({}) does not match the expected number of params ({})",
                params.len(),
                spec.body_params
            ),
        ));
    }
    let rendered = spec.body_text.as_ref().map(|text| hydrate(text, &params));
    let length =
        rendered.as_ref().map_or_else(|| params.iter().map(|p| p.chars().count()).sum(), |r| r.chars().count());
    if length > TEMPLATE_BODY_MAX_CHARS {
        return Err(GraphError::whatsapp(
            132005,
            format!("Message template hydrated text length exceeds {TEMPLATE_BODY_MAX_CHARS} characters."),
        ));
    }
    Ok(Content::Template {
        name: name.to_owned(),
        language: code.to_owned(),
        category: spec.category.clone(),
        params,
        header_params,
        buttons,
        rendered,
    })
}

/// Replaces `{{1}}`, `{{2}}`… with the parameters.
fn hydrate(text: &str, params: &[String]) -> String {
    let mut out = text.to_owned();
    // Highest index first so `{{1}}` never eats the start of `{{10}}`.
    for (i, value) in params.iter().enumerate().rev() {
        out = out.replace(&format!("{{{{{}}}}}", i + 1), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TemplateSpec;
    use serde_json::json;

    fn number() -> PhoneNumberSpec {
        PhoneNumberSpec { id: "1001".into(), display_phone_number: "15550001001".into(), mps: None }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.register_template(TemplateSpec {
            name: "reminder".into(),
            languages: vec!["en".into()],
            body_params: 2,
            quick_replies: vec!["Confirm".into(), "Cancel".into()],
            body_text: Some("Hi {{1}}, see you {{2}}.".into()),
            ..TemplateSpec::default()
        })
        .unwrap();
        r.register_template(TemplateSpec {
            name: "reminder".into(),
            languages: vec!["hi".into()],
            status: TemplateStatus::Paused,
            ..TemplateSpec::default()
        })
        .unwrap();
        r
    }

    fn check(body: Value) -> Result<ValidSend, GraphError> {
        validate_send(&serde_json::to_vec(&body).unwrap(), &number(), &registry())
    }

    fn code(body: Value) -> i64 {
        check(body).unwrap_err().code
    }

    fn template(components: Value) -> Value {
        json!({ "messaging_product": "whatsapp", "to": "+91 98123 45678", "type": "template",
                "template": { "name": "reminder", "language": { "code": "en" }, "components": components } })
    }

    #[test]
    fn a_valid_template_is_read_with_its_buttons() {
        let ok = check(template(json!([
            { "type": "body", "parameters": [ { "type": "text", "text": "Asha" }, { "type": "text", "text": "Tue" } ] },
            { "type": "button", "sub_type": "quick_reply", "index": "1",
              "parameters": [ { "type": "payload", "payload": "CANCEL:1" } ] }
        ])))
        .unwrap();
        assert_eq!(ok.wa_id, "919812345678");
        assert_eq!(ok.to_input, "+91 98123 45678");
        let Content::Template { params, buttons, rendered, .. } = ok.content else {
            panic!("not a template");
        };
        assert_eq!(params, vec!["Asha", "Tue"]);
        assert_eq!(buttons[0].payload, None);
        assert_eq!(buttons[1].payload.as_deref(), Some("CANCEL:1"));
        assert_eq!(rendered.as_deref(), Some("Hi Asha, see you Tue."));
    }

    #[test]
    fn malformed_requests_get_metas_codes() {
        let body2 = json!([ { "type": "body", "parameters": [ { "type": "text", "text": "a" }, { "type": "text", "text": "b" } ] } ]);
        let cases: Vec<(Value, i64)> = vec![
            (json!(null), 100),
            (json!({ "to": "919812345678" }), 100),
            (json!({ "messaging_product": "sms", "to": "919812345678" }), 100),
            (json!({ "messaging_product": "whatsapp" }), 100),
            (json!({ "messaging_product": "whatsapp", "to": 919812345678u64 }), 100),
            (
                json!({ "messaging_product": "whatsapp", "to": "12345" , "type": "text", "text": { "body": "x" } }),
                131009,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "15550001001", "type": "text", "text": { "body": "x" } }),
                131021,
            ),
            (json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "hologram" }), 100),
            (json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "text" }), 100),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "text", "text": { "body": "x".repeat(4097) } }),
                100,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "text", "text": { "body": "x" },
                     "biz_opaque_callback_data": "x".repeat(513) }),
                100,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "recipient_type": "group", "type": "text", "text": { "body": "x" } }),
                100,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "template", "template": { "name": "nope", "language": { "code": "en" } } }),
                132001,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "template", "template": { "name": "reminder", "language": { "code": "en_US" } } }),
                132001,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "template", "template": { "name": "reminder", "language": { "code": "hi" } } }),
                132015,
            ),
            (
                json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "template", "template": { "name": "reminder" } }),
                100,
            ),
            (template(json!([])), 132000),
            (template(json!([ { "type": "body", "parameters": [ { "type": "text", "text": "a" } ] } ])), 132000),
            (
                template(
                    json!([ { "type": "body", "parameters": [ { "type": "text", "text": "a\nb" }, { "type": "text", "text": "b" } ] } ]),
                ),
                132018,
            ),
            (
                template(
                    json!([ { "type": "body", "parameters": [ { "type": "text", "text": "a     b" }, { "type": "text", "text": "b" } ] } ]),
                ),
                132018,
            ),
            (
                template(
                    json!([ { "type": "body", "parameters": [ { "type": "text", "text": "" }, { "type": "text", "text": "b" } ] } ]),
                ),
                131008,
            ),
            (
                template(
                    json!([ { "type": "body", "parameters": [ { "type": "text", "text": "x".repeat(1100) }, { "type": "text", "text": "b" } ] } ]),
                ),
                132005,
            ),
            (template(json!([ { "type": "footer" } ])), 100),
            (template(json!("not a list")), 100),
            (template(json!([1])), 100),
        ];
        for (body, expected) in cases {
            assert_eq!(code(body.clone()), expected, "{body}");
        }
        let with_button = |button: Value| {
            let mut components = body2.clone();
            components.as_array_mut().unwrap().push(button);
            code(template(components))
        };
        assert_eq!(
            with_button(
                json!({ "type": "button", "sub_type": "quick_reply", "index": "2", "parameters": [ { "type": "payload", "payload": "X" } ] })
            ),
            131009
        );
        assert_eq!(
            with_button(
                json!({ "type": "button", "sub_type": "quick_reply", "index": "x", "parameters": [ { "type": "payload", "payload": "X" } ] })
            ),
            131009
        );
        assert_eq!(
            with_button(
                json!({ "type": "button", "sub_type": "url", "index": "0", "parameters": [ { "type": "text", "text": "X" } ] })
            ),
            131009
        );
        assert_eq!(
            with_button(json!({ "type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [] })),
            131008
        );
        assert_eq!(with_button(json!({ "type": "button", "sub_type": "quick_reply", "index": "0" })), 131008);
        assert_eq!(with_button(json!({ "type": "button", "index": "0" })), 100);
        assert_eq!(with_button(json!({ "type": "button", "sub_type": "quick_reply" })), 100);
    }

    #[test]
    fn a_button_given_twice_is_refused_and_numeric_indexes_are_accepted() {
        let components = json!([
            { "type": "body", "parameters": [ { "type": "text", "text": "a" }, { "type": "text", "text": "b" } ] },
            { "type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [ { "type": "payload", "payload": "A" } ] },
        ]);
        assert!(check(template(components.clone())).is_ok());
        let mut twice = components;
        twice.as_array_mut().unwrap().push(json!(
            { "type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [ { "type": "payload", "payload": "B" } ] }));
        assert_eq!(code(template(twice)), 131009);
    }

    #[test]
    fn text_and_interactive_messages_are_read() {
        let text = check(json!({ "messaging_product": "whatsapp", "to": "919812345678",
                                 "text": { "body": "hello" } }))
        .unwrap();
        assert_eq!(text.content, Content::Text { body: "hello".into() });
        assert!(text.content.needs_open_window());
        let interactive = check(json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "interactive",
            "interactive": { "type": "button", "body": { "text": "Slot?" }, "action": { "buttons": [
                { "type": "reply", "reply": { "id": "OK:1", "title": "Yes" } },
                { "type": "reply", "reply": { "id": "NO:1", "title": "Other time" } } ] } } }))
        .unwrap();
        let Content::Interactive { buttons, .. } = interactive.content else { panic!("not interactive") };
        assert_eq!(buttons[1].payload.as_deref(), Some("NO:1"));
        let dup = json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "interactive",
            "interactive": { "type": "button", "body": { "text": "Slot?" }, "action": { "buttons": [
                { "type": "reply", "reply": { "id": "A", "title": "Yes" } },
                { "type": "reply", "reply": { "id": "B", "title": "Yes" } } ] } } });
        assert_eq!(code(dup), 131009);
        let doc = check(json!({ "messaging_product": "whatsapp", "to": "919812345678", "type": "document",
                                "document": { "link": "https://example.org/a.pdf" } }))
        .unwrap();
        assert_eq!(doc.content.message_type(), "document");
    }

    #[test]
    fn garbage_never_panics() {
        for body in [&b""[..], b"{", b"[]", b"\"x\"", b"\xff\xfe", b"{\"messaging_product\":[]}"] {
            assert!(validate_send(body, &number(), &registry()).is_err());
        }
    }

    #[test]
    fn phones_normalise_to_digits() {
        assert_eq!(normalise_phone("+1 (650) 555-1234").as_deref(), Some("16505551234"));
        assert_eq!(normalise_phone("0123456789"), None);
        assert_eq!(normalise_phone("1234567"), None);
        assert_eq!(normalise_phone("1234567890123456"), None);
        assert_eq!(normalise_phone("12345678a"), None);
    }

    #[test]
    fn hydration_handles_two_digit_placeholders() {
        let params: Vec<String> = (1..=10).map(|i| format!("p{i}")).collect();
        assert_eq!(hydrate("{{1}}-{{10}}", &params), "p1-p10");
    }
}
