//! FHIR R4 for Careline, with no I/O: the subset of `Patient`, `Appointment`, `Consent` and
//! `Bundle` Careline reads ([`resources`]), reading a request body into one of them with the
//! path of any element of the wrong type ([`read`]), mapping them to Careline's vocabulary
//! ([`map`], [`bundle`]), and the `OperationOutcome` every answer carries ([`outcome`]).
//!
//! Only what Careline uses is declared; every other element is ignored, so a full resource
//! from an EHR is accepted as it is. The mapping does not validate values the way the JSON
//! API does (ids, phone numbers, language tags, facilities): ingest runs the JSON API's own
//! validation on what the mapping reports, and the mapping says where in the resource each
//! value came from so an error can name the FHIR element.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod map;
pub mod outcome;
pub mod read;
pub mod resources;

pub use outcome::{Issue, IssueCode, OperationOutcome, Severity};
pub use read::{ReadError, Resource, read_resource};
