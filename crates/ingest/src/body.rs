//! The JSON body extractor: 415 for a body that is not JSON, 413 past the size limit, 400 for
//! malformed JSON or a field of the wrong type (naming the field by its JSON path). Whatever
//! parses is then checked by the handler's validation (422).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::problem::{FieldError, Problem};

/// A JSON request body deserialized as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
            return Err(Problem::UnsupportedMediaType);
        }
        let limit = state.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::TooLarge { limit }
            } else {
                Problem::Malformed { detail: "the request body could not be read".to_owned(), errors: Vec::new() }
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes a body, turning serde's error into a 400 that names the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| malformed(&e))?;
    deserializer.end().map_err(|e| Problem::Malformed {
        detail: format!("the request body is not valid JSON: {e}"),
        errors: vec![FieldError::new("body", "unexpected data after the JSON document")],
    })?;
    Ok(value)
}

fn malformed(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    let path = error.path().to_string();
    let message = inner.to_string();
    // `.` is the document itself; `?` a position serde could not name (after a complete value).
    let known = path.split(".?").next().unwrap_or("").trim_matches('?');
    let field = if known.is_empty() || known == "." { "body".to_owned() } else { known.to_owned() };
    let detail = match inner.classify() {
        serde_json::error::Category::Data => format!("field '{field}' has the wrong type or shape: {message}"),
        _ => format!("the request body is not valid JSON: {message}"),
    };
    Problem::Malformed { detail, errors: vec![FieldError::new(field, message)] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        version: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        state: Option<String>,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Sample>(body.as_bytes()).unwrap_err() {
            Problem::Malformed { errors, .. } => errors[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_the_field_by_its_json_path() {
        assert_eq!(field_of(r#"{"version": "seven"}"#), "version");
        assert_eq!(field_of(r#"{"inner": {"state": 1}}"#), "inner.state");
    }

    #[test]
    fn unknown_fields_and_syntax_errors_are_named() {
        assert_eq!(field_of(r#"{"verzion": 1}"#), "verzion");
        assert_eq!(field_of(r#"{"inner": {"stat": "x"}}"#), "inner.stat");
        assert_eq!(field_of(r#"{"version": 1"#), "body");
        assert_eq!(field_of(r#"{"inner": {"state": 1x}}"#), "inner.state");
        assert_eq!(field_of("not json"), "body");
        assert_eq!(field_of(r#"{"version": 1} trailing"#), "body");
        assert_eq!(field_of(r#"{"version": 1x}"#), "body");
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
