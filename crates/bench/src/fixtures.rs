//! What every run sets up: a fresh database (migrated by the sender binary itself, so a new
//! sender's migrations are the ones applied), a fresh AMQP prefix, the network file, fixtures
//! seeded in bulk, and `job.due` envelopes published through `careline_bus::Publisher`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use careline_bus::{BusSettings, Publisher, Topology};
use careline_domain::events::{Envelope, Event, JobDue};
use chrono::{DateTime, Utc};
use lapin::options::QueueDeleteOptions;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::procs::Proc;

/// The access token the sender presents and wa-sandbox expects.
pub const ACCESS_TOKEN: &str = "bench-access-token";
/// The raw baseline's queue deletes itself this long after its last use if a run dies.
pub const QUEUE_EXPIRES_MS: u32 = 120_000;
/// Jobs published per confirmed batch.
const PUBLISH_BATCH: usize = 1000;

/// Settings shared by every scenario.
#[derive(Clone)]
pub struct Env {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub database_url: String,
    pub amqp_url: String,
    /// `RUST_LOG` of the processes started.
    pub rust_log: String,
    /// Extra variables for every sender process (`--sender-env`).
    pub sender_env: Vec<(String, String)>,
    /// Keep databases after the run.
    pub keep: bool,
    /// `AMQP_QUEUE_EXPIRES_MS` of every process: queues a crashed run leaves behind delete
    /// themselves this long after their last use. Longer than any wait of the run, since a
    /// queue nobody consumes (dead letters, delays) counts as unused however full it is.
    pub queue_expires_ms: u32,
    /// PostgreSQL connections all sender replicas of a scenario may hold together.
    pub db_connections: usize,
    /// RabbitMQ's management API, to find every queue of a run's prefix at the end.
    pub management_url: String,
    pub http: reqwest::Client,
}

impl Env {
    /// Variables every Careline process gets.
    pub fn common_env(&self, db: &Db, prefix: &str) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", db.url.as_str()),
            ("AMQP_URL", self.amqp_url.as_str()),
            ("AMQP_PREFIX", prefix),
            ("AMQP_QUEUE_EXPIRES_MS", &self.queue_expires_ms.to_string()),
            ("MIGRATE_ON_START", "false"),
            ("RUST_LOG", self.rust_log.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn bus(&self, prefix: &str) -> BusSettings {
        BusSettings {
            url: self.amqp_url.clone(),
            prefix: prefix.to_owned(),
            queue_expires_ms: Some(self.queue_expires_ms),
        }
    }

    /// A directory for one scenario's logs and files.
    pub fn scenario_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }
}

