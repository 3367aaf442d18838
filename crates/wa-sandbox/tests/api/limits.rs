//! Throughput (130429) and pair-rate (131056) limits.

use std::time::{Duration, Instant};

use careline_whatsapp::types::{SendRequest, Template};
use careline_whatsapp::{ErrorClass, SendError};
use tokio::task::JoinSet;
use wa_sandbox::PhoneNumberSpec;

use crate::helpers::*;

const SLOW_NUMBER: &str = "2002";

async fn app_with_a_20_mps_number() -> TestApp {
    spawn_app_with(|s| {
        s.phone_numbers.push(PhoneNumberSpec {
            id: SLOW_NUMBER.into(),
            display_phone_number: "15550002002".into(),
            mps: Some(20),
        });
    })
    .await
}

/// Fires `n` sends to distinct recipients at once; returns the HTTP status and code of each.
async fn burst(app: &TestApp, first_patient: u32, n: u32) -> Vec<(u16, Option<i64>)> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let (http, url) = (app.http.clone(), format!("{}/v23.0/{SLOW_NUMBER}/messages", app.base_url));
        let body = template_body(&patient(first_patient + i), "x");
        set.spawn(async move {
            let response = http.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let json: serde_json::Value = response.json().await.unwrap();
            (status, json["error"]["code"].as_i64())
        });
    }
    set.join_all().await
}

#[tokio::test]
async fn at_20_mps_only_20_of_40_simultaneous_sends_are_accepted() {
    let app = app_with_a_20_mps_number().await;
    let started = Instant::now();
    let answers = burst(&app, 0, 40).await;
    assert!(started.elapsed() < Duration::from_secs(1), "the burst took {:?}", started.elapsed());
    let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
    let throttled = answers.iter().filter(|&&a| a == (400, Some(130429))).count();
    assert_eq!((accepted, throttled), (20, 20), "{answers:?}");

    let stats = app.handle.stats();
    assert_eq!(stats.accepted, 20);
    assert_eq!(stats.refused_by_code.get(&130429), Some(&20));
    assert_eq!(stats.violations.throughput, 20);
    assert_eq!(stats.violations.total, 20);
}

#[tokio::test]
async fn the_throughput_window_slides_and_the_client_sees_slow_down_number() {
    let app = app_with_a_20_mps_number().await;
    assert_eq!(burst(&app, 0, 20).await.iter().filter(|(s, _)| *s == 200).count(), 20);
    let request = SendRequest::template(patient(100), Template::new(TEMPLATE, "en").with_body_text(["a", "b", "c"]));
    let client = app.client(Duration::from_secs(5));
    let err = client.send(SLOW_NUMBER, &request).await.unwrap_err();
    assert!(matches!(err, SendError::Api { http_status: 400, code: 130429, .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::SlowDownNumber);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(burst(&app, 200, 20).await.iter().filter(|(s, _)| *s == 200).count(), 20);
}

#[tokio::test]
async fn a_second_message_to_the_same_patient_within_6_s_is_131056() {
    let app = spawn_app().await;
    let to = patient(1);
    app.send_template(&to, "first").await;
    let (status, body) = app.post_messages(NUMBER_ID, &template_body(&to, "second")).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), 131056);
    // Other patients are unaffected.
    app.send_template(&patient(2), "other").await;

    let request = SendRequest::template(to.clone(), Template::new(TEMPLATE, "en").with_body_text(["a", "b", "c"]));
    let err = app.client(Duration::from_secs(5)).send(NUMBER_ID, &request).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RetryRecipientLater);

    let stats = app.handle.stats();
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.violations.pair, 2);
    assert_eq!(stats.refused_by_code.get(&131056), Some(&2));
}

#[tokio::test]
async fn the_pair_limit_allows_its_burst_then_one_per_interval() {
    let app = spawn_app_with(|s| {
        s.pair_interval = Duration::from_millis(300);
        s.pair_burst = 3;
    })
    .await;
    let to = patient(1);
    let mut codes = Vec::new();
    for i in 0..4 {
        let (status, body) = app.post_messages(NUMBER_ID, &template_body(&to, &i.to_string())).await;
        codes.push(if status == 200 { 0 } else { error_code(&body) });
    }
    assert_eq!(codes, vec![0, 0, 0, 131056]);
    tokio::time::sleep(Duration::from_millis(320)).await;
    let (status, _) = app.post_messages(NUMBER_ID, &template_body(&to, "later")).await;
    assert_eq!(status, 200);
}
