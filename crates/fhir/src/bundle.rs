//! `transaction` and `batch` Bundles: every entry read and mapped, references between
//! entries (`urn:uuid:` full URLs) resolved, and a patient's facility taken from an
//! appointment of that patient in the same Bundle when the Patient names none.
//!
//! What to do with the entries (all or nothing, or one by one) is the caller's decision; this
//! module only says, per entry, what it holds or why it cannot be used.

use crate::map::{self, AppointmentReport, ConsentReport, Context, PatientReport, References};
use crate::outcome::{Issue, IssueCode};
use crate::read::{Resource, printable, resource_from_value};
use crate::resources::{Bundle, BundleEntry};

/// The most entries one Bundle may carry (the body size bounds it too).
pub const MAX_ENTRIES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// Every entry valid, or none applied.
    Transaction,
    /// Each entry on its own.
    Batch,
}

impl BundleKind {
    pub fn response_type(self) -> &'static str {
        match self {
            Self::Transaction => "transaction-response",
            Self::Batch => "batch-response",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Put,
    Post,
}

/// What an entry maps to.
#[derive(Debug, Clone)]
pub enum Report {
    Patient(PatientReport),
    Appointment(AppointmentReport),
    Consent(ConsentReport),
}

impl Report {
    pub fn issues(&self) -> &[Issue] {
        match self {
            Self::Patient(r) => &r.issues,
            Self::Appointment(r) => &r.issues,
            Self::Consent(r) => &r.issues,
        }
    }

    pub fn resource_type(&self) -> &'static str {
        match self {
            Self::Patient(_) => "Patient",
            Self::Appointment(_) => "Appointment",
            Self::Consent(_) => "Consent",
        }
    }
}

/// One usable entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub method: Method,
    pub report: Report,
}

/// A Bundle read: its kind and, per entry in order, what it holds or its issues. Entry issues
/// are relative to the entry (`resource.status`, `request.url`).
#[derive(Debug, Clone)]
pub struct ReadBundle {
    pub kind: BundleKind,
    pub entries: Vec<Result<Entry, Vec<Issue>>>,
}

/// The FHIRPath root of entry `index`.
pub fn entry_root(index: usize) -> String {
    format!("Bundle.entry[{index}]")
}

/// Reads a Bundle; an `Err` (relative to the Bundle) refuses it as a whole.
pub fn read_bundle(bundle: Bundle, ctx: &Context<'_>) -> Result<ReadBundle, Issue> {
    let kind = match bundle.kind.as_deref() {
        Some("transaction") => BundleKind::Transaction,
        Some("batch") => BundleKind::Batch,
        Some(other) => {
            return Err(Issue::error(
                IssueCode::NotSupported,
                Some("type"),
                format!("Bundle type '{}' is not accepted; send a transaction or a batch", printable(other)),
            ));
        }
        None => return Err(Issue::error(IssueCode::Required, Some("type"), "Bundle.type is required")),
    };
    if bundle.entry.len() > MAX_ENTRIES {
        return Err(Issue::error(
            IssueCode::TooCostly,
            Some("entry"),
            format!("a Bundle may carry at most {MAX_ENTRIES} entries"),
        ));
    }
    let read: Vec<(Option<String>, ReadEntry)> =
        bundle.entry.into_iter().map(|entry| (entry.full_url.clone(), read_entry(entry))).collect();

    let mut references = References::default();
    for (full_url, entry) in &read {
        if let (Some(full_url), Ok((_, resource))) = (full_url, entry)
            && let Some(id) = map::careline_id(resource)
        {
            references.insert(full_url.trim(), resource.type_name(), &id);
        }
    }
    let ctx = Context { network: ctx.network, now: ctx.now, references: &references };
    let mut entries: Vec<Result<Entry, Vec<Issue>>> = read
        .into_iter()
        .map(|(_, entry)| {
            let (method, resource) = entry?;
            let report = match resource {
                Resource::Patient(p) => Report::Patient(map::map_patient(&p, &ctx)),
                Resource::Appointment(a) => Report::Appointment(map::map_appointment(&a, &ctx)),
                Resource::Consent(c) => Report::Consent(map::map_consent(&c, &ctx)),
                Resource::Bundle(_) => return Err(vec![nested_bundle()]),
            };
            Ok(Entry { method, report })
        })
        .collect();
    infer_patient_facilities(&mut entries);
    Ok(ReadBundle { kind, entries })
}

