//! Webhook payloads Meta POSTs to Careline: status updates and inbound patient messages.
//!
//! Rules this module encodes:
//! - Verify the signature over the raw bytes first ([`crate::signature`]), parse second.
//! - Parsing must never be the reason an event is lost or a request panics: Meta adds fields
//!   and message types over time, relays reformat numbers, and an attacker who got past nothing
//!   can still send garbage. Every field is optional and read leniently (a field of the wrong
//!   JSON type becomes `None` instead of failing the whole envelope), unknown fields are
//!   ignored, unknown message or status types are kept as strings. Only input that is not a
//!   JSON object at all is an error.
//! - One POST can carry several entries, changes, statuses and messages: iterate them all
//!   ([`WebhookEnvelope::statuses`], [`WebhookEnvelope::messages`]).
//! - Timestamps are strings of Unix seconds.
//!
//! [`to_meta_json`] serialises the way Meta does (`/` as `\/`, non-ASCII as `\uXXXX`), so the
//! sandbox and tests produce byte-for-byte realistic bodies.

use std::io;

use serde::{Deserialize, Serialize};

use crate::errors::{ErrorClass, classify};

/// Why a webhook body could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum WebhookParseError {
    /// Not JSON.
    #[error("webhook body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("webhook body is not a JSON object")]
    NotAnObject,
}

/// Top level: `{"object": "whatsapp_business_account", "entry": [...]}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct WebhookEnvelope {
    /// `"whatsapp_business_account"`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub object: Option<String>,
    /// One per WABA.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub entry: Vec<Entry>,
}

impl WebhookEnvelope {
    /// Parses a webhook body. Fails only if the body is not a JSON object; never panics.
    pub fn parse(raw: &[u8]) -> Result<Self, WebhookParseError> {
        let value: serde_json::Value = serde_json::from_slice(raw)?;
        if !value.is_object() {
            return Err(WebhookParseError::NotAnObject);
        }
        Ok(Self::deserialize(value)?)
    }

    /// Every change value in every entry, in order.
    pub fn changes(&self) -> impl Iterator<Item = &ChangeValue> {
        self.entry.iter().flat_map(|e| e.changes.iter()).filter_map(|c| c.value.as_ref())
    }

    /// Every status update, with the metadata (which business number) of its change.
    pub fn statuses(&self) -> impl Iterator<Item = (Option<&Metadata>, &Status)> {
        self.changes().flat_map(|v| v.statuses.iter().map(move |s| (v.metadata.as_ref(), s)))
    }

    /// Every inbound message, with the metadata of its change.
    pub fn messages(&self) -> impl Iterator<Item = (Option<&Metadata>, &InboundMessage)> {
        self.changes().flat_map(|v| v.messages.iter().map(move |m| (v.metadata.as_ref(), m)))
    }

    /// Every system/app-level error (`value.errors`), with the metadata of its change.
    pub fn errors(&self) -> impl Iterator<Item = (Option<&Metadata>, &WebhookError)> {
        self.changes().flat_map(|v| v.errors.iter().map(move |e| (v.metadata.as_ref(), e)))
    }
}

/// `entry[]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Entry {
    /// The WABA id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// The changes.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub changes: Vec<Change>,
}

/// `entry[].changes[]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Change {
    /// `messages`, `message_template_status_update`, `user_preferences`, …
    #[serde(default, deserialize_with = "lenient::string")]
    pub field: Option<String>,
    /// What happened.
    #[serde(default, deserialize_with = "lenient::option")]
    pub value: Option<ChangeValue>,
}

/// `changes[].value`: a union of the fields Careline reads from the `messages`,
/// `message_template_status_update` and `user_preferences` webhook fields.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ChangeValue {
    /// `"whatsapp"`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub messaging_product: Option<String>,
    /// Which business number this is about: route by `phone_number_id`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub metadata: Option<Metadata>,
    /// Senders of `messages` (profile name, wa_id).
    #[serde(default, deserialize_with = "lenient::vec")]
    pub contacts: Vec<Contact>,
    /// Inbound patient messages.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub messages: Vec<InboundMessage>,
    /// Status updates of messages Careline sent.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub statuses: Vec<Status>,
    /// System/app-level errors.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub errors: Vec<WebhookError>,
    /// `message_template_status_update`: APPROVED, REJECTED, PAUSED, DISABLED, …
    #[serde(default, deserialize_with = "lenient::string")]
    pub event: Option<String>,
    /// `message_template_status_update`: the template's id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message_template_id: Option<String>,
    /// `message_template_status_update`: the template's name.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message_template_name: Option<String>,
    /// `message_template_status_update`: the translation's code.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message_template_language: Option<String>,
    /// `message_template_status_update`: why.
    #[serde(default, deserialize_with = "lenient::string")]
    pub reason: Option<String>,
    /// `user_preferences`: marketing stop/resume.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub user_preferences: Vec<UserPreference>,
}