/// A fresh AMQP prefix; never `test-…`, which `make clean-test-dbs` deletes.
pub fn fresh_prefix() -> String {
    format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Names of the queues whose name starts with `prefix.`, from the management API.
async fn queues_of(env: &Env, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut url = reqwest::Url::parse(&env.management_url).context("--management-url")?;
    let (user, password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let url = url.join("api/queues?columns=name")?;
    let list: Value = env.http.get(url).basic_auth(user, password).send().await?.error_for_status()?.json().await?;
    let own = format!("{prefix}.");
    Ok(list
        .as_array()
        .context("not a list")?
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|name| name.starts_with(&own))
        .map(str::to_owned)
        .collect())
}

/// Deletes the run's queues: every queue of the prefix the management API lists, else those
/// the bus crate names (the others then expire by themselves).
pub async fn delete_queues(env: &Env, prefix: &str) {
    let Ok(conn) = lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await else {
        return;
    };
    let t = Topology::new(prefix);
    let queues = match queues_of(env, prefix).await {
        Ok(queues) => queues,
        Err(e) => {
            eprintln!("cannot list the run's queues through the management API ({e:#}); deleting the known ones");
            vec![t.sender_jobs(), t.scheduler_events(), t.hospital_events(), t.dead_letters()]
        }
    };
    for queue in queues {
        // A failed delete closes the channel: one channel per queue.
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// A database of the run's own.
pub struct Db {
    pub name: String,
    pub url: String,
    admin_url: String,
    pub pool: PgPool,
}

fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).context("DATABASE_URL is not a URL")?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

impl Db {
    /// Creates `careline_bench_<random>` and lets the sender binary migrate it.
    pub async fn create(env: &Env, dir: &Path) -> anyhow::Result<Self> {
        let name = format!("careline_bench_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let admin = PgPoolOptions::new().max_connections(1).connect(&env.database_url).await.context("PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&admin).await?;
        admin.close().await;
        let url = with_database(&env.database_url, &name)?;
        let migrate_env = vec![("DATABASE_URL".to_owned(), url.clone()), ("RUST_LOG".to_owned(), "warn".to_owned())];
        let pool = PgPoolOptions::new().max_connections(4).connect_lazy(&url)?;
        let db = Self { name, url, admin_url: env.database_url.clone(), pool };
        if let Err(e) = Proc::run_to_end(&env.bin_dir, "sender", &["migrate"], &migrate_env, dir).await {
            db.drop_unless(false).await;
            return Err(e);
        }
        Ok(db)
    }

    /// Drops the database (unless `keep`).
    pub async fn drop_unless(self, keep: bool) {
        self.pool.close().await;
        if keep {
            eprintln!("kept database {}", self.name);
            return;
        }
        if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

/// A business number of the run and its ceiling (messages per second).
#[derive(Debug, Clone)]
pub struct Number {
    pub id: String,
    pub mps: u32,
}

impl Number {
    pub fn nth(n: usize, mps: u32) -> Self {
        Self { id: format!("10990000000{:04}", n + 1), mps }
    }

    pub fn facility(&self) -> String {
        format!("bench-{}", self.id)
    }
}

/// The network file: one facility per number, the reminder templates wa-sandbox has built in.
pub fn network_toml(numbers: &[Number]) -> String {
    let mut s = String::from(
        r#"default_language = "en"

[templates.booking_confirmation]
name = "appointment_booked"
languages = { en = "en" }
body = ["first_name", "date_time", "facility"]
buttons = ["confirm", "reschedule", "cancel"]

[templates.reminder]
name = "appointment_reminder"
languages = { en = "en" }
body = ["first_name", "date_time", "clinician", "facility", "address"]
buttons = ["confirm", "reschedule", "cancel"]
"#,
    );
    for n in numbers {
        s.push_str(&format!(
            r#"
[[facility]]
id = "{}"
name = "Bench Hospital {}"
time_zone = "Asia/Kolkata"
address = "1 Bench Road"
phone_number_id = "{}"
throughput_mps = {}
"#,
            n.facility(),
            n.id,
            n.id,
            n.mps
        ));
    }
    s
}

pub fn write_network(dir: &Path, numbers: &[Number]) -> anyhow::Result<PathBuf> {
    let path = dir.join("careline.toml");
    std::fs::write(&path, network_toml(numbers))?;
    Ok(path)
}

/// A seeded job.
#[derive(Debug, Clone)]
pub struct SeededJob {
    pub job_id: Uuid,
    pub appointment_id: String,
}

/// Seeds `count` patients (one recipient each, opted in), appointments two days ahead and
/// `reminder_48h` jobs in state `enqueued`, spread round-robin over the numbers' facilities.
pub async fn seed(pool: &PgPool, numbers: &[Number], count: usize) -> anyhow::Result<Vec<SeededJob>> {
    let facilities: Vec<String> = numbers.iter().map(Number::facility).collect();
    let n = i64::try_from(count)?;
    let mut tx = pool.begin().await?;
    // Indian mobile numbers +9198xxxxxxxx: valid for libphonenumber, one per job.
    sqlx::query(
        "INSERT INTO patients (patient_id, facility_id, first_name, phone_e164, language, reported_at)
         SELECT 'P' || i, ($2::text[])[1 + i % cardinality($2::text[])], 'Bench',
                '+9198' || lpad(i::text, 8, '0'), 'en', now()
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .bind(&facilities)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO consent_log (patient_id, phone_e164, state, recorded_at, source, recorded_by)
         SELECT 'P' || i, '+9198' || lpad(i::text, 8, '0'), 'opted_in', now() - interval '1 day',
                'front_desk', 'careline-bench'
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO appointments (appointment_id, facility_id, patient_id, version, generation, status,
                                   starts_at, duration_minutes, clinician)
         SELECT 'A' || i, ($2::text[])[1 + i % cardinality($2::text[])], 'P' || i, 1, 1, 'booked',
                now() + interval '2 days', 20, 'Dr. Bench'
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n)
    .bind(&facilities)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO jobs (job_id, appointment_id, generation, kind, due_at, state, enqueued_at)
         SELECT gen_random_uuid(), 'A' || i, 1, 'reminder_48h', now(), 'enqueued', now()
         FROM generate_series(0, $1 - 1) AS i
         RETURNING job_id, appointment_id",
    )
    .bind(n)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(job_id, appointment_id)| SeededJob { job_id, appointment_id }).collect())
}

/// The `job.due` envelope of a job, due at `due_at`. Built from JSON so that fields a newer
/// bus schema adds with defaults do not break the harness.
pub fn job_envelope(job: &SeededJob, due_at: DateTime<Utc>) -> anyhow::Result<Envelope> {
    let data: JobDue = serde_json::from_value(json!({
        "job_id": job.job_id,
        "appointment_id": job.appointment_id,
        "generation": 1,
        "kind": "reminder_48h",
        "due_at": due_at,
    }))
    .context("job.due no longer has the shape the bench builds")?;
    Ok(Envelope::new(Event::JobDue(data), due_at))
}

/// Publishes every job at once, in confirmed batches; returns each job's due time (its
/// batch's publish time).
pub async fn publish_all(publisher: &Publisher, jobs: &[SeededJob]) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let mut due = HashMap::with_capacity(jobs.len());
    for chunk in jobs.chunks(PUBLISH_BATCH) {
        let now = Utc::now();
        let envelopes = chunk.iter().map(|j| job_envelope(j, now)).collect::<anyhow::Result<Vec<_>>>()?;
        publisher.publish_all(&envelopes).await.context("publishing job.due")?;
        due.extend(chunk.iter().map(|j| (j.job_id, now)));
    }
    Ok(due)
}

