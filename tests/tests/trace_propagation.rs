//! One trace across every hop: ingest's HTTP request → publish → the scheduler's consume and
//! plan → (stored in `jobs`) → the `job.due` publish → the sender's consume → the WhatsApp
//! call → the webhook-consumer's handling of the message's status webhooks. The fleet exports
//! its spans over OTLP/HTTP to a receiver in this test, as it would to a collector.
//!
//! Tracing state (subscriber, tracer provider, propagator) is process-global, so this story has
//! a test binary of its own: nothing else in this process installs a subscriber, and the fleet
//! tests in the `fleet` binary run without an exporter.

use std::sync::OnceLock;

use careline_domain::Clock;
use careline_telemetry::{SpanExport, TelemetryGuard};
use careline_tests::otlp::{OtlpReceiver, ReceivedSpan, render_tree};
use careline_tests::*;
use chrono::Duration;

/// Installed once per process: the global subscriber exporting to the receiver.
fn tracing_to_receiver() -> &'static (OtlpReceiver, TelemetryGuard) {
    static INSTALLED: OnceLock<(OtlpReceiver, TelemetryGuard)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let receiver = OtlpReceiver::start();
        let guard =
            careline_telemetry::init_tracing_with("careline-fleet", SpanExport::Endpoint(receiver.traces_url()));
        assert!(guard.exports_spans(), "the OTLP exporter could not be built");
        (receiver, guard)
    })
}

/// The attributes printed after each span of the tree.
const SHOWN: &[&str] =
    &["messaging.rabbitmq.destination.routing_key", "http.response.status_code", "server.address", "whatsapp.status"];

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, pick: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {what} span, got {found:#?}");
    found[0]
}

