//! The send request and Meta's synchronous answers to it (`POST /{phone-number-id}/messages`).
//!
//! The shapes follow Meta's Cloud API reference: a message's `type` names the object that carries
//! its content (`"type":"template","template":{…}`), template button `index` is a *string*, and
//! `biz_opaque_callback_data` is echoed back on status webhooks — Careline puts its outbox id
//! there (never PHI) so a status can be matched even when the send's answer was lost.
//!
//! Response types are lenient on purpose: Meta adds fields over time, so unknown fields are
//! ignored and everything that may be absent is an `Option`.

use serde::{Deserialize, Serialize};

/// The only `messaging_product` the Cloud API accepts.
pub const MESSAGING_PRODUCT: &str = "whatsapp";

/// Meta's documented maximum length of a text message body, in characters.
pub const TEXT_BODY_MAX_CHARS: usize = 4096;

/// One `POST /{phone-number-id}/messages` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// Always `"whatsapp"`.
    pub messaging_product: String,
    /// `"individual"`; Careline never messages groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_type: Option<String>,
    /// The recipient's phone number, digits with country code (a leading `+` is accepted).
    pub to: String,
    /// The message content, tagged by `type`.
    #[serde(flatten)]
    pub content: MessageContent,
    /// Echoed on status webhooks; Careline's outbox id so statuses match even if the answer
    /// to this request is lost. Readable by every app subscribed to the WABA: never put PHI here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    /// Quote a previous message (`context.message_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
}

impl SendRequest {
    /// A template message to `to` (an approved template is the only thing that may be sent
    /// outside the 24 h customer-service window, which is where reminders live).
    pub fn template(to: impl Into<String>, template: Template) -> Self {
        Self::new(to, MessageContent::Template { template })
    }

    /// A free-form text message; only deliverable inside an open customer-service window.
    pub fn text(to: impl Into<String>, body: impl Into<String>) -> Self {
        Self::new(to, MessageContent::Text { text: TextBody { body: body.into(), preview_url: None } })
    }

    fn new(to: impl Into<String>, content: MessageContent) -> Self {
        Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            recipient_type: Some("individual".to_owned()),
            to: to.into(),
            content,
            biz_opaque_callback_data: None,
            context: None,
        }
    }

    /// Sets `biz_opaque_callback_data` (an outbox id, never PHI).
    pub fn with_callback_data(mut self, data: impl Into<String>) -> Self {
        self.biz_opaque_callback_data = Some(data.into());
        self
    }

    /// The `type` field's value, for logs and metrics.
    pub fn message_type(&self) -> &'static str {
        match &self.content {
            MessageContent::Template { .. } => "template",
            MessageContent::Text { .. } => "text",
        }
    }
}

/// `{"message_id": "wamid…"}`: the message this one quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyContext {
    /// The quoted message's wamid.
    pub message_id: String,
}

/// The content of a message, serialised as `"type": "<kind>", "<kind>": {…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// `"type": "template"`.
    Template {
        /// The template object.
        template: Template,
    },
    /// `"type": "text"`.
    Text {
        /// The text object.
        text: TextBody,
    },
}

/// `text` object of a text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextBody {
    /// At most [`TEXT_BODY_MAX_CHARS`] characters.
    pub body: String,
    /// Ask the client to render a link preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<bool>,
}

/// `template` object: which approved template, which translation, and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The template's name as approved at Meta.
    pub name: String,
    /// The approved translation; the code must match exactly (`en` ≠ `en_US`) or Meta answers
    /// 132001.
    pub language: Language,
    /// Header, body and button parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

impl Template {
    /// A template with no parameters yet.
    pub fn new(name: impl Into<String>, language_code: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            language: Language { code: language_code.into(), policy: None },
            components: Vec::new(),
        }
    }

    /// Adds a body component with positional text parameters `{{1}}`, `{{2}}`, … in order.
    pub fn with_body_text<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let parameters = values.into_iter().map(Parameter::text).collect();
        self.components.push(Component::Body { parameters });
        self
    }

    /// Adds a quick-reply button component: the patient's tap comes back with `payload`.
    /// `index` is the button's position in the approved template.
    pub fn with_quick_reply(mut self, index: usize, payload: impl Into<String>) -> Self {
        self.components.push(Component::Button {
            sub_type: ButtonSubType::QuickReply,
            index: index.to_string(),
            parameters: vec![Parameter::Payload { payload: payload.into() }],
        });
        self
    }
}

