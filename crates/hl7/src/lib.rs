//! HL7 v2 for Careline, without I/O: MLLP framing ([`mllp`]), message parsing with the
//! sender's own delimiters and escapes ([`message`]), HL7 date/times ([`datetime`]), SIU
//! scheduling messages read into Careline's vocabulary ([`siu`]) and acknowledgements
//! ([`ack`]).
//!
//! Nothing here panics on input: every function that reads bytes from a hospital system
//! returns an error or an [`ack::Issue`] instead, and the crate's tests feed it random and
//! mutated messages to keep it that way.
#![forbid(unsafe_code)]

pub mod ack;
pub mod datetime;
pub mod message;
pub mod mllp;
pub mod siu;

pub use ack::{Ack, AckCode, AckMode, ErrorCode, Issue, Severity};
pub use message::{Location, Message, ParseError};
pub use siu::{SiuReport, Trigger};
