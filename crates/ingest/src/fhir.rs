//! FHIR R4 over HTTP: `Patient`, `Appointment` and `Consent` (alone, or in a `transaction` or
//! `batch` Bundle) become the same events, checked by the same rules, as the JSON API's.
//!
//! The protocol, step by step, for each resource:
//!
//! 1. the bearer token is checked exactly as for the JSON API (`401`), then the media types
//!    (`415` unless `application/fhir+json` or `application/json`; `406` when `Accept` allows
//!    neither), then the body size (`413`);
//! 2. the body is read as the resource the endpoint takes (`400` for JSON that is not that
//!    resource, naming the element of the wrong type);
//! 3. [`careline_fhir::map`] reads what Careline needs and where it came from; a facility the
//!    token does not cover is `403`; the JSON API's validation then runs on the values read, and
//!    every problem is reported at once as a `422` whose issues name FHIR elements;
//! 4. the event is published and confirmed by the broker (or, for a `Consent`, the statement is
//!    appended to the consent log) before the answer: `200` for a PUT, `201` for a POST, with an
//!    `OperationOutcome` that may carry warnings. `503` (with `Retry-After`) means nothing can be
//!    assumed applied; a re-send is safe because versions make events idempotent.
//!
//! A transaction Bundle is checked whole before anything is applied: one bad entry refuses it
//! all (nothing is published) with every entry's issues. A batch applies each good entry and
//! answers each entry on its own in a `batch-response`.
//!
//! Ordering: an appointment's version is `meta.lastUpdated` (epoch ms), else an integer
//! `meta.versionId`, else the arrival time; the scheduler ignores one not newer than what it
//! holds. A patient profile is dated by `meta.lastUpdated` (else its arrival), and the
//! scheduler ignores one older than the profile it holds.
//!
//! Consent is recorded without an event: a hospital-reported consent is appended to the
//! append-only consent log (the design lets whoever learns of a consent record it), keyed so
//! a re-sent Consent adds nothing. `consent.changed` is not published, as that event tells the
//! hospital about changes made on Careline's side.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use careline_domain::consent::{ConsentSource, ConsentState};
use careline_domain::events::{Event, PatientUpserted};
use careline_fhir::bundle::{self, BundleKind, Entry, Method, Report};
use careline_fhir::map::{
    self, AppointmentReport, ConsentReport, Context, Locations, PatientReport, References, fields,
};
use careline_fhir::outcome::OutcomeIssue;
use careline_fhir::{Issue, IssueCode, OperationOutcome, ReadError, Resource, Severity, read_resource};
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::api::{self, AppointmentBody, PatientBody};
use crate::auth::Caller;
use crate::problem::{FieldError, Problem, RETRY_AFTER_SECONDS};

/// The media type of every FHIR answer.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Whether a path is served by the FHIR endpoints (so its errors are OperationOutcomes).
pub fn is_fhir_path(path: &str) -> bool {
    path == "/fhir" || path.starts_with("/fhir/")
}

/// An answer that is not a success: an HTTP status and an `OperationOutcome`.
#[derive(Debug)]
pub struct FhirError {
    status: StatusCode,
    outcome: OperationOutcome,
    /// 401 and 503 carry a challenge or a retry hint, as the JSON API's do.
    problem: Option<Problem>,
}

impl FhirError {
    fn new(status: StatusCode, outcome: OperationOutcome) -> Self {
        Self { status, outcome, problem: None }
    }

    fn single(status: StatusCode, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self::new(status, OperationOutcome::single(Severity::Error, code, diagnostics))
    }

