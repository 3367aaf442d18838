//! Bounded fuzzing: random bytes, and real resources mutated element by element (values of the
//! wrong type, odd strings, removed and added elements, truncated and bit-flipped text), through
//! everything ingest does with a FHIR body (reading, mapping, Bundle reading, OperationOutcome
//! rendering) must never panic, and every outcome Careline writes must be a valid
//! OperationOutcome. Seeded, so a failure can be replayed: the seed is printed, and
//! `FHIR_FUZZ_SEED=<n>` runs that seed again.

use careline_domain::facility::NetworkConfig;
use careline_fhir::bundle::{self, Report};
use careline_fhir::map::{self, Context, References};
use careline_fhir::{OperationOutcome, Resource, read_resource};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ROUNDS: usize = 1500;

const NETWORK: &str = r#"
    [templates.booking_confirmation]
    name = "appointment_booked"
    languages = { en = "en" }
    body = ["first_name", "date_time", "facility"]
    [templates.reminder]
    name = "appointment_reminder"
    languages = { en = "en" }
    body = ["first_name", "date_time", "facility"]
    [[facility]]
    id = "city"
    name = "City General Hospital"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"
"#;

fn seeds() -> Vec<Value> {
    let appointment = json!({
        "resourceType": "Appointment", "id": "A-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-20T10:00:00+05:30"},
        "extension": [{"url": "https://careline.dev/fhir/StructureDefinition/facility", "valueReference": {"reference": "Location/city"}}],
        "identifier": [{"system": "urn:oid:1.2.3", "value": "ENC-1"}],
        "status": "booked",
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"}], "text": "Cardiology"}],
        "start": "2026-03-01T09:30:00+05:30", "end": "2026-03-01T09:50:00+05:30", "minutesDuration": 20,
        "patientInstruction": "Fasting",
        "participant": [
            {"actor": {"reference": "Patient/P-1", "display": "Asha"}, "status": "accepted"},
            {"type": [{"coding": [{"code": "ATND"}]}], "actor": {"reference": "Practitioner/D-9", "display": "Dr Rao"}},
            {"actor": {"reference": "Location/city"}},
            {"actor": {"identifier": {"value": "P-1"}, "type": "Patient"}}
        ]
    });
    let patient = json!({
        "resourceType": "Patient", "id": "P-1", "meta": {"lastUpdated": "2026-01-20T10:00:00Z"},
        "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-1"}],
        "name": [{"use": "official", "given": ["Asha", "K"], "family": "Sharma"}, {"use": "usual", "given": ["Ash"]}],
        "telecom": [
            {"system": "phone", "use": "mobile", "value": "+91 98123 45678", "rank": 1, "period": {"end": "2030-01-01T00:00:00Z"}},
            {"system": "sms", "value": "0091 98123 45679"},
            {"system": "phone", "use": "home", "value": "+91 80 4123 4567"}
        ],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "hi"}]}, "preferred": true}],
        "managingOrganization": {"reference": "Organization/city", "identifier": {"value": "city"}}
    });
    let consent = json!({
        "resourceType": "Consent", "id": "C-1", "status": "active",
        "category": [{"coding": [{"system": "https://careline.dev/fhir/CodeSystem/consent-category", "code": "whatsapp-reminders"}]}],
        "patient": {"reference": "Patient/P-1"}, "dateTime": "2026-01-05T10:00:00+05:30",
        "performer": [{"reference": "RelatedPerson/R-1"}], "organization": [{"reference": "Organization/city"}],
        "sourceAttachment": {"url": "https://ehr.example/forms/77"}, "policyRule": {"coding": [{"code": "whatsapp-reminders"}]},
        "provision": {"type": "deny", "period": {"start": "2026-01-01"}}
    });
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient.clone(), "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:2", "resource": appointment.clone(), "request": {"method": "PUT", "url": "Appointment/A-1"}},
            {"resource": consent.clone(), "request": {"method": "POST", "url": "Consent"}}
        ]
    });
    vec![appointment, patient, consent, bundle]
}

fn seed() -> u64 {
    std::env::var("FHIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x4648_4952_5f66_757a)
}

const ODD_STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "\u{7}x",
    "Patient/",
    "/",
    "//",
    "Patient//_history/",
    "urn:uuid:",
    "#",
    "2026-02-30T25:61:00Z",
    "+",
    "+0",
    "00",
    "+999999999999999999",
    "9999-12-31T23:59:59+14:00",
    "-0001-01-01T00:00:00Z",
    "ﬀ",
    "👩‍⚕️",
    "booked",
    "mobile",
    "phone",
    "active",
    "deny",
    "MR",
    "Location/city",
    "Patient/P-1/_history/2/x",
];

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e12),
        4 => json!(ODD_STRINGS.choose(rng).unwrap()),
        5 => json!((0..rng.random_range(0..40)).map(|_| rng.random::<char>()).collect::<String>()),
        6 if depth < 4 => Value::Array((0..rng.random_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        7 if depth < 4 => {
            let keys = ["reference", "value", "system", "code", "use", "start", "end", "id", "coding", "actor", "x"];
            Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| ((*keys.choose(rng).unwrap()).to_owned(), random_value(rng, depth + 1)))
                    .collect(),
            )
        }
        _ => json!(rng.random_range(-2..3)),
    }
}

