//! The hospital side of the demo: loads patients and appointments through ingest's HTTP API,
//! with a Bearer token, bounded concurrency and retries on 429/503 and connection errors (ingest
//! answers 503 while the broker cannot confirm an event, so a retry is always safe: the PUTs are
//! idempotent and versioned).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::population::{DemoAppointment, DemoPatient};

/// Attempts per request before giving up.
const MAX_ATTEMPTS: u32 = 8;
/// First retry delay, doubled each attempt, capped at [`RETRY_MAX`].
const RETRY_BASE: StdDuration = StdDuration::from_millis(250);
const RETRY_MAX: StdDuration = StdDuration::from_secs(4);
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(15);

/// A request ingest did not accept. Carries the status and ingest's problem title/detail, never
/// the request body (it holds PHI).
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("{what}: HTTP {status}: {problem}")]
    Refused { what: String, status: u16, problem: String },
    #[error("{what}: ingest unreachable or kept answering 503 after {MAX_ATTEMPTS} attempts: {last}")]
    Unavailable { what: String, last: String },
}

/// ingest's public API.
#[derive(Debug, Clone)]
pub struct IngestClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

/// How a batch of requests went.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    pub ok: usize,
    pub errors: Vec<IngestError>,
}

impl IngestClient {
    pub fn new(base_url: &str, token: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    /// `PUT /v1/patients/{id}`.
    pub async fn put_patient(&self, patient: &DemoPatient, reported_at: DateTime<Utc>) -> Result<(), IngestError> {
        let consent = patient.consent.then(|| {
            json!({
                "state": "opted_in",
                "recorded_at": reported_at - Duration::days(1),
                "source": "booking_form",
                "evidence": format!("booking-form/{}", patient.id),
                "wording_version": "2026-01",
            })
        });
        let body = json!({
            "facility_id": patient.facility_id,
            "first_name": patient.first_name,
            "phone": patient.phone.e164(),
            "language": patient.language,
            "consent": consent,
        });
        let url = format!("{}/v1/patients/{}", self.base_url, patient.id);
        self.send(reqwest::Method::PUT, &url, &body, format!("patient {}", patient.id)).await
    }

    /// `PUT /v1/appointments/{id}`: books (version 1) or moves (a higher version) an appointment.
    pub async fn put_appointment(
        &self,
        appointment: &DemoAppointment,
        version: i64,
        starts_at: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let body = json!({
            "facility_id": appointment.facility_id,
            "patient_id": appointment.patient_id,
            "version": version,
            "status": "booked",
            "starts_at": starts_at,
            "duration_minutes": appointment.duration_minutes,
            "clinician": appointment.clinician,
            "department": appointment.department,
        });
        let url = format!("{}/v1/appointments/{}", self.base_url, appointment.id);
        self.send(reqwest::Method::PUT, &url, &body, format!("appointment {} v{version}", appointment.id)).await
    }

    /// `POST /v1/appointments/{id}/cancel`: the appointment as it was, with a higher version.
    pub async fn cancel_appointment(
        &self,
        appointment: &DemoAppointment,
        version: i64,
        starts_at: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let body = json!({
            "facility_id": appointment.facility_id,
            "patient_id": appointment.patient_id,
            "version": version,
            "starts_at": starts_at,
            "duration_minutes": appointment.duration_minutes,
            "clinician": appointment.clinician,
            "department": appointment.department,
        });
        let url = format!("{}/v1/appointments/{}/cancel", self.base_url, appointment.id);
        self.send(reqwest::Method::POST, &url, &body, format!("cancel {} v{version}", appointment.id)).await
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: &Value, what: String) -> Result<(), IngestError> {
        let mut delay = RETRY_BASE;
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let request = self.http.request(method.clone(), url).bearer_auth(&self.token).json(body);
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) if is_retryable(response.status()) => last = format!("HTTP {}", response.status()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let problem = problem_of(response.text().await.unwrap_or_default());
                    return Err(IngestError::Refused { what, status, problem });
                }
                Err(e) => last = e.without_url().to_string(),
            }
            if attempt < MAX_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
        Err(IngestError::Unavailable { what, last })
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS | StatusCode::BAD_GATEWAY)
}

/// The title and detail of a problem+json answer (whatever else the body is, its first line).
fn problem_of(body: String) -> String {
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => {
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            [field("title"), field("detail")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(": ")
        }
        Err(_) => body.lines().next().unwrap_or_default().chars().take(200).collect(),
    }
}

/// Runs `call` on every item, at most `concurrency` at once.
pub async fn for_each_concurrently<T, F, Fut>(items: Vec<T>, concurrency: usize, call: F) -> BatchReport
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), IngestError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for item in items {
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let future = call(item);
        tasks.spawn(async move {
            let outcome = future.await;
            drop(permit);
            outcome
        });
    }
    let mut report = BatchReport::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(e)) => report.errors.push(e),
            Err(e) => report.errors.push(IngestError::Unavailable { what: "task".into(), last: e.to_string() }),
        }
    }
    report
}