fn is_ancestor(spans: &[ReceivedSpan], ancestor: &ReceivedSpan, span: &ReceivedSpan) -> bool {
    let mut current = span.parent_span_id.clone();
    while let Some(id) = current {
        if id == ancestor.span_id {
            return true;
        }
        current = spans.iter().find(|s| s.span_id == id).and_then(|s| s.parent_span_id.clone());
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_spans_the_ingest_request_the_queue_hops_the_whatsapp_call_and_the_status_webhook() {
    let (receiver, guard) = tracing_to_receiver();
    let fleet = spawn_fleet().await;
    let asha = phone(1);
    fleet.ingest_patient("P1", NORTH, &asha, Consent::OptedIn).await;
    let starts_at = fleet.clock.now() + Duration::days(3);
    fleet.ingest_appointment("A1", NORTH, "P1", 1, starts_at).await;

    // The booking confirmation goes out at once, and the sandbox reports it sent and delivered.
    let sent = fleet.wait_for_messages_to(&asha, 1).await;
    let wamid = sent[0].wamid.clone();
    let confirmation = fleet.job("A1", 1, "booking_confirmation").await;
    let pool = &fleet.pool;
    wait_until("the delivered status is recorded", DEADLINE, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM message_status_events WHERE wamid = $1 AND status IN ('sent', 'delivered')",
        )
        .bind(&wamid)
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        n == 2
    })
    .await;

    // The root: ingest's request for the appointment.
    let root = wait_for("ingest's request span is exported", DEADLINE, || async {
        guard.flush();
        receiver.spans().into_iter().find(|s| s.name == "PUT /v1/appointments/{appointment_id}")
    })
    .await;
    let trace = wait_for("the whole chain is exported", DEADLINE, || async {
        guard.flush();
        let trace = receiver.trace(&root.trace_id);
        let statuses = trace.iter().filter(|s| s.name == "process whatsapp.status").count();
        (statuses >= 2 && trace.iter().any(|s| s.name == "POST")).then_some(trace)
    })
    .await;
    println!("{}", render_tree(&trace, SHOWN));

    let prefix = &fleet.bus.prefix;
    let events_exchange = format!("{prefix}.events");
    let jobs_exchange = format!("{prefix}.jobs");

    // ingest: server span, then the producer span of appointment.upserted under it.
    assert_eq!(root.kind, "server");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.attribute("http.request.method"), Some("PUT"));
    assert_eq!(root.attribute("http.route"), Some("/v1/appointments/{appointment_id}"));
    assert_eq!(root.attribute("http.response.status_code"), Some("202"));
    let publish_event = one(&trace, "appointment publish", |s| {
        s.kind == "producer"
            && s.attribute("messaging.rabbitmq.destination.routing_key") == Some("appointment.upserted")
    });
    assert!(is_ancestor(&trace, &root, publish_event), "the publish is not inside the request");
    assert_eq!(publish_event.name, format!("publish {events_exchange}"));
    assert_eq!(publish_event.attribute("messaging.system"), Some("rabbitmq"));
    assert_eq!(publish_event.attribute("messaging.operation.type"), Some("send"));
    assert_eq!(publish_event.attribute("messaging.destination.name"), Some(events_exchange.as_str()));
    assert!(publish_event.attribute("messaging.message.id").is_some_and(|id| id.len() == 36));

    // scheduler: its consume span is a child of that publish span, with the same message id.
    let consume_event = one(&trace, "scheduler consume", |s| {
        s.kind == "consumer"
            && s.attribute("messaging.rabbitmq.destination.routing_key") == Some("appointment.upserted")
    });
    assert_eq!(consume_event.parent_span_id.as_deref(), Some(publish_event.span_id.as_str()));
    assert_eq!(consume_event.name, format!("process {events_exchange}"));
    assert_eq!(consume_event.attribute("messaging.operation.type"), Some("process"));
    assert_eq!(consume_event.attribute("messaging.message.id"), publish_event.attribute("messaging.message.id"));
    assert_eq!(
        consume_event.attribute("messaging.destination.subscription.name"),
        Some(format!("{prefix}.scheduler.events").as_str())
    );
    let plan = one(&trace, "plan", |s| s.name == "apply_appointment");
    assert_eq!(plan.parent_span_id.as_deref(), Some(consume_event.span_id.as_str()));

    // The job.due publish (a later dispatch round) continues the planning span's trace.
    let publish_job = one(&trace, "job.due publish", |s| {
        s.kind == "producer" && s.attribute("messaging.rabbitmq.destination.routing_key") == Some("job.due.urgent")
    });
    assert_eq!(publish_job.parent_span_id.as_deref(), Some(plan.span_id.as_str()));
    assert_eq!(publish_job.attribute("messaging.destination.name"), Some(jobs_exchange.as_str()));

    // sender: consume span child of the job.due publish; the Meta call inside the sender's span.
    let consume_job = one(&trace, "sender consume", |s| {
        s.kind == "consumer" && s.attribute("messaging.rabbitmq.destination.routing_key") == Some("job.due.urgent")
    });
    assert_eq!(consume_job.parent_span_id.as_deref(), Some(publish_job.span_id.as_str()));
    assert_eq!(consume_job.attribute("messaging.message.id"), publish_job.attribute("messaging.message.id"));
    let sender_work = one(&trace, "sender process", |s| s.name == "process");
    assert_eq!(sender_work.parent_span_id.as_deref(), Some(consume_job.span_id.as_str()));
    assert_eq!(sender_work.attribute("job_id"), Some(confirmation.job_id.to_string().as_str()));
    let call = one(&trace, "WhatsApp call", |s| s.name == "POST");
    assert!(is_ancestor(&trace, sender_work, call), "the Meta call is not inside the sender's span");
    assert_eq!(call.kind, "client");
    assert_eq!(call.attribute("http.request.method"), Some("POST"));
    assert_eq!(call.attribute("http.response.status_code"), Some("200"));
    assert_eq!(call.attribute("server.address"), Some("127.0.0.1"));
    let url = call.attribute("url.full").expect("url.full");
    assert!(url.ends_with(&format!("/{NORTH_NUMBER}/messages")), "{url}");
    assert!(!url.contains('?') && !url.contains("token"), "url.full leaks a query or a token: {url}");
    assert!(
        call.attributes.values().all(|v| !v.contains(asha.trim_start_matches('+')) && !v.contains(FIRST_NAME)),
        "PHI in the call span: {call:#?}"
    );

    // webhook-consumer: each status of the message under the job.due publish, linked to the
    // span of the webhook request that carried it.
    let statuses: Vec<&ReceivedSpan> = trace.iter().filter(|s| s.name == "process whatsapp.status").collect();
    for status in &statuses {
        assert_eq!(status.parent_span_id.as_deref(), Some(publish_job.span_id.as_str()), "{status:#?}");
        assert_eq!(status.attribute("messaging.message.id"), Some(wamid.as_str()));
        assert_eq!(status.links.len(), 1, "no link to the webhook's own span: {status:#?}");
    }
    let seen: Vec<&str> = statuses.iter().filter_map(|s| s.attribute("whatsapp.status")).collect();
    assert!(seen.contains(&"sent") && seen.contains(&"delivered"), "{seen:?}");

    // Every span of the chain shares the one trace id.
    assert!(trace.iter().all(|s| s.trace_id == root.trace_id));
    assert!(trace.len() >= 10, "{}", render_tree(&trace, SHOWN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatsapp_call_carries_its_own_span_as_traceparent() {
    use axum::http::HeaderMap;
    use careline_whatsapp::client::{ClientSettings, WhatsAppClient};
    use careline_whatsapp::types::{SendRequest, Template};
    use std::sync::{Arc, Mutex};
    use tracing::Instrument;

    let (receiver, guard) = tracing_to_receiver();
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let graph = axum::Router::new().route(
        "/v23.0/{id}/messages",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap| async move {
                *seen.lock().unwrap() = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
                r#"{"messaging_product":"whatsapp","messages":[{"id":"wamid.TRACE"}]}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, graph).await });
    let client = WhatsAppClient::new(ClientSettings::new(format!("http://{addr}"), "v23.0", "secret-token")).unwrap();
    let request = SendRequest::template("919812340001", Template::new("e2e_appointment_booked", "en"));
    // In a service the consume span is the caller; here a span of the test's own.
    let accepted =
        client.send("106540352240001", &request).instrument(tracing::info_span!("caller")).await.expect("accepted");
    assert_eq!(accepted.wamid, "wamid.TRACE");

    let traceparent = seen.lock().unwrap().clone().expect("the request carried a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace_id, span_id) = (parts[1].to_owned(), parts[2].to_owned());
    let call = wait_for("the call span is exported", DEADLINE, || async {
        guard.flush();
        receiver.spans().into_iter().find(|s| s.span_id == span_id)
    })
    .await;
    assert_eq!((call.name.as_str(), call.kind, call.trace_id.as_str()), ("POST", "client", trace_id.as_str()));
    assert!(call.parent_span_id.is_some(), "the call span is not inside the caller's span");
    assert!(call.attributes.values().all(|v| !v.contains("secret-token") && !v.contains("919812340001")));
}
