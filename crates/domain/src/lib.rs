//! Careline's domain: the vocabulary every service shares, with no I/O.
//!
//! Phone numbers, consent, appointments, the events that travel over RabbitMQ, per-facility
//! configuration, reminder planning (cadence, quiet hours, time zones) and template rendering
//! limited to whitelisted fields.
#![forbid(unsafe_code)]

pub mod clock;
pub mod consent;
pub mod events;
pub mod facility;
pub mod keywords;
pub mod phone;
pub mod plan;
pub mod reply;
pub mod service_reply;
pub mod status;
pub mod template;

pub use clock::{Clock, ManualClock, SystemClock};
pub use phone::{Phone, PhoneError};
