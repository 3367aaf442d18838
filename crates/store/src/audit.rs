//! The audit trail: append-only, hash-chained.
//!
//! Each row is `(seq, recorded_at, kind, actor, subject ids, body, prev_hash, hash)` with
//! `hash = SHA-256(prev_hash || canonical(row))`, where `canonical` is the JSON of every other
//! field with object keys sorted and times as microseconds since the epoch. The first row's
//! `prev_hash` is 32 zero bytes. [`verify`] recomputes the chain and names the first row that
//! does not match, so an edited, deleted or inserted row is found.
//!
//! Appends are serialised by a transaction-scoped advisory lock (the chain has one tail), held
//! until the caller's transaction ends: keep audited transactions short. Rows carry ids,
//! kinds, states and error codes — never a phone number, a name or message text — which is why
//! erasure and retention never rewrite them and the chain stays verifiable after both.
//!
//! Anyone who acts appends in the transaction of the act: [`append`] takes the caller's
//! connection (`&mut *tx`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// The advisory lock key of the chain's tail ("audit" in ASCII).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;
/// `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// What happened, to whom. Subject ids are Careline's and the hospital's ids, never contact data.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord<'a> {
    /// `consent.recorded`, `job.planned`, `reply.received`, `message.status`, `send.attempt`, …
    pub kind: &'a str,
    /// The component (or operator) that acted.
    pub actor: &'a str,
    pub patient_id: Option<&'a str>,
    pub appointment_id: Option<&'a str>,
    pub job_id: Option<Uuid>,
    pub wamid: Option<&'a str>,
    pub inbound_message_id: Option<&'a str>,
    /// Non-identifying details (states, codes, kinds); no free text.
    pub body: Value,
    /// Makes the append idempotent.
    pub dedupe_key: Option<&'a str>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub kind: String,
    pub actor: String,
    pub patient_id: Option<String>,
    pub appointment_id: Option<String>,
    pub job_id: Option<Uuid>,
    pub wamid: Option<String>,
    pub inbound_message_id: Option<String>,
    pub body: Value,
    pub dedupe_key: Option<String>,
    #[serde(serialize_with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub hash: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Appends a record in the caller's transaction; returns its `seq`, or `None` when a record
/// with the same `dedupe_key` exists already.
pub async fn append(conn: &mut PgConnection, record: &AuditRecord<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *conn).await?;
    if let Some(key) = record.dedupe_key {
        let seen: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_log WHERE dedupe_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if seen.is_some() {
            return Ok(None);
        }
    }
    let tail: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    let (seq, prev_hash) = tail.map_or((1, GENESIS.to_vec()), |(seq, hash)| (seq + 1, hash));
    // PostgreSQL keeps microseconds: hash what will be read back.
    let recorded_at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default();
    let row = AuditRow {
        seq,
        recorded_at,
        kind: record.kind.to_owned(),
        actor: record.actor.to_owned(),
        patient_id: record.patient_id.map(str::to_owned),
        appointment_id: record.appointment_id.map(str::to_owned),
        job_id: record.job_id,
        wamid: record.wamid.map(str::to_owned),
        inbound_message_id: record.inbound_message_id.map(str::to_owned),
        body: record.body.clone(),
        dedupe_key: record.dedupe_key.map(str::to_owned),
        prev_hash,
        hash: Vec::new(),
    };
    let hash = row_hash(&row);
    sqlx::query(
        "INSERT INTO audit_log (seq, recorded_at, kind, actor, patient_id, appointment_id, job_id, wamid,
                                inbound_message_id, body, dedupe_key, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(row.seq)
    .bind(row.recorded_at)
    .bind(&row.kind)
    .bind(&row.actor)
    .bind(&row.patient_id)
    .bind(&row.appointment_id)
    .bind(row.job_id)
    .bind(&row.wamid)
    .bind(&row.inbound_message_id)
    .bind(&row.body)
    .bind(&row.dedupe_key)
    .bind(&row.prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    Ok(Some(seq))
}

/// `SHA-256(prev_hash || canonical(row without its hash))`.
pub fn row_hash(row: &AuditRow) -> Vec<u8> {
    let fields = serde_json::json!({
        "seq": row.seq,
        "recorded_at_us": row.recorded_at.timestamp_micros(),
        "kind": row.kind,
        "actor": row.actor,
        "patient_id": row.patient_id,
        "appointment_id": row.appointment_id,
        "job_id": row.job_id.map(|j| j.to_string()),
        "wamid": row.wamid,
        "inbound_message_id": row.inbound_message_id,
        "body": row.body,
        "dedupe_key": row.dedupe_key,
    });
    let mut canonical = String::new();
    write_canonical(&fields, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(&row.prev_hash);
    hasher.update(canonical.as_bytes());
    hasher.finalize().to_vec()
}

/// JSON with object keys sorted at every level and no whitespace, whatever serde_json's map
/// order is.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows checked.
    pub rows: u64,
    /// The last row's hash (hex), the value to compare with a copy kept elsewhere.
    pub head: Option<String>,
    /// The first row that does not match, if any.
    pub first_broken: Option<BrokenRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRow {
    pub seq: i64,
    pub problem: String,
}

/// Rows read per query while verifying.
const VERIFY_PAGE: i64 = 1000;

/// Walks the chain from the first row and reports the first row that does not match: a
/// changed row (its hash), a removed or inserted row (a gap in `seq`, or a `prev_hash` that is
/// not the previous row's hash).
pub async fn verify(conn: &mut PgConnection) -> sqlx::Result<Verification> {
    let mut expected_prev = GENESIS.to_vec();
    let mut expected_seq = 1i64;
    let mut rows = 0u64;
    loop {
        let page: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, recorded_at, kind, actor, patient_id, appointment_id, job_id, wamid, inbound_message_id,
                    body, dedupe_key, prev_hash, hash
             FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(expected_seq)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        if page.is_empty() {
            let head = (rows > 0).then(|| hex::encode(&expected_prev));
            return Ok(Verification { rows, head, first_broken: None });
        }
        for row in page {
            let broken = |problem: String| Verification {
                rows,
                head: None,
                first_broken: Some(BrokenRow { seq: row.seq, problem }),
            };
            if row.seq != expected_seq {
                return Ok(broken(format!("expected seq {expected_seq}: rows are missing")));
            }
            if row.prev_hash != expected_prev {
                return Ok(broken("prev_hash is not the previous row's hash".to_owned()));
            }
            if row_hash(&row) != row.hash {
                return Ok(broken("hash does not match the row's content".to_owned()));
            }
            rows += 1;
            expected_seq += 1;
            expected_prev = row.hash;
        }
    }
}

/// Every row naming a patient, directly or through one of the patient's appointments or jobs.
pub async fn for_patient(conn: &mut PgConnection, patient_id: &str) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(
        "SELECT seq, recorded_at, kind, actor, patient_id, appointment_id, job_id, wamid, inbound_message_id,
                body, dedupe_key, prev_hash, hash
         FROM audit_log
         WHERE patient_id = $1
            OR appointment_id IN (SELECT appointment_id FROM appointments WHERE patient_id = $1)
            OR job_id IN (SELECT j.job_id FROM jobs j JOIN appointments a USING (appointment_id) WHERE a.patient_id = $1)
         ORDER BY seq",
    )
    .bind(patient_id)
    .fetch_all(conn)
    .await
}
