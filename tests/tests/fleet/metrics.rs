//! Every service's `/metrics` after real traffic: Prometheus naming conventions (`_total`
//! counters, base units such as `_seconds`, no unit-less timings), a `# TYPE` for every family
//! and a `# HELP` for every Careline family, and no PHI in names or labels.

use std::collections::BTreeMap;

use careline_domain::Clock;
use careline_tests::*;
use chrono::Duration;

/// Families a scrape must show after one appointment has been booked, sent and delivered.
const EXPECTED: &[(&str, &str)] = &[
    ("careline_ingest_requests_total", "counter"),
    ("careline_ingest_publish_seconds", "histogram"),
    ("careline_events_published_total", "counter"),
    ("careline_messages_consumed_total", "counter"),
    ("careline_message_handling_seconds", "histogram"),
    ("careline_scheduler_appointments_total", "counter"),
    ("careline_scheduler_jobs_planned_total", "counter"),
    ("careline_scheduler_jobs_dispatched_total", "counter"),
    ("careline_webhook_requests_total", "counter"),
    ("careline_webhook_statuses_total", "counter"),
    ("careline_webhook_inbox_lag_seconds", "gauge"),
    ("careline_dependency_up", "gauge"),
];

struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<String>,
}

/// Parses the text exposition format into families by name.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    fn entry<'a>(families: &'a mut BTreeMap<String, Family>, name: &str) -> &'a mut Family {
        families.entry(name.to_owned()).or_insert_with(|| Family { kind: String::new(), help: None, samples: vec![] })
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            entry(&mut families, name).help = Some(help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            entry(&mut families, name).kind = kind.to_owned();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|base| text.contains(&format!("# TYPE {base} "))))
                .unwrap_or(name);
            entry(&mut families, family).samples.push(line.to_owned());
        }
    }
    families
}

#[tokio::test]
async fn every_service_exposes_prometheus_conventional_metrics_with_help_and_type_after_traffic() {
    let fleet = spawn_fleet().await;
    let asha = phone(1);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    fleet.ingest_appointment("A1", NORTH, "P1", 1, fleet.clock.now() + Duration::days(3)).await;
    fleet.wait_for_messages_to(&asha, 1).await;
    fleet.settle().await;

    let http = reqwest::Client::new();
    for component in [Component::Ingest, Component::Scheduler, Component::Sender, Component::WebhookConsumer] {
        let url = format!("http://{}/metrics", fleet.admin_addr(component));
        let response = http.get(&url).send().await.expect("scrape");
        assert!(response.status().is_success(), "{component:?}: {}", response.status());
        let text = response.text().await.expect("metrics text");
        let families = parse(&text);

        for (name, kind) in EXPECTED {
            let family = families.get(*name).unwrap_or_else(|| panic!("{component:?}: no {name} in\n{text}"));
            assert_eq!(&family.kind, kind, "{component:?}: {name}");
            assert!(!family.samples.is_empty(), "{component:?}: {name} has no samples");
        }
        for (name, family) in families.iter().filter(|(n, _)| n.starts_with("careline_")) {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: not snake_case"
            );
            assert!(!family.kind.is_empty(), "{name}: samples without a # TYPE line");
            match family.kind.as_str() {
                "counter" => assert!(name.ends_with("_total"), "{name}: a counter must end in _total"),
                "histogram" | "summary" => assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{name}: a distribution must be in a base unit (_seconds, _bytes)"
                ),
                "gauge" => assert!(!name.ends_with("_total"), "{name}: a gauge must not end in _total"),
                other => panic!("{name}: unexpected type {other}"),
            }
            for unit in ["_ms", "_milliseconds", "_minutes", "_hours", "_kb", "_mb"] {
                assert!(!name.contains(unit), "{name}: not a base unit ({unit})");
            }
            assert!(family.help.as_deref().is_some_and(|h| h.len() > 10), "{component:?}: {name} has no # HELP line");
            if family.kind == "histogram" {
                assert!(
                    family
                        .samples
                        .iter()
                        .any(|s| s.starts_with(&format!("{name}_bucket")) && s.contains("le=\"+Inf\"")),
                    "{name}: no +Inf bucket"
                );
            }
        }
        for phi in [asha.as_str(), asha.trim_start_matches('+'), FIRST_NAME, CLINICIAN] {
            assert!(!text.contains(phi), "{component:?}: /metrics contains PHI ({phi})");
        }
    }
}