/// `value.metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Metadata {
    /// The business number as displayed.
    #[serde(default, deserialize_with = "lenient::string")]
    pub display_phone_number: Option<String>,
    /// The Graph id of the business number.
    #[serde(default, deserialize_with = "lenient::string")]
    pub phone_number_id: Option<String>,
}

/// `value.contacts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Contact {
    /// The WhatsApp profile.
    #[serde(default, deserialize_with = "lenient::option")]
    pub profile: Option<Profile>,
    /// The sender's WhatsApp id (phone digits); may be absent for username users.
    #[serde(default, deserialize_with = "lenient::string")]
    pub wa_id: Option<String>,
    /// Business-scoped user id (2026 usernames).
    #[serde(default, deserialize_with = "lenient::string")]
    pub user_id: Option<String>,
}

/// `contacts[].profile`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Profile {
    /// The name the user set; personal data, never log it.
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
}

/// One `statuses[]` item.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Status {
    /// The wamid from the send response.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// `sent`, `delivered`, `read`, `failed`, … (see [`Status::kind`]).
    #[serde(default, deserialize_with = "lenient::string")]
    pub status: Option<String>,
    /// Unix seconds, as a string.
    #[serde(default, deserialize_with = "lenient::string")]
    pub timestamp: Option<String>,
    /// The recipient's phone digits (absent when sent by BSUID).
    #[serde(default, deserialize_with = "lenient::string")]
    pub recipient_id: Option<String>,
    /// The recipient's BSUID, when messaged by it.
    #[serde(default, deserialize_with = "lenient::string")]
    pub recipient_user_id: Option<String>,
    /// What the send put in `biz_opaque_callback_data` (Careline's outbox id).
    #[serde(default, deserialize_with = "lenient::string")]
    pub biz_opaque_callback_data: Option<String>,
    /// Pricing of the message.
    #[serde(default, deserialize_with = "lenient::option")]
    pub pricing: Option<Pricing>,
    /// Legacy conversation object; kept raw, don't depend on it.
    #[serde(default, deserialize_with = "lenient::option")]
    pub conversation: Option<serde_json::Value>,
    /// Why a `failed` status failed.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub errors: Vec<WebhookError>,
}

impl Status {
    /// The status as an enum; unknown values are [`StatusKind::Other`].
    pub fn kind(&self) -> StatusKind {
        StatusKind::parse(self.status.as_deref())
    }

    /// `timestamp` as Unix seconds, if it is a number.
    pub fn timestamp_secs(&self) -> Option<i64> {
        parse_unix_secs(self.timestamp.as_deref())
    }
}

/// A status's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// Left Meta's servers.
    Sent,
    /// Reached the device (may never be reported: `read` implies it).
    Delivered,
    /// Opened.
    Read,
    /// Could not be delivered; see `errors`.
    Failed,
    /// A voice message was played.
    Played,
    /// The user deleted the message.
    Deleted,
    /// Anything else or absent.
    Other,
}

impl StatusKind {
    /// Reads a `status` value.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("sent") => Self::Sent,
            Some("delivered") => Self::Delivered,
            Some("read") => Self::Read,
            Some("failed") => Self::Failed,
            Some("played") => Self::Played,
            Some("deleted") => Self::Deleted,
            _ => Self::Other,
        }
    }
}

/// `statuses[].pricing`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Pricing {
    /// Deprecated.
    #[serde(default, deserialize_with = "lenient::option")]
    pub billable: Option<bool>,
    /// `PMP` since July 2025.
    #[serde(default, deserialize_with = "lenient::string")]
    pub pricing_model: Option<String>,
    /// `utility`, `marketing`, `service`, …
    #[serde(default, deserialize_with = "lenient::string")]
    pub category: Option<String>,
    /// `regular`, `free_customer_service`, `free_entry_point`.
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub pricing_type: Option<String>,
}