/// Replaces, removes or adds one element somewhere in the tree.
fn mutate(value: &mut Value, rng: &mut StdRng, depth: u32) {
    let descend = depth < 6 && rng.random_bool(0.7);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys.choose(rng).unwrap().clone();
            if descend {
                mutate(map.get_mut(&key).unwrap(), rng, depth + 1);
            } else {
                match rng.random_range(0..3) {
                    0 => {
                        map.remove(&key);
                    }
                    1 => {
                        map.insert(key, random_value(rng, depth));
                    }
                    _ => {
                        map.insert(format!("{key}x"), random_value(rng, depth));
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            if descend {
                mutate(&mut items[i], rng, depth + 1);
            } else if rng.random_bool(0.5) {
                items.remove(i);
            } else {
                let copy = items[i].clone();
                items.push(copy);
            }
        }
        other => *other = random_value(rng, depth),
    }
}

fn exercise(bytes: &[u8], network: &NetworkConfig) {
    let now = "2026-02-01T00:00:00Z".parse().unwrap();
    let references = References::default();
    let ctx = Context { network, now, references: &references };
    let outcome = match read_resource(bytes) {
        Err(e) => OperationOutcome::of(&[e.issue], e.resource_type.as_deref().unwrap_or("")),
        Ok(Resource::Appointment(a)) => {
            let r = map::map_appointment(&a, &ctx);
            for field in ["appointment_id", "patient_id", "facility_id", "starts_at", "nonsense"] {
                let _ = r.locations.of(field);
            }
            OperationOutcome::of(&r.issues, "Appointment")
        }
        Ok(Resource::Patient(p)) => {
            let r = map::map_patient(&p, &ctx);
            let _ = r.has_no_phone();
            OperationOutcome::of(&r.issues, "Patient")
        }
        Ok(Resource::Consent(c)) => OperationOutcome::of(&map::map_consent(&c, &ctx).issues, "Consent"),
        Ok(Resource::Bundle(b)) => match bundle::read_bundle(*b, &ctx) {
            Err(issue) => OperationOutcome::of(&[issue], "Bundle"),
            Ok(read) => {
                let mut issues = Vec::new();
                for (i, entry) in read.entries.iter().enumerate() {
                    match entry {
                        Ok(entry) => {
                            let report: &Report = &entry.report;
                            let root = format!("{}.resource", bundle::entry_root(i));
                            issues.extend(report.issues().iter().map(|issue| issue.rooted(&root)));
                        }
                        Err(entry_issues) => {
                            issues.extend(entry_issues.iter().map(|issue| issue.rooted(&bundle::entry_root(i))))
                        }
                    }
                }
                OperationOutcome::new(issues)
            }
        },
    };
    let json = serde_json::to_value(&outcome).expect("an outcome serializes");
    assert_eq!(json["resourceType"], "OperationOutcome");
    let issues = json["issue"].as_array().expect("issues");
    assert!(!issues.is_empty(), "an OperationOutcome has at least one issue");
    for issue in issues {
        assert!(issue["severity"].is_string() && issue["code"].is_string(), "{issue}");
        if let Some(expression) = issue["expression"][0].as_str() {
            assert!(!expression.starts_with('.'), "expression {expression:?} is rooted");
        }
    }
}

#[test]
fn arbitrary_bytes_and_mutated_resources_never_panic_the_mapping() {
    let network = NetworkConfig::from_toml(NETWORK).unwrap();
    let seed = seed();
    println!("FHIR fuzz seed {seed} (FHIR_FUZZ_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds();
    for seed_value in &seeds {
        exercise(seed_value.to_string().as_bytes(), &network);
    }
    for round in 0..ROUNDS {
        let mut value = seeds.choose(&mut rng).unwrap().clone();
        for _ in 0..rng.random_range(1..6) {
            mutate(&mut value, &mut rng, 0);
        }
        let mut bytes = value.to_string().into_bytes();
        match round % 5 {
            // Raw bytes: truncation and bit flips past the JSON layer.
            0 => {
                let cut = rng.random_range(0..=bytes.len());
                bytes.truncate(cut);
            }
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..bytes.len().max(1));
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= 1 << rng.random_range(0..8);
                    }
                }
            }
            2 => bytes = (0..rng.random_range(0..256)).map(|_| rng.random()).collect(),
            _ => {}
        }
        exercise(&bytes, &network);
    }
    // Deep nesting is refused by the JSON reader, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    exercise(deep.as_bytes(), &network);
}