/// `language` object of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Language {
    /// The translation's code (`en`, `en_US`, `pt_BR`, …).
    pub code: String,
    /// Legacy `"deterministic"`; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One template component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Component {
    /// Header parameters.
    Header {
        /// In order.
        parameters: Vec<Parameter>,
    },
    /// Body parameters, `{{1}}` first.
    Body {
        /// In order.
        parameters: Vec<Parameter>,
    },
    /// Parameters of one button.
    Button {
        /// Which kind of button this is in the approved template.
        sub_type: ButtonSubType,
        /// The button's position in the approved template, as a string (`"0"`).
        index: String,
        /// A quick-reply button takes one `payload` parameter.
        parameters: Vec<Parameter>,
    },
}

/// A button's kind (`sub_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    /// Returns its payload in an inbound `button` message.
    QuickReply,
    /// A URL button with a dynamic suffix.
    Url,
    /// Copies a code to the clipboard.
    CopyCode,
}

/// One parameter of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Parameter {
    /// A text value (`{{n}}` in a body or header).
    Text {
        /// The value; Meta refuses new-lines, tabs and more than four consecutive spaces.
        text: String,
        /// For templates created with `parameter_format: NAMED`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    /// A quick-reply button's payload, returned when the patient taps it.
    Payload {
        /// Careline's `ACTION:<job id>`; no PHI.
        payload: String,
    },
}

impl Parameter {
    /// A positional text parameter.
    pub fn text(value: impl Into<String>) -> Self {
        Self::Text { text: value.into(), parameter_name: None }
    }
}

/// HTTP 200 body of a send: the message was *accepted*, which says nothing about delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SendResponse {
    /// `"whatsapp"`.
    #[serde(default)]
    pub messaging_product: Option<String>,
    /// One entry per recipient: `input` echoes `to`, `wa_id` is Meta's normalised id.
    #[serde(default)]
    pub contacts: Vec<ResponseContact>,
    /// One entry per message created.
    #[serde(default)]
    pub messages: Vec<ResponseMessage>,
}

/// `contacts[]` of a send response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponseContact {
    /// What the request's `to` was.
    #[serde(default)]
    pub input: Option<String>,
    /// The WhatsApp id (normalised number); may differ from `input`.
    #[serde(default)]
    pub wa_id: Option<String>,
    /// The business-scoped user id, when the message was addressed by BSUID.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `messages[]` of a send response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// The wamid that status webhooks and reply `context.id` will carry.
    pub id: String,
    /// `accepted`, `held_for_quality_assessment` or `paused` (template sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// What Meta said about an accepted message, parsed from `message_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptanceStatus {
    /// Queued for delivery (also assumed when Meta omits the field).
    Accepted,
    /// Template pacing: held until early quality feedback; may later fail with 132015.
    HeldForQualityAssessment,
    /// The template is paused; expect a `failed` status.
    Paused,
    /// A value this crate does not know yet.
    #[serde(untagged)]
    Other(String),
}

impl AcceptanceStatus {
    /// Reads `message_status`; absent means plain acceptance (non-template sends omit it).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None | Some("accepted") => Self::Accepted,
            Some("held_for_quality_assessment") => Self::HeldForQualityAssessment,
            Some("paused") => Self::Paused,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Accepted => "accepted",
            Self::HeldForQualityAssessment => "held_for_quality_assessment",
            Self::Paused => "paused",
            Self::Other(s) => s,
        }
    }
}

/// Body of every Graph API error answer: `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiError,
}

/// Meta's error object. Build handling on `code` (and `error_data.details` for humans): Meta
/// is deprecating the title inside `message`, and `error_subcode` is gone since v16.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `"(#130429) Rate limit hit"`.
    #[serde(default)]
    pub message: String,
    /// `OAuthException`, `GraphMethodException`, …
    #[serde(default, rename = "type")]
    pub error_type: String,
    /// The number to branch on.
    pub code: i64,
    /// Deprecated since v16 but still seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    /// `{"messaging_product":"whatsapp","details":"…"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    /// Generic Graph hint; informative only, the code table decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_transient: Option<bool>,
    /// Meta's trace id, for support tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