    /// A body that is not the resource expected: 400, the element named from the resource root.
    fn read(error: ReadError) -> Self {
        let issue = error.issue.rooted(error.resource_type.as_deref().unwrap_or(""));
        Self::new(StatusCode::BAD_REQUEST, OperationOutcome::new(vec![issue]))
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Problem> for FhirError {
    fn from(problem: Problem) -> Self {
        let status = problem.status();
        let code = match &problem {
            Problem::Unauthorized(_) => IssueCode::Login,
            Problem::Forbidden(_) => IssueCode::Forbidden,
            Problem::Malformed { .. } => IssueCode::Structure,
            Problem::TooLarge { .. } => IssueCode::TooCostly,
            Problem::UnsupportedMediaType | Problem::MethodNotAllowed => IssueCode::NotSupported,
            Problem::Invalid(_) => IssueCode::Invalid,
            Problem::Unavailable(_) => IssueCode::Transient,
            Problem::NotFound => IssueCode::NotFound,
        };
        let diagnostics = match &problem {
            Problem::Unauthorized(d) | Problem::Forbidden(d) | Problem::Unavailable(d) => d.clone(),
            Problem::Malformed { detail, .. } => detail.clone(),
            Problem::TooLarge { limit } => format!("the request body must not exceed {limit} bytes"),
            Problem::UnsupportedMediaType => format!("send the body as {FHIR_JSON} (or application/json)"),
            Problem::Invalid(errors) => errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
            Problem::NotFound => "no such FHIR endpoint; Careline accepts PUT/POST of Patient, Appointment, Consent and POST of a transaction or batch Bundle at /fhir".to_owned(),
            Problem::MethodNotAllowed => "this FHIR endpoint does not accept that method".to_owned(),
        };
        let mut error = Self::single(status, code, diagnostics);
        error.problem = Some(problem);
        error
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let mut response = fhir_response(self.status, &self.outcome);
        let headers = response.headers_mut();
        match self.problem {
            Some(Problem::Unauthorized(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Some(Problem::Unavailable(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

fn fhir_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, json).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// `404` for an unknown path under `/fhir`.
pub fn not_found() -> Response {
    FhirError::from(Problem::NotFound).into_response()
}

/// `405` for a known FHIR path and a method it does not take.
pub fn method_not_allowed() -> Response {
    FhirError::from(Problem::MethodNotAllowed).into_response()
}

/// An authenticated FHIR request and its body (bounded like the JSON API's).
pub struct FhirRequest {
    pub caller: Caller,
    pub body: Bytes,
}

impl FromRequest<AppState> for FhirRequest {
    type Rejection = FhirError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        let caller = state.verifier.verify(authorization).await?;
        if !accepts_fhir_json(headers) {
            return Err(FhirError::single(
                StatusCode::NOT_ACCEPTABLE,
                IssueCode::NotSupported,
                format!("Careline answers in {FHIR_JSON} (or application/json) only"),
            ));
        }
        if !is_fhir_json(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
            return Err(Problem::UnsupportedMediaType.into());
        }
        let limit = state.max_body_bytes;
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                FhirError::from(Problem::TooLarge { limit })
            } else {
                FhirError::single(StatusCode::BAD_REQUEST, IssueCode::Structure, "the request body could not be read")
            }
        })?;
        Ok(Self { caller, body })
    }
}

/// `application/fhir+json`, `application/json`, or the DSTU2 `application/json+fhir`.
fn is_fhir_json(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "application/fhir+json" | "application/json" | "application/json+fhir")
}

/// No `Accept`, or one that allows a JSON answer.
fn accepts_fhir_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|range| {
        let essence = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(
            essence.as_str(),
            "*/*" | "application/*" | "application/fhir+json" | "application/json" | "application/json+fhir"
        )
    })
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, FhirError> {
    path.map(|Path(id)| id).map_err(|_| {
        FhirError::single(StatusCode::BAD_REQUEST, IssueCode::Invalid, "the id in the URL is not valid UTF-8")
    })
}

pub async fn put_appointment(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: FhirRequest,
) -> Result<Response, FhirError> {
    let id = path_id(path)?;
    single(&app, request, "Appointment", Some(id)).await
}

pub async fn post_appointment(State(app): State<AppState>, request: FhirRequest) -> Result<Response, FhirError> {
    single(&app, request, "Appointment", None).await
}

pub async fn put_patient(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: FhirRequest,
) -> Result<Response, FhirError> {
    let id = path_id(path)?;
    single(&app, request, "Patient", Some(id)).await
}

pub async fn post_patient(State(app): State<AppState>, request: FhirRequest) -> Result<Response, FhirError> {
    single(&app, request, "Patient", None).await
}

pub async fn put_consent(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: FhirRequest,
) -> Result<Response, FhirError> {
    let id = path_id(path)?;
    single(&app, request, "Consent", Some(id)).await
}

pub async fn post_consent(State(app): State<AppState>, request: FhirRequest) -> Result<Response, FhirError> {
    single(&app, request, "Consent", None).await
}

/// One resource at its own endpoint.
#[tracing::instrument(skip_all, fields(resource = expected, id = tracing::field::Empty))]
async fn single(
    app: &AppState,
    request: FhirRequest,
    expected: &'static str,
    url_id: Option<String>,
) -> Result<Response, FhirError> {
    let resource = read_resource(&request.body).map_err(FhirError::read)?;
    if resource.type_name() != expected {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            OperationOutcome::new(vec![
                Issue::error(
                    IssueCode::Invalid,
                    Some("resourceType"),
                    format!("this endpoint takes a {expected}, not a {}", resource.type_name()),
                )
                .rooted(""),
            ]),
        ));
    }
    let method = if url_id.is_some() { Method::Put } else { Method::Post };
    let resource = match url_id {
        Some(id) => {
            if resource_id(&resource).is_some_and(|r| r != id) {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    OperationOutcome::of(
                        &[Issue::error(
                            IssueCode::Invalid,
                            Some("id"),
                            "the resource id differs from the id in the URL",
                        )],
                        expected,
                    ),
                ));
            }
            bundle::with_id(resource, &id)
        }
        None => resource,
    };
    let references = References::default();
    let ctx = Context { network: &app.network, now: app.clock.now(), references: &references };
    let report = match resource {
        Resource::Patient(p) => Report::Patient(map::map_patient(&p, &ctx)),
        Resource::Appointment(a) => Report::Appointment(map::map_appointment(&a, &ctx)),
        Resource::Consent(c) => Report::Consent(map::map_consent(&c, &ctx)),
        Resource::Bundle(_) => return Err(FhirError::from(Problem::NotFound)),
    };
    let prepared = prepare(app, &request.caller, report).map_err(|refusal| refusal.into_error(expected))?;
    if let Some(id) = &prepared.id {
        tracing::Span::current().record("id", loggable(id));
    }
    let applied = execute(app, &request.caller, &prepared).await?;
    count(expected, "accepted");
    let status = match method {
        Method::Put => StatusCode::OK,
        Method::Post => StatusCode::CREATED,
    };
    Ok(fhir_response(status, &prepared.outcome(expected, &applied)))
}

