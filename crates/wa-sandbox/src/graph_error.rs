//! Errors in the exact shape the Graph API answers them.
//!
//! `{"error":{"message":"(#132001) …","type":"OAuthException","code":132001,
//! "error_data":{"messaging_product":"whatsapp","details":"…"},"fbtrace_id":"…"}}`, with the
//! HTTP status Meta uses for the code: 401 for authentication, 403 for permissions, 500 for
//! the sandbox's injected server errors, 400 for everything else (throttles included — which
//! is why clients must branch on `code`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

/// One Graph error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status of the answer.
    pub http_status: u16,
    /// `error.code`.
    pub code: i64,
    /// `error.type`.
    pub error_type: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.error_data.details`; omitted when `None`.
    pub details: Option<String>,
    /// `error.error_subcode`; omitted when `None`.
    pub error_subcode: Option<i64>,
    /// `error.is_transient`; omitted when `None`.
    pub is_transient: Option<bool>,
}

/// The HTTP status Meta uses for an error code.
pub fn http_status_for(code: i64) -> u16 {
    match code {
        0 | 102 | 104 | 190 => 401,
        10 | 200..=299 => 403,
        _ => 400,
    }
}

impl GraphError {
    /// A WhatsApp error with Meta's title for `code` in the message and `details`.
    pub fn whatsapp(code: i64, details: impl Into<String>) -> Self {
        Self {
            http_status: http_status_for(code),
            code,
            error_type: "OAuthException",
            message: format!("(#{code}) {}", careline_whatsapp::errors::title(code)),
            details: Some(details.into()),
            error_subcode: None,
            is_transient: None,
        }
    }

    /// `(#100) <what>`: a missing or invalid request field.
    pub fn invalid_parameter(what: impl Into<String>) -> Self {
        let what = what.into();
        Self {
            http_status: 400,
            code: 100,
            error_type: "OAuthException",
            message: format!("(#100) {what}"),
            details: Some(what),
            error_subcode: None,
            is_transient: None,
        }
    }

    /// The URL names a phone number id this WABA does not have.
    pub fn unknown_object(id: &str) -> Self {
        Self {
            http_status: 400,
            code: 100,
            error_type: "GraphMethodException",
            message: format!(
                "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
            details: None,
            error_subcode: Some(33),
            is_transient: None,
        }
    }

    /// Missing or wrong access token.
    pub fn invalid_token(missing: bool) -> Self {
        Self {
            http_status: 401,
            code: 190,
            error_type: "OAuthException",
            message: if missing {
                "An access token is required to request this resource.".to_owned()
            } else {
                "Invalid OAuth access token - Cannot parse access token".to_owned()
            },
            details: None,
            error_subcode: None,
            is_transient: None,
        }
    }

    /// Graph's generic transient server error (used for injected 500s).
    pub fn internal() -> Self {
        Self {
            http_status: 500,
            code: 2,
            error_type: "OAuthException",
            message: "An unexpected error has occurred. Please retry your request later.".to_owned(),
            details: None,
            error_subcode: None,
            is_transient: Some(true),
        }
    }

    /// Overrides the HTTP status.
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = status;
        self
    }

    /// The JSON body, with a fresh `fbtrace_id`.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "fbtrace_id": fbtrace_id(),
        });
        if let Some(details) = &self.details {
            error["error_data"] = json!({ "messaging_product": "whatsapp", "details": details });
        }
        if let Some(subcode) = self.error_subcode {
            error["error_subcode"] = json!(subcode);
        }
        if let Some(transient) = self.is_transient {
            error["is_transient"] = json!(transient);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// Meta's trace ids look like `Az8or2yhqkZfEZ-_4Qn_Bam`.
fn fbtrace_id() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(23).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use careline_whatsapp::types::ErrorResponse;

    #[test]
    fn bodies_parse_as_metas_error_shape() {
        for err in [
            GraphError::whatsapp(132001, "template name (x) does not exist in en"),
            GraphError::invalid_parameter("The parameter to is required."),
            GraphError::unknown_object("123"),
            GraphError::invalid_token(true),
            GraphError::internal(),
        ] {
            let parsed: ErrorResponse = serde_json::from_value(err.body()).unwrap();
            assert_eq!(parsed.error.code, err.code);
            assert_eq!(parsed.error.error_type, err.error_type);
            assert_eq!(parsed.error.fbtrace_id.as_ref().map(String::len), Some(23));
            assert_eq!(parsed.error.details(), err.details.as_deref());
        }
        let e = GraphError::whatsapp(130429, "too many");
        assert_eq!(e.message, "(#130429) Rate limit hit");
        assert_eq!(e.http_status, 400);
        assert_eq!(GraphError::whatsapp(190, "").http_status, 401);
    }
}