/// An error in a status, a message, or `value.errors`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct WebhookError {
    /// Meta's error code; branch on this.
    #[serde(default, deserialize_with = "lenient::integer")]
    pub code: Option<i64>,
    /// Short title (being deprecated).
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// Message.
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
    /// `{"details": "…"}`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub error_data: Option<WebhookErrorData>,
    /// Link to Meta's error page.
    #[serde(default, deserialize_with = "lenient::string")]
    pub href: Option<String>,
}

impl WebhookError {
    /// The class of this error's code ([`ErrorClass::Unknown`] without a code).
    pub fn class(&self) -> ErrorClass {
        self.code.map_or(ErrorClass::Unknown, classify)
    }

    /// `error_data.details`, if any.
    pub fn details(&self) -> Option<&str> {
        self.error_data.as_ref().and_then(|d| d.details.as_deref())
    }
}

/// `errors[].error_data`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct WebhookErrorData {
    /// Human explanation.
    #[serde(default, deserialize_with = "lenient::string")]
    pub details: Option<String>,
}

/// One `messages[]` item: something a patient sent.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct InboundMessage {
    /// Sender's phone digits (absent for username-only users).
    #[serde(default, deserialize_with = "lenient::string")]
    pub from: Option<String>,
    /// Sender's BSUID.
    #[serde(default, deserialize_with = "lenient::string")]
    pub from_user_id: Option<String>,
    /// The inbound wamid: the dedupe key (delivery is at-least-once).
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// Unix seconds, as a string.
    #[serde(default, deserialize_with = "lenient::string")]
    pub timestamp: Option<String>,
    /// `text`, `button`, `interactive`, `image`, `unsupported`, … kept as sent.
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub message_type: Option<String>,
    /// For `type: text`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub text: Option<InboundText>,
    /// For `type: button` (a template quick-reply tap).
    #[serde(default, deserialize_with = "lenient::option")]
    pub button: Option<ButtonTap>,
    /// For `type: interactive`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub interactive: Option<Interactive>,
    /// The message this one answers (`context.id` = the wamid Careline sent).
    #[serde(default, deserialize_with = "lenient::option")]
    pub context: Option<MessageContext>,
    /// Errors on an unsupported inbound message.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub errors: Vec<WebhookError>,
}

impl InboundMessage {
    /// What the patient did, as an enum a reply handler can match on.
    pub fn content(&self) -> InboundContent<'_> {
        match self.message_type.as_deref() {
            Some("text") => match self.text.as_ref().and_then(|t| t.body.as_deref()) {
                Some(body) => InboundContent::Text(body),
                None => InboundContent::Other(Some("text")),
            },
            Some("button") => {
                let button = self.button.as_ref();
                InboundContent::QuickReply {
                    payload: button.and_then(|b| b.payload.as_deref()),
                    text: button.and_then(|b| b.text.as_deref()),
                }
            }
            Some("interactive") => {
                let interactive = self.interactive.as_ref();
                if let Some(reply) = interactive.and_then(|i| i.button_reply.as_ref()) {
                    InboundContent::ButtonReply { id: reply.id.as_deref(), title: reply.title.as_deref() }
                } else if let Some(reply) = interactive.and_then(|i| i.list_reply.as_ref()) {
                    InboundContent::ListReply {
                        id: reply.id.as_deref(),
                        title: reply.title.as_deref(),
                        description: reply.description.as_deref(),
                    }
                } else {
                    InboundContent::Other(Some("interactive"))
                }
            }
            other => InboundContent::Other(other),
        }
    }

    /// The wamid this message replies to, if any.
    pub fn context_id(&self) -> Option<&str> {
        self.context.as_ref().and_then(|c| c.id.as_deref())
    }

    /// `timestamp` as Unix seconds, if it is a number.
    pub fn timestamp_secs(&self) -> Option<i64> {
        parse_unix_secs(self.timestamp.as_deref())
    }
}