fn resource_id(resource: &Resource) -> Option<&str> {
    match resource {
        Resource::Patient(p) => p.id.as_deref(),
        Resource::Appointment(a) => a.id.as_deref(),
        Resource::Consent(c) => c.id.as_deref(),
        Resource::Bundle(b) => b.id.as_deref(),
    }
}

/// `POST /fhir`: a transaction or a batch.
#[tracing::instrument(skip_all, fields(bundle_type = tracing::field::Empty, entries = tracing::field::Empty))]
pub async fn post_bundle(State(app): State<AppState>, request: FhirRequest) -> Result<Response, FhirError> {
    let resource = read_resource(&request.body).map_err(FhirError::read)?;
    let Resource::Bundle(bundle) = resource else {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            OperationOutcome::new(vec![
                Issue::error(
                    IssueCode::Invalid,
                    Some("resourceType"),
                    format!(
                        "POST /fhir takes a transaction or batch Bundle, not a {0}; send a {0} to /fhir/{0}",
                        resource.type_name()
                    ),
                )
                .rooted(""),
            ]),
        ));
    };
    let references = References::default();
    let ctx = Context { network: &app.network, now: app.clock.now(), references: &references };
    let read = bundle::read_bundle(*bundle, &ctx).map_err(|issue| {
        FhirError::new(StatusCode::BAD_REQUEST, OperationOutcome::new(vec![issue.rooted("Bundle")]))
    })?;
    let span = tracing::Span::current();
    span.record("bundle_type", read.kind.response_type());
    span.record("entries", read.entries.len());

    let prepared: Vec<Result<(Method, Prepared), Refused>> = read
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| match entry {
            Ok(Entry { method, report }) => prepare(&app, &request.caller, report)
                .map(|p| (method, p))
                .map_err(|r| r.rooted(&format!("{}.resource", bundle::entry_root(index)))),
            Err(issues) => Err(Refusal::new(StatusCode::BAD_REQUEST, &issues).rooted(&bundle::entry_root(index))),
        })
        .collect();

    let mut responses = Vec::with_capacity(prepared.len());
    match read.kind {
        BundleKind::Transaction => {
            let refusals: Vec<&Refused> = prepared.iter().filter_map(|p| p.as_ref().err()).collect();
            if !refusals.is_empty() {
                count("Bundle", "refused");
                let status = refusals
                    .iter()
                    .map(|r| r.status)
                    .max_by_key(|s| match *s {
                        StatusCode::FORBIDDEN => 3,
                        StatusCode::BAD_REQUEST => 2,
                        _ => 1,
                    })
                    .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                let mut issues: Vec<OutcomeIssue> = refusals.into_iter().flat_map(|r| r.issues.clone()).collect();
                issues
                    .push(Issue::information("the transaction was refused as a whole: nothing was applied").rooted(""));
                return Err(FhirError::new(status, OperationOutcome::new(issues)));
            }
            for (index, entry) in prepared.into_iter().enumerate() {
                let Ok((method, p)) = entry else { continue };
                let applied = execute(&app, &request.caller, &p).await.map_err(|mut e| {
                    count("Bundle", "unavailable");
                    e.outcome.issue.push(
                        Issue::information(format!(
                            "entries before entry[{index}] may have been applied; re-send the whole transaction \
                             (versions make a re-send harmless)"
                        ))
                        .rooted(""),
                    );
                    e
                })?;
                responses.push(entry_response(
                    method,
                    p.outcome(&format!("{}.resource", bundle::entry_root(index)), &applied),
                ));
            }
            count("Bundle", "accepted");
        }
        BundleKind::Batch => {
            for (index, entry) in prepared.into_iter().enumerate() {
                let root = format!("{}.resource", bundle::entry_root(index));
                let response = match entry {
                    Ok((method, p)) => match execute(&app, &request.caller, &p).await {
                        Ok(applied) => entry_response(method, p.outcome(&root, &applied)),
                        Err(e) => json!({"response": {"status": status_line(e.status), "outcome": e.outcome}}),
                    },
                    Err(refusal) => {
                        json!({"response": {"status": status_line(refusal.status), "outcome": OperationOutcome::new(refusal.issues)}})
                    }
                };
                responses.push(response);
            }
            count("Bundle", "accepted");
        }
    }
    let body = json!({
        "resourceType": "Bundle",
        "type": read.kind.response_type(),
        "entry": responses,
    });
    Ok(fhir_response(StatusCode::OK, &body))
}