impl ApiError {
    /// `error_data.details`, if any.
    pub fn details(&self) -> Option<&str> {
        self.error_data.as_ref().and_then(|d| d.details.as_deref())
    }
}

/// `error_data` of an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorData {
    /// `"whatsapp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    /// The human explanation Meta recommends showing/logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_request_serialises_like_metas_example() {
        let req = SendRequest::template(
            "919812345678",
            Template::new("appointment_reminder_v2", "en")
                .with_body_text(["Asha", "Tue 12 Nov, 10:30", "City Hospital, Block B"])
                .with_quick_reply(0, "CONFIRM:rem_01JD9Z0K3Q")
                .with_quick_reply(1, "RESCHEDULE:rem_01JD9Z0K3Q"),
        )
        .with_callback_data("rem_01JD9Z0K3Q");
        let expected = json!({
          "messaging_product": "whatsapp",
          "recipient_type": "individual",
          "to": "919812345678",
          "type": "template",
          "biz_opaque_callback_data": "rem_01JD9Z0K3Q",
          "template": {
            "name": "appointment_reminder_v2",
            "language": { "code": "en" },
            "components": [
              { "type": "body", "parameters": [
                  { "type": "text", "text": "Asha" },
                  { "type": "text", "text": "Tue 12 Nov, 10:30" },
                  { "type": "text", "text": "City Hospital, Block B" } ] },
              { "type": "button", "sub_type": "quick_reply", "index": "0",
                "parameters": [ { "type": "payload", "payload": "CONFIRM:rem_01JD9Z0K3Q" } ] },
              { "type": "button", "sub_type": "quick_reply", "index": "1",
                "parameters": [ { "type": "payload", "payload": "RESCHEDULE:rem_01JD9Z0K3Q" } ] }
            ]
          }
        });
        assert_eq!(serde_json::to_value(&req).unwrap(), expected);
        let back: SendRequest = serde_json::from_value(expected).unwrap();
        assert_eq!(back, req);
        assert_eq!(req.message_type(), "template");
    }

    #[test]
    fn a_text_request_serialises_with_type_text() {
        let req = SendRequest::text("919812345678", "Your appointment is confirmed.");
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({ "messaging_product": "whatsapp", "recipient_type": "individual",
                    "to": "919812345678", "type": "text",
                    "text": { "body": "Your appointment is confirmed." } })
        );
    }

    #[test]
    fn a_success_response_parses_with_unknown_fields() {
        let body = r#"{ "messaging_product": "whatsapp",
          "contacts": [ { "input": "+919812345678", "wa_id": "919812345678" } ],
          "messages": [ { "id": "wamid.HBgM", "message_status": "held_for_quality_assessment",
                          "something_new": 1 } ], "extra": true }"#;
        let resp: SendResponse = serde_json::from_str(body).unwrap();
        assert_eq!(resp.messages[0].id, "wamid.HBgM");
        assert_eq!(resp.contacts[0].wa_id.as_deref(), Some("919812345678"));
        assert_eq!(
            AcceptanceStatus::parse(resp.messages[0].message_status.as_deref()),
            AcceptanceStatus::HeldForQualityAssessment
        );
        assert_eq!(AcceptanceStatus::parse(None), AcceptanceStatus::Accepted);
        assert_eq!(AcceptanceStatus::parse(Some("new_thing")).as_str(), "new_thing");
    }

    #[test]
    fn an_error_response_parses_metas_shape() {
        let body = r#"{ "error": {
            "message": "(#130429) Rate limit hit",
            "type": "OAuthException",
            "code": 130429,
            "error_data": { "messaging_product": "whatsapp",
                            "details": "Message failed to send because there were too many messages sent from this phone number in a short period of time" },
            "error_subcode": 2494055,
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam" } }"#;
        let resp: ErrorResponse = serde_json::from_str(body).unwrap();
        assert_eq!(resp.error.code, 130429);
        assert_eq!(resp.error.error_type, "OAuthException");
        assert!(resp.error.details().unwrap().starts_with("Message failed"));
        assert_eq!(resp.error.fbtrace_id.as_deref(), Some("Az8or2yhqkZfEZ-_4Qn_Bam"));
    }
}
