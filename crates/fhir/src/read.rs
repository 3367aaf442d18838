//! Reading a request body into one of the resources Careline accepts.
//!
//! The body is read as JSON first (a syntax error has no element to name), then its
//! `resourceType` decides which resource it is read as; an element of the wrong type is then
//! named by its path. A [`ReadError`] is a `400 Bad Request` in FHIR terms.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::outcome::{Issue, IssueCode};
use crate::resources::{Appointment, Bundle, Consent, Patient};

/// A resource Careline accepts (boxed: they differ a lot in size, and a request holds few).
#[derive(Debug, Clone)]
pub enum Resource {
    Patient(Box<Patient>),
    Appointment(Box<Appointment>),
    Consent(Box<Consent>),
    Bundle(Box<Bundle>),
}

impl Resource {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Patient(_) => "Patient",
            Self::Appointment(_) => "Appointment",
            Self::Consent(_) => "Consent",
            Self::Bundle(_) => "Bundle",
        }
    }
}

/// Why a body is not a resource Careline can read. `resource_type` is the type the issue's
/// element is relative to, when the body got that far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub resource_type: Option<String>,
    pub issue: Issue,
}

impl ReadError {
    fn new(resource_type: Option<&str>, code: IssueCode, expression: Option<&str>, text: impl Into<String>) -> Self {
        Self { resource_type: resource_type.map(str::to_owned), issue: Issue::error(code, expression, text) }
    }
}

/// Reads a request body.
pub fn read_resource(bytes: &[u8]) -> Result<Resource, ReadError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ReadError::new(None, IssueCode::Structure, None, format!("the body is not valid JSON: {e}")))?;
    resource_from_value(value)
}

/// Reads a JSON value (a whole body, or a Bundle entry's `resource`).
pub fn resource_from_value(value: Value) -> Result<Resource, ReadError> {
    let Value::Object(object) = &value else {
        return Err(ReadError::new(None, IssueCode::Structure, None, "a FHIR resource must be a JSON object"));
    };
    let resource_type = match object.get("resourceType") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(ReadError::new(
                None,
                IssueCode::Structure,
                Some("resourceType"),
                "resourceType must be a string",
            ));
        }
        None => {
            return Err(ReadError::new(None, IssueCode::Required, Some("resourceType"), "resourceType is missing"));
        }
    };
    match resource_type.as_str() {
        "Patient" => typed(value, "Patient").map(Resource::Patient),
        "Appointment" => typed(value, "Appointment").map(Resource::Appointment),
        "Consent" => typed(value, "Consent").map(Resource::Consent),
        "Bundle" => typed(value, "Bundle").map(Resource::Bundle),
        other => Err(ReadError::new(
            None,
            IssueCode::NotSupported,
            Some("resourceType"),
            format!(
                "resourceType '{}' is not accepted; Careline reads Patient, Appointment, Consent and Bundle",
                printable(other)
            ),
        )),
    }
}

fn typed<T: DeserializeOwned>(value: Value, resource_type: &str) -> Result<T, ReadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let expression = if path == "." { "" } else { path.as_str() };
        ReadError::new(
            Some(resource_type),
            IssueCode::Structure,
            Some(expression),
            format!("element has the wrong type or shape: {}", e.inner()),
        )
    })
}

/// At most 64 printable characters of a value, for a diagnostic.
pub(crate) fn printable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> ReadError {
        read_resource(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn wrong_types_are_named_by_their_path_in_the_resource() {
        let e = error(r#"{"resourceType":"Appointment","participant":[{"actor":{"reference":7}}]}"#);
        assert_eq!(e.resource_type.as_deref(), Some("Appointment"));
        assert_eq!(e.issue.expression.as_deref(), Some("participant[0].actor.reference"));
        assert_eq!(e.issue.code, IssueCode::Structure);
        let e = error(r#"{"resourceType":"Appointment","minutesDuration":"twenty"}"#);
        assert_eq!(e.issue.expression.as_deref(), Some("minutesDuration"));
    }

    #[test]
    fn unknown_elements_are_ignored() {
        let r = read_resource(br#"{"resourceType":"Patient","id":"P1","birthDate":"1985-04-12","_id":{"x":1}}"#);
        assert!(matches!(r, Ok(Resource::Patient(p)) if p.id.as_deref() == Some("P1")));
    }

    #[test]
    fn bodies_that_are_not_resources_are_refused() {
        assert_eq!(error("{").issue.code, IssueCode::Structure);
        assert_eq!(error("[1]").issue.code, IssueCode::Structure);
        assert_eq!(error(r#"{"id":"x"}"#).issue.code, IssueCode::Required);
        let e = error(r#"{"resourceType":"Observation"}"#);
        assert_eq!(e.issue.code, IssueCode::NotSupported);
        assert_eq!(e.issue.expression.as_deref(), Some("resourceType"));
    }
}