fn entry_response(method: Method, outcome: OperationOutcome) -> serde_json::Value {
    let status = match method {
        Method::Put => StatusCode::OK,
        Method::Post => StatusCode::CREATED,
    };
    json!({"response": {"status": status_line(status), "outcome": outcome}})
}

fn status_line(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

fn count(resource: &'static str, outcome: &'static str) {
    metrics::counter!("careline_ingest_fhir_total", "resource" => resource, "outcome" => outcome).increment(1);
}

/// Why a resource cannot be applied: the status it earns and its issues, relative to it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    issues: Vec<Issue>,
}

impl Refusal {
    fn new(status: StatusCode, issues: &[Issue]) -> Self {
        Self { status, issues: issues.to_vec() }
    }

    fn rooted(self, root: &str) -> Refused {
        Refused { status: self.status, issues: self.issues.iter().map(|i| i.rooted(root)).collect() }
    }

    fn into_error(self, root: &str) -> FhirError {
        let refused = self.rooted(root);
        FhirError::new(refused.status, OperationOutcome::new(refused.issues))
    }
}

/// A refusal placed in the request.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    issues: Vec<OutcomeIssue>,
}

/// What one accepted resource does.
#[derive(Debug)]
enum Action {
    Publish {
        event: Event,
        occurred_at: Option<DateTime<Utc>>,
    },
    RecordConsent(ConsentStatement),
    /// Acknowledged; its warnings say why nothing was recorded.
    Nothing,
}

#[derive(Debug)]
struct ConsentStatement {
    patient_id: String,
    state: ConsentState,
    recorded_at: DateTime<Utc>,
    evidence: Option<String>,
}

#[derive(Debug)]
struct Prepared {
    id: Option<String>,
    action: Action,
    /// Warnings relative to the resource.
    warnings: Vec<Issue>,
}