/// Publishes `rate` jobs per second in small batches every 50 ms (each job due when its batch
/// leaves).
pub async fn publish_paced(
    publisher: Arc<Publisher>,
    jobs: &[SeededJob],
    rate: u32,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let tick = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    let mut due = HashMap::with_capacity(jobs.len());
    let mut sent = 0usize;
    let mut ticker = tokio::time::interval(tick);
    while sent < jobs.len() {
        ticker.tick().await;
        let target = ((started.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(jobs.len());
        if target <= sent {
            continue;
        }
        let now = Utc::now();
        let batch = &jobs[sent..target];
        let envelopes = batch.iter().map(|j| job_envelope(j, now)).collect::<anyhow::Result<Vec<_>>>()?;
        publisher.publish_all(&envelopes).await.context("publishing job.due")?;
        due.extend(batch.iter().map(|j| (j.job_id, now)));
        sent = target;
    }
    Ok(due)
}

/// wa-sandbox's admin API.
pub struct Sandbox {
    pub base_url: String,
    http: reqwest::Client,
}

impl Sandbox {
    pub fn new(http: &reqwest::Client, base_url: String) -> Self {
        Self { base_url, http: http.clone() }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base_url)).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        self.get("/_sandbox/stats").await
    }

    /// Accepted messages: (phone_number_id, accepted_at).
    pub async fn acceptances(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        let messages = self.get("/_sandbox/messages").await?;
        let list = messages.as_array().context("/_sandbox/messages is not a list")?;
        list.iter()
            .map(|m| {
                let number = m["phone_number_id"].as_str().context("phone_number_id")?.to_owned();
                let at = m["accepted_at"].as_str().context("accepted_at")?.parse()?;
                Ok((number, at))
            })
            .collect()
    }

    /// Acceptances per `biz_opaque_callback_data`.
    pub async fn callbacks(&self) -> anyhow::Result<HashMap<String, u64>> {
        let map = self.get("/_sandbox/callbacks").await?;
        let map = map.as_object().context("/_sandbox/callbacks is not an object")?;
        Ok(map.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
    }
}

/// Counters out of a stats document (0 when absent).
pub fn stat(stats: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(stats, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0)
}
