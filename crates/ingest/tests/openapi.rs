//! The OpenAPI document: it parses, it is what `GET /openapi.json` serves, every route the
//! router declares is described, and every described operation is served (a request to it does
//! not fall through to the router's 404/405 fallbacks). No broker or token is needed: an
//! unauthenticated request to a served route gets 401, not 404.

use std::collections::BTreeSet;
use std::time::Duration;

use careline_bus::BusSettings;
use ingest::{Application, Settings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

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
    name = "City General"
    time_zone = "Asia/Kolkata"
    phone_number_id = "1001"
"#;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    serde_json::from_str(ingest::openapi::DOCUMENT).expect("openapi.json is JSON")
}

/// (method, path) of every operation the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let doc = document();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// (method, path) of every `.route(...)` in the router's source.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/lib.rs");
    let mut operations = BTreeSet::new();
    for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let rest = &line[".route(\"".len()..];
        let (path, handlers) = rest.split_once('"').expect("a quoted path");
        for method in METHODS {
            let called = handlers.match_indices(&format!("{method}(")).any(|(at, _)| {
                at == 0 || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric() && handlers.as_bytes()[at - 1] != b'_'
            });
            if called {
                operations.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    operations
}

#[test]
fn the_document_is_openapi_3_1_with_operation_ids_and_resolvable_references() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string());
    let text = ingest::openapi::DOCUMENT;
    let mut ids = BTreeSet::new();
    for (method, path) in documented() {
        let id = doc["paths"][&path][&method]["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}"));
        assert!(ids.insert(id.to_owned()), "operationId {id} used twice");
    }
    // Every local $ref names something the document defines.
    for (at, _) in text.match_indices("\"$ref\": \"#/") {
        let start = at + "\"$ref\": \"#/".len();
        let pointer = &text[start..start + text[start..].find('"').unwrap()];
        assert!(doc.pointer(&format!("/{pointer}")).is_some(), "dangling $ref #/{pointer}");
    }
}

#[test]
fn every_route_the_router_serves_is_documented_and_nothing_else() {
    let routed = routed();
    assert!(routed.len() >= 10, "the route scan found too little: {routed:?}");
    assert_eq!(routed, documented());
}

#[tokio::test]
async fn every_documented_operation_is_served_and_the_document_is_served_as_is() {
    let config_path = std::env::temp_dir().join(format!("careline-openapi-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config_path, NETWORK).unwrap();
    let settings = Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        // Never reached: every request below stops at authentication (no token) or is public.
        database_url: "postgres://postgres:postgres@127.0.0.1:5432/careline".into(),
        database_max_connections: 1,
        bus: BusSettings::for_test(),
        config_path,
        max_body_bytes: 65_536,
        publish_timeout: Duration::from_secs(1),
        token_cache_ttl: Duration::ZERO,
        migrate_on_start: false,
        mllp: ingest::mllp::MllpSettings::default(),
    };
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.public_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();

    for (method, path) in documented() {
        let url = format!("{base}{}", path.replace('{', "x-").replace('}', ""));
        let response = http
            .request(method.to_uppercase().parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(![404, 405].contains(&status), "{method} {path} is documented but not served ({status})");
    }

    let served = http.get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), ingest::openapi::DOCUMENT);
    shutdown.cancel();
}