/// What executing an action did.
enum Applied {
    Published(Uuid),
    ConsentRecorded { new: bool },
    Nothing,
}

impl Prepared {
    fn outcome(&self, root: &str, applied: &Applied) -> OperationOutcome {
        let summary = match applied {
            Applied::Published(event_id) => format!("accepted: event {event_id} confirmed by the broker"),
            Applied::ConsentRecorded { new: true } => "accepted: consent recorded".to_owned(),
            Applied::ConsentRecorded { new: false } => "accepted: this consent was already recorded".to_owned(),
            Applied::Nothing => "acknowledged: nothing was recorded (see the warnings)".to_owned(),
        };
        let mut issues: Vec<OutcomeIssue> = self.warnings.iter().map(|w| w.rooted(root)).collect();
        issues.insert(0, Issue::information(summary).rooted(""));
        OperationOutcome::new(issues)
    }
}

/// Turns a report into what to do, or refuses it: 403 for a facility the token does not
/// cover, 422 with every problem found.
fn prepare(app: &AppState, caller: &Caller, report: Report) -> Result<Prepared, Refusal> {
    match report {
        Report::Appointment(r) => prepare_appointment(app, caller, r),
        Report::Patient(r) => prepare_patient(app, caller, r),
        Report::Consent(r) => prepare_consent(app, caller, r),
    }
}

fn authorize(caller: &Caller, facility_id: Option<&str>, locations: &Locations) -> Result<(), Refusal> {
    match facility_id {
        Some(facility) if !caller.covers(facility) => {
            tracing::info!(token_id = %caller.token_id, "token does not cover the facility");
            Err(Refusal::new(
                StatusCode::FORBIDDEN,
                &[Issue::error(
                    IssueCode::Forbidden,
                    locations.of(fields::FACILITY_ID),
                    format!("this API token may not write for facility '{}'", loggable(facility)),
                )],
            ))
        }
        _ => Ok(()),
    }
}

/// The reading's issues plus the validation's field errors (located in the resource, each
/// element reported once); a refusal when any is an error.
fn merge(mut issues: Vec<Issue>, errors: Vec<FieldError>, locations: &Locations) -> Vec<Issue> {
    for e in errors {
        let at = locations.of(&e.field);
        if issues.iter().any(|i| i.is_error() && i.expression.as_deref() == at && at.is_some()) {
            continue;
        }
        let code = match e.message.as_str() {
            "is required" | "must not be empty" => IssueCode::Required,
            _ => IssueCode::Value,
        };
        let diagnostics = match at {
            Some(_) => e.message,
            None => format!("{}: {}", e.field, e.message),
        };
        issues.push(Issue::error(code, at, diagnostics));
    }
    issues
}

fn refuse_if_errors(issues: &[Issue]) -> Result<Vec<Issue>, Refusal> {
    if issues.iter().any(Issue::is_error) {
        return Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, issues));
    }
    Ok(issues.to_vec())
}

fn prepare_appointment(app: &AppState, caller: &Caller, r: AppointmentReport) -> Result<Prepared, Refusal> {
    authorize(caller, r.facility_id.as_deref(), &r.locations)?;
    if let Some(why) = &r.not_recorded {
        let mut issues = r.issues.clone();
        issues.push(Issue::warning(IssueCode::Incomplete, Some("start"), why.clone()));
        let warnings = refuse_if_errors(&issues)?;
        return Ok(Prepared { id: r.appointment_id.clone(), action: Action::Nothing, warnings });
    }
    let body = AppointmentBody {
        facility_id: r.facility_id.clone(),
        patient_id: r.patient_id.clone(),
        version: r.version,
        status: r.status.map(|s| s.as_str().to_owned()),
        starts_at: r.starts_at.map(|at| at.to_rfc3339()),
        duration_minutes: r.duration_minutes,
        clinician: r.clinician.clone(),
        department: r.department.clone(),
        instructions: r.instructions.clone(),
    };
    let validated = api::validate_appointment(
        &app.network,
        r.appointment_id.as_deref().unwrap_or_default(),
        body,
        &caller.source,
        None,
    );
    let (event, errors) = match validated {
        Ok(event) => (Some(event), Vec::new()),
        Err(errors) => (None, errors),
    };
    let issues = merge(r.issues, errors, &r.locations);
    let warnings = refuse_if_errors(&issues)?;
    let Some(event) = event else { return Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, &issues)) };
    Ok(Prepared {
        id: Some(event.appointment_id.clone()),
        action: Action::Publish { event: Event::AppointmentUpserted(event), occurred_at: None },
        warnings,
    })
}

