//! The WhatsApp Business Cloud API as Careline sees it.
//!
//! - [`types`]: the send request (template with body parameters and quick-reply payloads,
//!   text) and Meta's success and error answers.
//! - [`client`]: `POST /{version}/{phone-number-id}/messages`, with failures split into
//!   "Meta refused", "nothing was sent" and "outcome unknown".
//! - [`errors`]: Meta's error codes as one table of decisions.
//! - [`webhook`]: lenient types for the webhook envelope, statuses and patient replies.
//! - [`signature`]: `X-Hub-Signature-256` over the raw body.
//! - [`redact`]: masking phone numbers for logs.
//!
//! No I/O happens outside [`client`].
#![forbid(unsafe_code)]

pub mod client;
pub mod errors;
pub mod redact;
pub mod signature;
pub mod types;
pub mod webhook;

pub use client::{Accepted, AccessToken, ClientSettings, SendError, UnknownOutcome, WhatsAppClient};
pub use errors::{ErrorClass, classify};
pub use redact::mask_phone;
pub use signature::{SignatureError, sign, verify_signature};
pub use types::SendRequest;
pub use webhook::WebhookEnvelope;
