//! The RabbitMQ topology, declared idempotently by every service at start-up.
//!
//! ```text
//! {p}.events (topic) ── patient.upserted, appointment.upserted, patient.replied ──▶ {p}.scheduler.events
//!                    └─ patient.replied, consent.changed, patient.needs_human ────▶ {p}.hospital.events
//! {p}.jobs (direct)  ── job.due ──────────────────────────────────────────────────▶ {p}.sender.jobs
//!                    └─ job.due.urgent ───────────────────────────────────────────▶ {p}.sender.jobs.urgent
//! {p}.delay (headers) ── careline-delay-ms = T ──▶ {p}.delay.T (TTL T) ── expired ──▶ {p}.jobs
//! {p}.dlx (topic)    ── # ────────────────────────────────────────────────────────▶ {p}.dead-letters
//! ```
//!
//! Delays (a retry later, a paused number, a recipient who must wait) never hold a consumer:
//! the job is published to `{p}.delay` with a header naming one of [`DELAY_TIERS`], waits in
//! that tier's queue until its TTL expires, and is dead-lettered back to `{p}.jobs` under its
//! original routing key. One queue per tier, because a queue expires messages only at its
//! head: one TTL per queue keeps every message's wait exact. Delay queues are declared on first
//! use, so an environment that never delays anything has none.
//!
//! Every name starts with a prefix (`AMQP_PREFIX`, default `careline`) so environments and
//! tests can share a broker without seeing each other's messages.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

use lapin::{Channel, ExchangeKind};

/// Where the broker is and how names are prefixed.
#[derive(Clone)]
pub struct BusSettings {
    /// `AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    /// `AMQP_PREFIX`: prepended to every exchange and queue name.
    pub prefix: String,
    /// Delete queues unused for this long (tests only; production queues never expire).
    pub queue_expires_ms: Option<u32>,
}

impl std::fmt::Debug for BusSettings {
    // The URL carries credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSettings").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Exchange and queue names for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

/// The waits a delayed job can take, shortest first. A delay is rounded up to the next tier
/// (capped at the last), so a message never comes back before it should.
pub const DELAY_TIERS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
];

/// The header that routes a delayed message to its tier queue.
pub const DELAY_HEADER: &str = "careline-delay-ms";

/// The tier a wait of `delay` goes to: the shortest at least as long (the longest if none is).
pub fn delay_tier(delay: Duration) -> Duration {
    DELAY_TIERS.iter().copied().find(|tier| *tier >= delay).unwrap_or(DELAY_TIERS[DELAY_TIERS.len() - 1])
}

