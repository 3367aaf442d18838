//! `OperationOutcome`: how every FHIR answer from Careline explains itself.
//!
//! An [`Issue`] found while reading a resource names its element relative to the resource
//! (`participant[1].actor.reference`); it is rooted when rendered, at the resource type for a
//! resource sent alone (`Appointment.participant[1].actor.reference`) or at its entry for one
//! inside a Bundle (`Bundle.entry[2].resource.participant[1].actor.reference`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

/// The R4 `IssueType` codes Careline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Login,
    Forbidden,
    CodeInvalid,
    NotSupported,
    NotFound,
    TooCostly,
    BusinessRule,
    Transient,
    Incomplete,
    Informational,
}

/// One finding, its element relative to the resource (`None`: the request as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub expression: Option<String>,
    pub diagnostics: String,
}

impl Issue {
    pub fn error(code: IssueCode, expression: Option<&str>, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            expression: expression.map(str::to_owned),
            diagnostics: diagnostics.into(),
        }
    }

    pub fn warning(code: IssueCode, expression: Option<&str>, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            code,
            expression: expression.map(str::to_owned),
            diagnostics: diagnostics.into(),
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Information,
            code: IssueCode::Informational,
            expression: None,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self.severity, Severity::Error | Severity::Fatal)
    }

    /// The same issue with its element placed under `root` (`Appointment`, `Bundle.entry[2].resource`).
    pub fn rooted(&self, root: &str) -> OutcomeIssue {
        let expression = self.expression.as_deref().map(|relative| match relative {
            "" => root.to_owned(),
            r if root.is_empty() => r.to_owned(),
            r if r.starts_with('[') => format!("{root}{r}"),
            r => format!("{root}.{r}"),
        });
        OutcomeIssue {
            severity: self.severity,
            code: self.code,
            diagnostics: Some(self.diagnostics.clone()),
            expression: expression.map(|e| vec![e]),
        }
    }
}

/// An issue as it appears in an `OperationOutcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeIssue {
    pub severity: Severity,
    pub code: IssueCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationOutcome {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    pub issue: Vec<OutcomeIssue>,
}

impl OperationOutcome {
    /// An outcome must have at least one issue; an empty list becomes "all ok".
    pub fn new(mut issue: Vec<OutcomeIssue>) -> Self {
        if issue.is_empty() {
            issue.push(Issue::information("all ok").rooted(""));
        }
        Self { resource_type: "OperationOutcome", issue }
    }

    /// Issues relative to one resource, rooted at `root`.
    pub fn of(issues: &[Issue], root: &str) -> Self {
        Self::new(issues.iter().map(|i| i.rooted(root)).collect())
    }

    pub fn single(severity: Severity, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self::new(vec![OutcomeIssue { severity, code, diagnostics: Some(diagnostics.into()), expression: None }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_are_rooted_at_the_resource_or_the_bundle_entry() {
        let issue = Issue::error(IssueCode::Required, Some("participant[1].actor"), "x");
        assert_eq!(issue.rooted("Appointment").expression.unwrap(), ["Appointment.participant[1].actor"]);
        assert_eq!(
            issue.rooted("Bundle.entry[2].resource").expression.unwrap(),
            ["Bundle.entry[2].resource.participant[1].actor"]
        );
        let whole = Issue::error(IssueCode::Invalid, Some(""), "x");
        assert_eq!(whole.rooted("Patient").expression.unwrap(), ["Patient"]);
    }

    #[test]
    fn an_outcome_serializes_with_fhir_codes() {
        let outcome =
            OperationOutcome::of(&[Issue::error(IssueCode::CodeInvalid, Some("status"), "bad")], "Appointment");
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["resourceType"], "OperationOutcome");
        assert_eq!(json["issue"][0]["severity"], "error");
        assert_eq!(json["issue"][0]["code"], "code-invalid");
        assert_eq!(json["issue"][0]["expression"][0], "Appointment.status");
        let empty = serde_json::to_value(OperationOutcome::new(Vec::new())).unwrap();
        assert_eq!(empty["issue"][0]["code"], "informational");
    }
}