/// What an inbound message carries, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundContent<'a> {
    /// Typed text (keywords such as STOP live here).
    Text(&'a str),
    /// A template quick-reply tap: `payload` is what Careline set on that button.
    QuickReply {
        /// The payload (or the button text when the send set none).
        payload: Option<&'a str>,
        /// The button's label.
        text: Option<&'a str>,
    },
    /// An interactive reply-button tap.
    ButtonReply {
        /// The `id` Careline set on the button.
        id: Option<&'a str>,
        /// The button's title.
        title: Option<&'a str>,
    },
    /// An interactive list row chosen.
    ListReply {
        /// The row id.
        id: Option<&'a str>,
        /// The row title.
        title: Option<&'a str>,
        /// The row description.
        description: Option<&'a str>,
    },
    /// Media, location, reactions, unknown types, or a known type missing its object: the
    /// `type` as sent.
    Other(Option<&'a str>),
}

/// `messages[].text`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct InboundText {
    /// What the patient typed.
    #[serde(default, deserialize_with = "lenient::string")]
    pub body: Option<String>,
}

/// `messages[].button`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ButtonTap {
    /// The button's label.
    #[serde(default, deserialize_with = "lenient::string")]
    pub text: Option<String>,
    /// The payload set when sending.
    #[serde(default, deserialize_with = "lenient::string")]
    pub payload: Option<String>,
}

/// `messages[].interactive`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Interactive {
    /// `button_reply`, `list_reply`, `nfm_reply`, …
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub interactive_type: Option<String>,
    /// A reply button was tapped.
    #[serde(default, deserialize_with = "lenient::option")]
    pub button_reply: Option<ReplyButton>,
    /// A list row was chosen.
    #[serde(default, deserialize_with = "lenient::option")]
    pub list_reply: Option<ListRow>,
}

/// `interactive.button_reply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ReplyButton {
    /// The id set when sending.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// The button title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
}

/// `interactive.list_reply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ListRow {
    /// The row id set when sending.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// The row title.
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    /// The row description.
    #[serde(default, deserialize_with = "lenient::string")]
    pub description: Option<String>,
}

/// `messages[].context`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct MessageContext {
    /// The business number the quoted message came from.
    #[serde(default, deserialize_with = "lenient::string")]
    pub from: Option<String>,
    /// The quoted message's wamid.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    /// Forwarded by the user.
    #[serde(default, deserialize_with = "lenient::option")]
    pub forwarded: Option<bool>,
    /// Forwarded many times.
    #[serde(default, deserialize_with = "lenient::option")]
    pub frequently_forwarded: Option<bool>,
}

/// `value.user_preferences[]` (marketing stop/resume; utility messages are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct UserPreference {
    /// The user's WhatsApp id.
    #[serde(default, deserialize_with = "lenient::string")]
    pub wa_id: Option<String>,
    /// Free-text detail.
    #[serde(default, deserialize_with = "lenient::string")]
    pub detail: Option<String>,
    /// `marketing_messages`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub category: Option<String>,
    /// `stop` or `resume`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub value: Option<String>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient::string")]
    pub timestamp: Option<String>,
}

fn parse_unix_secs(value: Option<&str>) -> Option<i64> {
    value.and_then(|s| s.trim().parse().ok())
}

/// Serialises `value` as Meta does on the wire: compact JSON with `/` written `\/` and every
/// non-ASCII character written `\uXXXX` (UTF-16, lowercase hex). A body built this way and
/// signed with [`crate::signature::sign`] behaves exactly like Meta's for a consumer.
pub fn to_meta_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, MetaFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// serde_json hands string contents to `write_string_fragment` between the escapes it makes
/// itself (quotes, backslashes, control characters); `/` and non-ASCII only occur there.
struct MetaFormatter;

impl serde_json::ser::Formatter for MetaFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut plain_from = 0;
        for (at, ch) in fragment.char_indices() {
            if ch != '/' && ch.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain_from..at])?;
            if ch == '/' {
                writer.write_all(b"\\/")?;
            } else {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
            plain_from = at + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }
}

