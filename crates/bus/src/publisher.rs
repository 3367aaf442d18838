//! Confirmed publishing.
//!
//! Every publish is persistent and mandatory, on a channel in confirm mode: it succeeds only
//! when the broker has taken responsibility for the message (quorum queues confirm after the
//! write is replicated). A nack, or a message returned because no queue is bound, is an error,
//! so a caller never tells its client "accepted" for something that could still be lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use careline_domain::events::Envelope;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::topology::{BusSettings, DELAY_HEADER, Topology, delay_tier};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: {0}")]
    Unavailable(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key '{0}'")]
    Unroutable(String),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A lazily connected, self-healing confirmed publisher. Cheap to share behind an `Arc`;
/// concurrent publishes share one channel and wait for their own confirms.
pub struct Publisher {
    settings: BusSettings,
    topology: Topology,
    name: String,
    link: Mutex<Option<(Connection, Channel)>>,
    /// Delay tiers declared on the current channel.
    delay_queues: std::sync::Mutex<HashSet<Duration>>,
}

impl Publisher {
    /// A publisher that connects on first use (so a service can start while the broker is down).
    pub fn new(settings: BusSettings, name: &str) -> Self {
        let topology = Topology::new(&settings.prefix);
        Self {
            settings,
            topology,
            name: name.to_owned(),
            link: Mutex::new(None),
            delay_queues: std::sync::Mutex::new(HashSet::new()),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Connects (and declares the topology) unless already connected.
    pub async fn ensure_connected(&self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// Whether the last known connection is open.
    pub async fn is_connected(&self) -> bool {
        matches!(&*self.link.lock().await, Some((c, ch)) if c.status().connected() && ch.status().connected())
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = self.link.lock().await;
        if let Some((conn, channel)) = &*link
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let conn = crate::connect(&self.settings, &format!("{}-publisher", self.name)).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        self.topology.declare(&channel, self.settings.queue_expires_ms).await?;
        self.delay_queues.lock().expect("never poisoned").clear();
        *link = Some((conn, channel.clone()));
        Ok(channel)
    }

    async fn forget(&self) {
        *self.link.lock().await = None;
    }

    /// Publishes one event and waits for the broker's confirm. A broken connection is
    /// re-opened once before giving up.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(envelope)).await
    }

    /// Publishes several events, then waits for all their confirms (far faster than one by
    /// one). On error, some may have been confirmed; callers publish idempotent events.
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        match self.try_publish_all(envelopes).await {
            Err(PublishError::Unavailable(first)) => {
                tracing::warn!(error = %first, "publish failed; reconnecting once");
                self.forget().await;
                self.try_publish_all(envelopes).await
            }
            other => other,
        }
    }

    async fn try_publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let mut pending = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let key = envelope.event.routing_key();
            let exchange = self.topology.exchange_for(key);
            pending.push(self.start_publish(&channel, envelope, exchange, trace_headers()).await?);
        }
        self.await_confirms(pending).await?;
        metrics::counter!("careline_events_published_total").increment(envelopes.len() as u64);
        Ok(())
    }

    /// Publishes a job so that it comes back to its queue after `delay`, rounded up to a delay
    /// tier (see [`crate::topology`]), and returns the tier's delay. Confirmed like any publish.
    pub async fn publish_delayed(&self, envelope: &Envelope, delay: Duration) -> Result<Duration, PublishError> {
        match self.try_publish_delayed(envelope, delay).await {
            Err(PublishError::Unavailable(first)) => {
                tracing::warn!(error = %first, "delayed publish failed; reconnecting once");
                self.forget().await;
                self.try_publish_delayed(envelope, delay).await
            }
            other => other,
        }
    }

    async fn try_publish_delayed(&self, envelope: &Envelope, delay: Duration) -> Result<Duration, PublishError> {
        let tier = delay_tier(delay);
        let channel = self.channel().await?;
        let declared = self.delay_queues.lock().expect("never poisoned").contains(&tier);
        if !declared {
            self.topology.declare_delay_queue(&channel, tier, self.settings.queue_expires_ms).await?;
            self.delay_queues.lock().expect("never poisoned").insert(tier);
        }
        let mut headers = trace_headers();
        headers.insert(DELAY_HEADER.into(), AMQPValue::LongString(tier.as_millis().to_string().into()));
        let pending = self.start_publish(&channel, envelope, self.topology.delay_exchange(), headers).await?;
        self.await_confirms(vec![pending]).await?;
        metrics::counter!("careline_events_delayed_total", "tier" => format!("{}s", tier.as_secs())).increment(1);
        Ok(tier)
    }

    async fn start_publish(
        &self,
        channel: &Channel,
        envelope: &Envelope,
        exchange: String,
        headers: FieldTable,
    ) -> Result<(&'static str, lapin::PublisherConfirm), PublishError> {
        let key = envelope.event.routing_key();
        let payload = serde_json::to_vec(envelope)?;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(envelope.message_id.to_string().into())
            .with_type(key.into())
            .with_headers(headers);
        match channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &payload,
                props,
            )
            .await
        {
            Ok(confirm) => Ok((key, confirm)),
            Err(e) => {
                self.forget().await;
                Err(e.into())
            }
        }
    }

    async fn await_confirms(&self, pending: Vec<(&'static str, lapin::PublisherConfirm)>) -> Result<(), PublishError> {
        for (key, confirm) in pending {
            match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(_))) => return Err(PublishError::Unroutable(key.to_owned())),
                Ok(Confirmation::Nack(_)) => return Err(PublishError::Nacked),
                Err(e) => {
                    self.forget().await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

/// W3C trace context of the current span, as AMQP headers (`traceparent`, `tracestate`).
fn trace_headers() -> FieldTable {
    let mut carrier: HashMap<String, String> = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    let mut headers = FieldTable::default();
    for (k, v) in carrier {
        headers.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    headers
}
