//! Delivering webhooks the way Meta does.
//!
//! - Events wait in a due-time queue; the dispatcher wakes for the earliest, takes what is due
//!   (plus whatever falls due within the batch window, up to the batch size) and POSTs it as
//!   one envelope: one entry, one change per (business number, statuses|messages).
//! - The body is serialised like Meta's (`\/`, `\uXXXX`) and signed over those exact bytes
//!   with `X-Hub-Signature-256`, so a consumer that re-serialises before verifying fails here
//!   as it would in production.
//! - Anything but HTTP 200 is retried with exponential backoff, a bounded number of times.
//!   Retried batches travel independently of later ones, so retries reorder events, as
//!   Meta's do.
//! - POSTs in flight are bounded by a semaphore: a slow receiver slows the sandbox's
//!   deliveries, not its memory.

use std::sync::Arc;
use std::time::Duration;

use careline_whatsapp::signature::{SIGNATURE_HEADER, sign};
use careline_whatsapp::webhook::to_meta_json;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Engine, Event, EventKind};

/// Runs until `stop` is cancelled; returns once deliveries in flight have stopped.
pub(crate) async fn run_dispatcher(engine: Arc<Engine>, http: reqwest::Client, stop: CancellationToken) {
    let Some(url) = engine.settings.webhook_url.clone() else {
        stop.cancelled().await;
        return;
    };
    let delivery = engine.settings.delivery.clone();
    let permits = Arc::new(Semaphore::new(delivery.concurrency));
    let tracker = TaskTracker::new();
    loop {
        let (batch, next_due) = engine.take_due(Instant::now(), delivery.batch_window, delivery.batch_max);
        if !batch.is_empty() {
            let events = batch.len() as u64;
            let body = match to_meta_json(&envelope(&engine.settings.waba_id, batch)) {
                Ok(body) => body,
                Err(error) => {
                    tracing::error!(%error, "could not serialise a webhook batch");
                    engine.finish_delivery(events, false);
                    continue;
                }
            };
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => permit,
                () = stop.cancelled() => {
                    engine.finish_delivery(events, false);
                    break;
                }
            };
            let Ok(permit) = permit else {
                break;
            };
            let (engine, http, url, stop) = (Arc::clone(&engine), http.clone(), url.clone(), stop.clone());
            tracker.spawn(async move {
                let delivered = deliver(&engine, &http, &url, &body, &stop).await;
                engine.finish_delivery(events, delivered);
                drop(permit);
            });
            continue;
        }
        let sleep = async {
            match next_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = engine.wake.notified() => {}
            () = sleep => {}
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// POSTs one signed body until the receiver answers 200, the attempts run out, or the
/// sandbox stops. Returns whether it was delivered.
async fn deliver(engine: &Engine, http: &reqwest::Client, url: &str, body: &[u8], stop: &CancellationToken) -> bool {
    let settings = &engine.settings.delivery;
    let signature = sign(engine.settings.app_secret.as_bytes(), body);
    for attempt in 0..settings.max_attempts {
        let request = http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .body(body.to_vec())
            .send();
        let result = tokio::select! {
            result = request => result,
            () = stop.cancelled() => return false,
        };
        let ok = matches!(&result, Ok(response) if response.status() == reqwest::StatusCode::OK);
        let retrying = !ok && attempt + 1 < settings.max_attempts;
        engine.record_post(ok, retrying);
        if ok {
            return true;
        }
        match &result {
            Ok(response) => {
                tracing::warn!(status = response.status().as_u16(), attempt, "webhook receiver refused a batch")
            }
            Err(error) => tracing::warn!(%error, attempt, "webhook POST failed"),
        }
        if !retrying {
            break;
        }
        let delay = backoff(settings.retry_base, settings.retry_max, attempt);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return false,
        }
    }
    tracing::warn!(attempts = settings.max_attempts, "webhook batch dropped after its last attempt");
    false
}

/// `base · 2^attempt`, capped at `max`.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt)).min(max)
}

/// One envelope for a batch: changes grouped by business number and kind, first-seen order.
fn envelope(waba_id: &str, events: Vec<Event>) -> Value {
    struct Group {
        phone_number_id: String,
        display: String,
        kind: EventKind,
        items: Vec<Value>,
        contacts: Vec<Value>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for event in events {
        let index = groups.iter().position(|g| g.phone_number_id == event.phone_number_id && g.kind == event.kind);
        let group = match index {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Group {
                    phone_number_id: event.phone_number_id.clone(),
                    display: event.display_phone_number.clone(),
                    kind: event.kind,
                    items: Vec::new(),
                    contacts: Vec::new(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        group.items.push(event.item);
        if let Some(contact) = event.contact
            && !group.contacts.contains(&contact)
        {
            group.contacts.push(contact);
        }
    }
    let changes: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let mut value = json!({
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": g.display, "phone_number_id": g.phone_number_id },
            });
            match g.kind {
                EventKind::Status => value["statuses"] = Value::Array(g.items),
                EventKind::Inbound => {
                    value["contacts"] = Value::Array(g.contacts);
                    value["messages"] = Value::Array(g.items);
                }
            }
            json!({ "value": value, "field": "messages" })
        })
        .collect();
    json!({
        "object": "whatsapp_business_account",
        "entry": [ { "id": waba_id, "changes": changes } ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use careline_whatsapp::webhook::WebhookEnvelope;

    fn event(number: &str, kind: EventKind, id: &str) -> Event {
        Event {
            phone_number_id: number.into(),
            display_phone_number: format!("1555{number}"),
            kind,
            item: json!({ "id": id }),
            contact: (kind == EventKind::Inbound).then(|| json!({ "wa_id": "919812345678" })),
            wamid: id.into(),
            status: None,
            duplicate: false,
        }
    }

    #[test]
    fn a_batch_groups_changes_by_number_and_kind() {
        let body = envelope(
            "waba",
            vec![
                event("1", EventKind::Status, "s1"),
                event("2", EventKind::Status, "s2"),
                event("1", EventKind::Inbound, "m1"),
                event("1", EventKind::Status, "s3"),
                event("1", EventKind::Inbound, "m2"),
            ],
        );
        let parsed = WebhookEnvelope::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(parsed.entry[0].changes.len(), 3);
        let statuses: Vec<_> = parsed
            .statuses()
            .map(|(m, s)| (m.unwrap().phone_number_id.clone().unwrap(), s.id.clone().unwrap()))
            .collect();
        assert_eq!(statuses, vec![("1".into(), "s1".into()), ("1".into(), "s3".into()), ("2".into(), "s2".into())]);
        let inbound = parsed.changes().find(|v| !v.messages.is_empty()).unwrap();
        assert_eq!(inbound.messages.len(), 2);
        assert_eq!(inbound.contacts.len(), 1, "one contact per sender");
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let delays: Vec<u128> = (0..10).map(|a| backoff(base, max, a).as_millis()).collect();
        assert_eq!(&delays[..7], &[500, 1000, 2000, 4000, 8000, 16000, 30000]);
        assert_eq!(backoff(base, max, u32::MAX), max);
    }
}