fn prepare_patient(app: &AppState, caller: &Caller, r: PatientReport) -> Result<Prepared, Refusal> {
    authorize(caller, r.facility_id.as_deref(), &r.locations)?;
    if r.has_no_phone() {
        // Acknowledged, so an interface engine does not stall on a patient without a mobile;
        // the warning says nothing was recorded.
        return Ok(Prepared { id: r.patient_id.clone(), action: Action::Nothing, warnings: r.issues });
    }
    let body = PatientBody {
        facility_id: r.facility_id.clone(),
        first_name: r.first_name.clone(),
        phone: r.phone.clone(),
        language: r.language.clone(),
        consent: None,
    };
    let validated = api::validate_patient(
        &app.network,
        r.patient_id.as_deref().unwrap_or_default(),
        body,
        &caller.source,
        app.clock.now(),
    );
    let (event, errors): (Option<PatientUpserted>, _) = match validated {
        Ok(event) => (Some(event), Vec::new()),
        Err(errors) => (None, errors),
    };
    let errors = errors
        .into_iter()
        .map(|e| {
            if e.field == fields::FACILITY_ID && e.message == "is required" {
                FieldError::new(
                    e.field,
                    format!(
                        "the facility is required: name it with the extension {} or a managingOrganization that \
                         is a Careline facility, or send the Patient in a Bundle with an appointment there",
                        map::FACILITY_EXTENSION
                    ),
                )
            } else {
                e
            }
        })
        .collect();
    let issues = merge(r.issues, errors, &r.locations);
    let warnings = refuse_if_errors(&issues)?;
    let Some(event) = event else { return Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, &issues)) };
    Ok(Prepared {
        id: Some(event.patient_id.clone()),
        action: Action::Publish { event: Event::PatientUpserted(event), occurred_at: r.reported_at },
        warnings,
    })
}

fn prepare_consent(app: &AppState, caller: &Caller, r: ConsentReport) -> Result<Prepared, Refusal> {
    authorize(caller, r.facility_id.as_deref(), &r.locations)?;
    let mut errors = Vec::new();
    match r.facility_id.as_deref() {
        None => errors.push(FieldError::new(
            fields::FACILITY_ID,
            format!(
                "the facility is required: an organization that is a Careline facility, or the extension {}",
                map::FACILITY_EXTENSION
            ),
        )),
        Some(f) if app.network.facility(f).is_none() => {
            errors.push(FieldError::new(fields::FACILITY_ID, "is not a facility Careline is configured for"));
        }
        Some(_) => {}
    }
    let patient_id = r.patient_id.as_deref().map(|p| api::check_id(fields::PATIENT_ID, p));
    let patient_id = match patient_id {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let issues = merge(r.issues, errors, &r.locations);
    let warnings = refuse_if_errors(&issues)?;
    let (Some(patient_id), Some(state), Some(recorded_at)) = (patient_id, r.state, r.recorded_at) else {
        return Err(Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, &issues));
    };
    Ok(Prepared {
        id: Some(patient_id.clone()),
        action: Action::RecordConsent(ConsentStatement { patient_id, state, recorded_at, evidence: r.evidence }),
        warnings,
    })
}