/// Deliveries of one message beyond this count go to the dead-letter exchange, so a poison
/// message cannot loop forever (quorum queues count redeliveries for us).
const DELIVERY_LIMIT: i64 = 20;

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    pub fn scheduler_events(&self) -> String {
        format!("{}.scheduler.events", self.prefix)
    }
    pub fn sender_jobs(&self) -> String {
        format!("{}.sender.jobs", self.prefix)
    }
    /// Booking confirmations and reminders due within hours: consumed ahead of bulk reminders.
    pub fn sender_jobs_urgent(&self) -> String {
        format!("{}.sender.jobs.urgent", self.prefix)
    }
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.prefix)
    }
    /// The queue holding jobs delayed by `tier` (one of [`DELAY_TIERS`]).
    pub fn delay_queue(&self, tier: Duration) -> String {
        format!("{}.delay.{}", self.prefix, tier.as_millis())
    }
    pub fn hospital_events(&self) -> String {
        format!("{}.hospital.events", self.prefix)
    }
    pub fn dead_letters(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    /// The exchange an event with this routing key is published to.
    pub fn exchange_for(&self, routing_key: &str) -> String {
        if routing_key.starts_with("job.") { self.jobs_exchange() } else { self.events_exchange() }
    }

    /// Declares everything. Safe to call from every replica of every service at every start.
    pub async fn declare(&self, channel: &Channel, queue_expires_ms: Option<u32>) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        // Topic: hospital-facing consumers bind to the event families they want.
        channel
            .exchange_declare(self.events_exchange().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        // Direct for now; the sender's recipient sharding replaces it with a consistent-hash exchange.
        channel
            .exchange_declare(self.jobs_exchange().into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
        channel
            .exchange_declare(self.dead_letter_exchange().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        // Headers: a delayed message keeps its own routing key for the way back.
        channel
            .exchange_declare(self.delay_exchange().into(), ExchangeKind::Headers, durable, FieldTable::default())
            .await?;

        let work_queues = [
            (
                self.scheduler_events(),
                self.events_exchange(),
                &["patient.upserted", "appointment.upserted", "patient.replied"][..],
            ),
            (self.sender_jobs(), self.jobs_exchange(), &["job.due"][..]),
            (self.sender_jobs_urgent(), self.jobs_exchange(), &["job.due.urgent"][..]),
            (
                self.hospital_events(),
                self.events_exchange(),
                &["patient.replied", "consent.changed", "patient.needs_human"][..],
            ),
        ];
        for (queue, exchange, keys) in work_queues {
            let mut args = FieldTable::default();
            // Quorum: replicated and fsynced before the publisher confirm, so a confirmed event
            // survives a broker restart (and a node loss in a cluster).
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            // Rejected (poison) and over-delivered messages are kept, not dropped.
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_letter_exchange().into()));
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
            if let Some(ms) = queue_expires_ms {
                args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
            }
            channel
                .queue_declare(queue.clone().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
                .await?;
            for key in keys {
                channel
                    .queue_bind(
                        queue.clone().into(),
                        exchange.clone().into(),
                        (*key).into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }

        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(ms) = queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        channel
            .queue_declare(
                self.dead_letters().into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                args,
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letters().into(),
                self.dead_letter_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

impl Topology {
    /// Declares the queue of one delay tier and binds it. Safe to repeat.
    pub async fn declare_delay_queue(
        &self,
        channel: &Channel,
        tier: Duration,
        queue_expires_ms: Option<u32>,
    ) -> lapin::Result<()> {
        let tier_ms = u32::try_from(tier.as_millis()).unwrap_or(u32::MAX);
        let mut args = FieldTable::default();
        // Quorum: a delayed job is as durable as a queued one.
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-message-ttl".into(), AMQPValue::LongUInt(tier_ms));
        // Expired messages go back to the jobs exchange under their own routing key.
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.jobs_exchange().into()));
        // At-least-once dead-lettering (quorum queues, RabbitMQ 3.10+): the broker keeps an
        // expired message until the jobs queue has confirmed it, so none is lost on the way
        // back. It requires `reject-publish` overflow.
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        if let Some(ms) = queue_expires_ms {
            // Tests: never expire a tier queue while its messages still wait.
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms.max(tier_ms.saturating_mul(2))));
        }
        let queue = self.delay_queue(tier);
        channel
            .queue_declare(queue.clone().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await?;
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), AMQPValue::LongString("all".into()));
        binding.insert(DELAY_HEADER.into(), AMQPValue::LongString(tier_ms.to_string().into()));
        channel
            .queue_bind(queue.into(), self.delay_exchange().into(), "".into(), QueueBindOptions::default(), binding)
            .await
    }
}

impl BusSettings {
    /// `AMQP_URL` (default the local broker), `AMQP_PREFIX` (default `careline`),
    /// `AMQP_QUEUE_EXPIRES_MS` (unset: queues never expire).
    pub fn from_env() -> Result<Self, careline_telemetry::EnvError> {
        Ok(Self {
            url: careline_telemetry::env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())?,
            prefix: careline_telemetry::env_or("AMQP_PREFIX", "careline".to_owned())?,
            queue_expires_ms: careline_telemetry::env_opt("AMQP_QUEUE_EXPIRES_MS")?,
        })
    }

    /// Settings for one test: the local broker (or `AMQP_URL`), a fresh prefix, and queues
    /// that delete themselves ten minutes after the test stops using them.
    pub fn for_test() -> Self {
        Self {
            url: std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            queue_expires_ms: Some(60_000),
        }
    }
}