/// Deserialisers that turn a field of the wrong shape into "absent" instead of an error, so
/// one odd field never costs the whole webhook.
mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn option<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        let value = Value::deserialize(de)?;
        Ok(T::deserialize(value).ok())
    }

    pub fn vec<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        Ok(match Value::deserialize(de)? {
            Value::Array(items) => items.into_iter().filter_map(|item| T::deserialize(item).ok()).collect(),
            _ => Vec::new(),
        })
    }

    /// Strings as they are; numbers and booleans as their JSON text (ids and timestamps
    /// sometimes arrive unquoted from relays).
    pub fn string<'de, D>(de: D) -> Result<Option<String>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(match Value::deserialize(de)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
    }

    /// Integers, or strings holding one.
    pub fn integer<'de, D>(de: D) -> Result<Option<i64>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(match Value::deserialize(de)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(value: serde_json::Value) -> serde_json::Value {
        json!({ "object": "whatsapp_business_account",
          "entry": [ { "id": "102290129340398", "changes": [ { "field": "messages", "value": value } ] } ] })
    }

    fn parse(value: serde_json::Value) -> WebhookEnvelope {
        WebhookEnvelope::parse(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    #[test]
    fn a_status_batch_parses_with_pricing_and_callback_data() {
        let env = parse(envelope(json!({
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
            "statuses": [
              { "id": "wamid.A", "status": "sent", "timestamp": "1750857384",
                "recipient_id": "919812345678", "biz_opaque_callback_data": "rem_01",
                "pricing": { "billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular" },
                "conversation": { "id": "a75d", "origin": { "type": "utility" } } },
              { "id": "wamid.B", "status": "read", "timestamp": "1750857390", "recipient_id": "919812345679" }
            ] })));
        let statuses: Vec<_> = env.statuses().collect();
        assert_eq!(statuses.len(), 2);
        let (meta, first) = statuses[0];
        assert_eq!(meta.unwrap().phone_number_id.as_deref(), Some("106540352242922"));
        assert_eq!(first.kind(), StatusKind::Sent);
        assert_eq!(first.timestamp_secs(), Some(1_750_857_384));
        assert_eq!(first.biz_opaque_callback_data.as_deref(), Some("rem_01"));
        let pricing = first.pricing.as_ref().unwrap();
        assert_eq!(pricing.pricing_model.as_deref(), Some("PMP"));
        assert_eq!(pricing.pricing_type.as_deref(), Some("regular"));
        assert_eq!(statuses[1].1.kind(), StatusKind::Read);
    }

    #[test]
    fn a_failed_status_carries_its_classified_error() {
        let env = parse(envelope(json!({ "statuses": [
          { "id": "wamid.H", "status": "failed", "timestamp": "1744609253", "recipient_id": "1",
            "errors": [ { "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                          "error_data": { "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number." },
                          "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/" } ] } ] })));
        let (_, status) = env.statuses().next().unwrap();
        assert_eq!(status.kind(), StatusKind::Failed);
        assert_eq!(status.errors[0].code, Some(131047));
        assert_eq!(status.errors[0].class(), ErrorClass::Permanent);
        assert!(status.errors[0].details().unwrap().contains("24 hours"));
    }

    #[test]
    fn inbound_text_button_and_interactive_replies_parse() {
        let env = parse(envelope(json!({
          "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
          "contacts": [ { "profile": { "name": "Sheena Nelson" }, "wa_id": "16505551234" } ],
          "messages": [
            { "from": "16505551234", "id": "wamid.T", "timestamp": "1749416383", "type": "text",
              "text": { "body": "STOP" } },
            { "context": { "from": "15550783881", "id": "wamid.SENT" }, "from": "16315551234",
              "id": "wamid.BTN", "timestamp": "1749416384", "type": "button",
              "button": { "text": "Confirm", "payload": "CONFIRM:rem_01" } },
            { "context": { "from": "15550783881", "id": "wamid.INT" }, "from": "16315551234",
              "id": "wamid.I", "timestamp": "1749416385", "type": "interactive",
              "interactive": { "type": "button_reply", "button_reply": { "id": "SLOT_OK:rem_01", "title": "Yes" } } },
            { "from": "16315551234", "id": "wamid.L", "timestamp": "1749416386", "type": "interactive",
              "interactive": { "type": "list_reply", "list_reply": { "id": "r1", "title": "Mon", "description": "9:00" } } }
          ] })));
        let messages: Vec<_> = env.messages().map(|(_, m)| m).collect();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0].content(), InboundContent::Text("STOP"));
        assert_eq!(
            messages[1].content(),
            InboundContent::QuickReply { payload: Some("CONFIRM:rem_01"), text: Some("Confirm") }
        );
        assert_eq!(messages[1].context_id(), Some("wamid.SENT"));
        assert_eq!(
            messages[2].content(),
            InboundContent::ButtonReply { id: Some("SLOT_OK:rem_01"), title: Some("Yes") }
        );
        assert_eq!(
            messages[3].content(),
            InboundContent::ListReply { id: Some("r1"), title: Some("Mon"), description: Some("9:00") }
        );
        assert_eq!(messages[0].timestamp_secs(), Some(1_749_416_383));
        let contact = &env.changes().next().unwrap().contacts[0];
        assert_eq!(contact.wa_id.as_deref(), Some("16505551234"));
    }

    #[test]
    fn unknown_types_and_fields_are_tolerated() {
        let env = parse(envelope(json!({
          "brand_new_field": { "x": 1 },
          "messages": [
            { "from": "1", "id": "wamid.X", "timestamp": "1", "type": "hologram", "hologram": {} },
            { "from": "1", "id": "wamid.U", "type": "unsupported",
              "errors": [ { "code": 131051, "title": "Message type unknown" } ] },
            { "from": "1", "id": "wamid.N", "type": "text" }
          ],
          "statuses": [ { "id": "wamid.S", "status": "teleported", "timestamp": 1750857384 } ] })));
        let messages: Vec<_> = env.messages().map(|(_, m)| m).collect();
        assert_eq!(messages[0].content(), InboundContent::Other(Some("hologram")));
        assert_eq!(messages[1].errors[0].class(), ErrorClass::Permanent);
        assert_eq!(messages[2].content(), InboundContent::Other(Some("text")));
        let (_, status) = env.statuses().next().unwrap();
        assert_eq!(status.kind(), StatusKind::Other);
        // A numeric timestamp from a relay still reads.
        assert_eq!(status.timestamp_secs(), Some(1_750_857_384));
    }

    #[test]
    fn fields_of_the_wrong_shape_become_absent_instead_of_failing() {
        let env = parse(json!({
          "object": 7,
          "entry": [
            "not an entry",
            { "id": ["x"], "changes": { "oops": true } },
            { "changes": [ { "value": "text" }, { "value": {
                "metadata": "not an object",
                "statuses": [ 1, null, { "id": 5, "status": ["sent"], "errors": [ { "code": "131026" } ] } ],
                "messages": { "not": "a list" } } } ] }
          ] }));
        assert_eq!(env.object.as_deref(), Some("7"));
        let statuses: Vec<_> = env.statuses().collect();
        assert_eq!(statuses.len(), 1);
        let (meta, status) = statuses[0];
        assert!(meta.is_none());
        assert_eq!(status.id.as_deref(), Some("5"));
        assert_eq!(status.kind(), StatusKind::Other);
        assert_eq!(status.errors[0].class(), ErrorClass::NotOnWhatsapp);
        assert_eq!(env.messages().count(), 0);
    }

    #[test]
    fn only_non_objects_are_errors() {
        assert!(matches!(WebhookEnvelope::parse(b"not json"), Err(WebhookParseError::NotJson(_))));
        for body in [&b"[]"[..], b"1", b"\"x\"", b"null"] {
            assert!(matches!(WebhookEnvelope::parse(body), Err(WebhookParseError::NotAnObject)));
        }
        assert_eq!(WebhookEnvelope::parse(b"{}").unwrap(), WebhookEnvelope::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: mutate a realistic body byte by byte and truncate it.
        let seed_body = serde_json::to_vec(&envelope(json!({
          "metadata": { "phone_number_id": "1" },
          "statuses": [ { "id": "wamid.A", "status": "sent", "timestamp": "1",
                          "errors": [ { "code": 1, "error_data": { "details": "x" } } ] } ],
          "messages": [ { "type": "button", "button": { "payload": "P" }, "context": { "id": "w" } } ] })))
        .unwrap();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let mut body = seed_body.clone();
            let edits = 1 + next() % 4;
            for _ in 0..edits {
                let at = (next() as usize) % body.len();
                body[at] = (next() % 256) as u8;
            }
            let cut = (next() as usize) % (body.len() + 1);
            if let Ok(env) = WebhookEnvelope::parse(&body) {
                for (_, s) in env.statuses() {
                    let _ = (s.kind(), s.timestamp_secs());
                }
                for (_, m) in env.messages() {
                    let _ = (m.content(), m.context_id());
                }
            }
            let _ = WebhookEnvelope::parse(&body[..cut]);
        }
        let deep = "[".repeat(10_000);
        assert!(WebhookEnvelope::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn meta_json_escapes_slashes_and_non_ascii() {
        let value = json!({ "body": "mangé à 10/11 😀", "url/key": "\"q\"\n" });
        let bytes = to_meta_json(&value).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.is_ascii());
        assert_eq!(text, r#"{"body":"mang\u00e9 \u00e0 10\/11 \ud83d\ude00","url\/key":"\"q\"\n"}"#);
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, value);
    }
}