/// A patient whose resource names no facility takes the facility of an appointment of that
/// patient in the same Bundle.
fn infer_patient_facilities(entries: &mut [Result<Entry, Vec<Issue>>]) {
    let known: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| match e {
            Ok(Entry { report: Report::Appointment(a), .. }) => Some((a.patient_id.clone()?, a.facility_id.clone()?)),
            _ => None,
        })
        .collect();
    for entry in entries.iter_mut() {
        if let Ok(Entry { report: Report::Patient(p), .. }) = entry
            && p.facility_id.is_none()
            && let Some((_, facility)) = known.iter().find(|(patient, _)| Some(patient) == p.patient_id.as_ref())
        {
            p.facility_id = Some(facility.clone());
        }
    }
}

/// An entry's method and resource, or its issues.
type ReadEntry = Result<(Method, Resource), Vec<Issue>>;

fn read_entry(entry: BundleEntry) -> ReadEntry {
    let Some(value) = entry.resource else {
        return Err(vec![Issue::error(IssueCode::Required, Some("resource"), "the entry has no resource")]);
    };
    let resource = resource_from_value(value).map_err(|e| {
        let mut issue = e.issue;
        issue.expression = Some(match issue.expression.as_deref() {
            None | Some("") => "resource".to_owned(),
            Some(relative) if relative.starts_with('[') => format!("resource{relative}"),
            Some(relative) => format!("resource.{relative}"),
        });
        vec![issue]
    })?;
    if let Resource::Bundle(_) = resource {
        return Err(vec![nested_bundle()]);
    }
    let Some(request) = entry.request else {
        return Err(vec![Issue::error(
            IssueCode::Required,
            Some("request"),
            "each entry of a transaction or batch needs a request (method PUT or POST, url)",
        )]);
    };
    let method = match request.method.as_deref() {
        Some("PUT") => Method::Put,
        Some("POST") => Method::Post,
        Some(other) => {
            return Err(vec![Issue::error(
                IssueCode::NotSupported,
                Some("request.method"),
                format!("method '{}' is not accepted; Careline takes PUT and POST", printable(other)),
            )]);
        }
        None => {
            return Err(vec![Issue::error(IssueCode::Required, Some("request.method"), "request.method is required")]);
        }
    };
    let url = request.url.as_deref().unwrap_or("").trim();
    let path = url.split('?').next().unwrap_or("");
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let (url_type, url_id) = (segments.next(), segments.next());
    if url_type != Some(resource.type_name()) || segments.next().is_some() {
        return Err(vec![Issue::error(
            IssueCode::Invalid,
            Some("request.url"),
            format!("request.url must be '{0}' (POST) or '{0}/<id>' (PUT)", resource.type_name()),
        )]);
    }
    match (method, url_id) {
        (Method::Put, None) => {
            return Err(vec![Issue::error(
                IssueCode::Invalid,
                Some("request.url"),
                "a PUT names the resource: <type>/<id>",
            )]);
        }
        (Method::Put, Some(id)) => {
            let resource_id = match &resource {
                Resource::Patient(p) => p.id.as_deref(),
                Resource::Appointment(a) => a.id.as_deref(),
                Resource::Consent(c) => c.id.as_deref(),
                Resource::Bundle(_) => None,
            };
            if resource_id.is_some_and(|r| r != id) {
                return Err(vec![Issue::error(
                    IssueCode::Invalid,
                    Some("resource.id"),
                    "the resource id differs from the id in request.url",
                )]);
            }
            return Ok((method, with_id(resource, id)));
        }
        (Method::Post, Some(_)) => {
            return Err(vec![Issue::error(IssueCode::Invalid, Some("request.url"), "a POST names only the type")]);
        }
        (Method::Post, None) => {}
    }
    Ok((method, resource))
}

fn nested_bundle() -> Issue {
    Issue::error(IssueCode::NotSupported, Some("resource"), "a Bundle inside a Bundle is not accepted")
}

/// The resource with `id` set when it had none (a PUT names it in its URL).
pub fn with_id(resource: Resource, id: &str) -> Resource {
    let id = Some(id.to_owned());
    match resource {
        Resource::Patient(mut p) => {
            p.id = p.id.or(id);
            Resource::Patient(p)
        }
        Resource::Appointment(mut a) => {
            a.id = a.id.or(id);
            Resource::Appointment(a)
        }
        Resource::Consent(mut c) => {
            c.id = c.id.or(id);
            Resource::Consent(c)
        }
        other => other,
    }
}
