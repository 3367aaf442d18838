//! Bounded fuzzing of the webhook payload parser: random bytes and real Cloud API payloads
//! mutated element by element must never panic it, every JSON object must parse (the parser is
//! lenient by design: a field of the wrong type becomes `None`), and `to_meta_json` must write
//! JSON that reads back as the same value. Seeded: `WEBHOOK_FUZZ_SEED=<n>` replays a run.

use careline_whatsapp::webhook::{InboundContent, WebhookEnvelope, to_meta_json};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ROUNDS: usize = 2000;

fn seeds() -> Vec<Value> {
    let metadata = json!({"display_phone_number": "15550001001", "phone_number_id": "1001"});
    vec![
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": metadata,
        "statuses": [
            {"id": "wamid.HBgM", "status": "delivered", "timestamp": "1764000000", "recipient_id": "919812345678",
             "conversation": {"id": "c1", "origin": {"type": "utility"}},
             "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}},
            {"id": "wamid.HBgN", "status": "failed", "timestamp": "1764000001", "recipient_id": "919812345678",
             "errors": [{"code": 131026, "title": "Message undeliverable", "message": "x",
                         "error_data": {"details": "Receiver incapable"}, "href": "https://developers.facebook.com/"}]}
        ]}}]}]}),
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": metadata,
            "contacts": [{"profile": {"name": "Asha"}, "wa_id": "919812345678"}],
            "messages": [
                {"from": "919812345678", "id": "wamid.IN1", "timestamp": "1764000100", "type": "button",
                 "context": {"from": "15550001001", "id": "wamid.HBgM"}, "button": {"payload": "confirm:A-1", "text": "Confirm"}},
                {"from": "919812345678", "id": "wamid.IN2", "timestamp": "1764000200", "type": "text", "text": {"body": "STOP"}},
                {"from": "919812345678", "id": "wamid.IN3", "timestamp": "1764000300", "type": "interactive",
                 "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Tomorrow", "description": "9:30"}}},
                {"from": "919812345678", "id": "wamid.IN4", "timestamp": "1764000400", "type": "unsupported",
                 "errors": [{"code": 131051, "title": "Message type unknown"}]}
            ],
            "errors": [{"code": 131000, "title": "Something went wrong"}]}}]}]}),
    ]
}

fn seed() -> u64 {
    std::env::var("WEBHOOK_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5741_5f66_757a)
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    const STRINGS: &[&str] =
        &["", "text", "button", "interactive", "failed", "read", "-1", "99999999999999999999", "é\u{0}/", "😀"];
    match rng.random_range(0..8) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        // Eighths print and read back exactly (serde_json does not round-trip every float).
        3 => json!((rng.random_range(-1e9..1e9_f64)).round() / 8.0),
        4 => json!(STRINGS.choose(rng).unwrap()),
        5 => json!((0..rng.random_range(0..30)).map(|_| rng.random::<char>()).collect::<String>()),
        6 if depth < 4 => Value::Array((0..rng.random_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ if depth < 4 => {
            let keys =
                ["id", "type", "status", "timestamp", "text", "body", "errors", "code", "value", "changes", "entry"];
            Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| ((*keys.choose(rng).unwrap()).to_owned(), random_value(rng, depth + 1)))
                    .collect(),
            )
        }
        _ => json!(rng.random_range(-3..3)),
    }
}

fn mutate(value: &mut Value, rng: &mut StdRng, depth: u32) {
    let descend = depth < 8 && rng.random_bool(0.75);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys.choose(rng).unwrap().clone();
            if descend {
                mutate(map.get_mut(&key).unwrap(), rng, depth + 1);
            } else if rng.random_bool(0.3) {
                map.remove(&key);
            } else {
                map.insert(key, random_value(rng, depth));
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            if descend {
                mutate(&mut items[i], rng, depth + 1);
            } else {
                items[i] = random_value(rng, depth);
            }
        }
        other => *other = random_value(rng, depth),
    }
}

/// Everything a consumer does with an envelope.
fn walk(envelope: &WebhookEnvelope) -> usize {
    let mut seen = 0;
    for (_, status) in envelope.statuses() {
        let _ = (status.kind(), status.timestamp_secs());
        seen += 1;
    }
    for (_, message) in envelope.messages() {
        let _ = (message.context_id(), message.timestamp_secs());
        if let InboundContent::Text(body) = message.content() {
            let _ = body.trim().to_uppercase();
        }
        seen += 1;
    }
    for (_, error) in envelope.errors() {
        let _ = (error.class(), error.details());
        seen += 1;
    }
    seen
}

#[test]
fn arbitrary_bytes_and_mutated_payloads_never_panic_and_objects_always_parse() {
    let seed = seed();
    println!("webhook fuzz seed {seed} (WEBHOOK_FUZZ_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds();
    assert_eq!(
        seeds.iter().map(|s| walk(&WebhookEnvelope::parse(s.to_string().as_bytes()).unwrap())).sum::<usize>(),
        7
    );
    for round in 0..ROUNDS {
        let mut value = seeds.choose(&mut rng).unwrap().clone();
        for _ in 0..rng.random_range(1..8) {
            mutate(&mut value, &mut rng, 0);
        }
        let meta = to_meta_json(&value).expect("any JSON value serialises");
        assert_eq!(serde_json::from_slice::<Value>(&meta).expect("Meta-style JSON reads back"), value);
        if value.is_object() {
            let envelope =
                WebhookEnvelope::parse(&meta).unwrap_or_else(|e| panic!("round {round}: an object must parse: {e}"));
            walk(&envelope);
        }
        let mut bytes = value.to_string().into_bytes();
        if round % 3 == 0 {
            let cut = rng.random_range(0..=bytes.len());
            bytes.truncate(cut);
        } else if round % 3 == 1 {
            bytes = (0..rng.random_range(0..200)).map(|_| rng.random()).collect();
        }
        if let Ok(envelope) = WebhookEnvelope::parse(&bytes) {
            walk(&envelope);
        }
    }
}