/// Applies an accepted resource: an event confirmed by the broker, or a consent appended.
async fn execute(app: &AppState, caller: &Caller, prepared: &Prepared) -> Result<Applied, FhirError> {
    match &prepared.action {
        Action::Publish { event, occurred_at } => {
            let at = occurred_at.unwrap_or_else(|| app.clock.now());
            Ok(Applied::Published(app.publish_at(event.clone(), at).await?))
        }
        Action::RecordConsent(statement) => {
            let dedupe_key = consent_dedupe_key(&caller.source, statement);
            let unavailable = |e: sqlx::Error| {
                tracing::warn!(error = %e, "consent append failed");
                FhirError::from(Problem::Unavailable(
                    "the consent log is unavailable; nothing was recorded, retry later".to_owned(),
                ))
            };
            let mut tx = app.pool.begin().await.map_err(unavailable)?;
            let entry_id = careline_store::consent::append(
                &mut *tx,
                &careline_store::consent::NewConsentEntry {
                    patient_id: Some(&statement.patient_id),
                    phone_e164: None,
                    channel: careline_domain::consent::ConsentChannel::Whatsapp,
                    purpose: careline_domain::consent::ConsentPurpose::Care,
                    state: statement.state,
                    recorded_at: statement.recorded_at,
                    source: ConsentSource::HospitalSystem,
                    evidence: statement.evidence.as_deref(),
                    wording_version: None,
                    recorded_by: &caller.source,
                    actor: None,
                    dedupe_key: &dedupe_key,
                },
            )
            .await
            .map_err(unavailable)?;
            if let Some(entry_id) = entry_id {
                careline_store::audit::append(
                    &mut tx,
                    &careline_store::audit::AuditRecord {
                        kind: "consent.recorded",
                        actor: "ingest",
                        patient_id: Some(&statement.patient_id),
                        body: serde_json::json!({
                            "entry_id": entry_id,
                            "channel": "whatsapp",
                            "purpose": "care",
                            "state": statement.state.as_str(),
                            "source": ConsentSource::HospitalSystem.as_str(),
                            "recorded_at": statement.recorded_at.to_rfc3339(),
                            "reported_by": caller.source,
                        }),
                        dedupe_key: Some(&format!("consent:{entry_id}")),
                        ..Default::default()
                    },
                )
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            let new = entry_id.is_some();
            tracing::info!(state = statement.state.as_str(), new, "consent recorded");
            metrics::counter!("careline_ingest_consent_recorded_total", "state" => statement.state.as_str())
                .increment(1);
            Ok(Applied::ConsentRecorded { new })
        }
        Action::Nothing => Ok(Applied::Nothing),
    }
}

/// The same statement from the same source is recorded once, however often it is re-sent.
fn consent_dedupe_key(source: &str, s: &ConsentStatement) -> String {
    let mut hash = Sha256::new();
    for part in
        [source, &s.patient_id, s.state.as_str(), &s.recorded_at.to_rfc3339(), s.evidence.as_deref().unwrap_or("")]
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("fhir:{}", hex::encode(hash.finalize()))
}

/// An id safe for a log field: printable, at most 64 characters.
fn loggable(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_media_types_are_recognised() {
        assert!(is_fhir_json(Some("application/fhir+json; fhirVersion=4.0")));
        assert!(is_fhir_json(Some("application/json")));
        assert!(!is_fhir_json(Some("application/fhir+xml")));
        assert!(!is_fhir_json(None));
        let mut headers = HeaderMap::new();
        assert!(accepts_fhir_json(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/fhir+xml"));
        assert!(!accepts_fhir_json(&headers));
        headers
            .insert(header::ACCEPT, HeaderValue::from_static("application/fhir+xml;q=1, application/fhir+json;q=0.9"));
        assert!(accepts_fhir_json(&headers));
    }

    #[test]
    fn refusals_are_rooted_where_the_resource_sits() {
        let issues =
            [Issue::error(IssueCode::Value, Some("start"), "bad"), Issue::error(IssueCode::Value, Some(""), "x")];
        let r = Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, &issues).rooted("Bundle.entry[1].resource");
        assert_eq!(r.issues[0].expression.as_ref().unwrap()[0], "Bundle.entry[1].resource.start");
        assert_eq!(r.issues[1].expression.as_ref().unwrap()[0], "Bundle.entry[1].resource");
    }

    #[test]
    fn consent_dedupe_keys_differ_by_content_and_not_by_repetition() {
        let s = |state| ConsentStatement {
            patient_id: "P1".into(),
            state,
            recorded_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            evidence: None,
        };
        assert_eq!(
            consent_dedupe_key("his", &s(ConsentState::OptedIn)),
            consent_dedupe_key("his", &s(ConsentState::OptedIn))
        );
        assert_ne!(
            consent_dedupe_key("his", &s(ConsentState::OptedIn)),
            consent_dedupe_key("his", &s(ConsentState::OptedOut))
        );
    }
}
