//! Confirmed publishing.
//!
//! Every publish is persistent and mandatory, on a channel in confirm mode: it succeeds only
//! when the broker has taken responsibility for the message (quorum queues confirm after the
//! write is replicated). A nack, or a message returned because no queue is bound, is an error,
//! so a caller never tells its client "accepted" for something that could still be lost.
//!
//! Every publish has a `PRODUCER` span and carries its W3C trace context in the AMQP headers
//! (`traceparent`), so the consumer's span continues the same trace.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use careline_domain::events::Envelope;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use tracing::Instrument;
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
        crate::describe_metrics();
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
    /// one). On error, some may have been confirmed; callers publish idempotent events. Each
    /// event's `publish` span is a child of the current span.
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        let batch: Vec<(&Envelope, Option<&str>)> = envelopes.iter().map(|e| (e, None)).collect();
        self.publish_traced(&batch).await.map(|_| ())
    }

    /// [`Publisher::publish_all`] for work that continues a stored trace: each event's
    /// `publish` span is a child of its `traceparent` when given (the current span otherwise).
    /// Returns the `traceparent` of each event's `publish` span (`None` when tracing is off),
    /// so the caller can store where the message entered the trace.
    pub async fn publish_traced(
        &self,
        batch: &[(&Envelope, Option<&str>)],
    ) -> Result<Vec<Option<String>>, PublishError> {
        match self.try_publish_all(batch).await {
            Err(PublishError::Unavailable(first)) => {
                tracing::warn!(error = %first, "publish failed; reconnecting once");
                self.forget().await;
                self.try_publish_all(batch).await
            }
            other => other,
        }
    }

    async fn try_publish_all(&self, batch: &[(&Envelope, Option<&str>)]) -> Result<Vec<Option<String>>, PublishError> {
        let channel = self.channel().await?;
        let mut pending = Vec::with_capacity(batch.len());
        for (envelope, parent) in batch {
            let key = envelope.event.routing_key();
            let exchange = self.topology.exchange_for(key);
            let span = publish_span(&exchange, key, envelope, *parent);
            let payload = serde_json::to_vec(envelope)?;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(envelope.message_id.to_string().into())
                .with_type(key.into())
                .with_headers(trace_headers(&span));
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &payload,
                    props,
                )
                .instrument(span.clone())
                .await;
            match confirm {
                Ok(c) => pending.push((key, c, span)),
                Err(e) => {
                    fail_span(&span, &e);
                    self.forget().await;
                    return Err(e.into());
                }
            }
        }
        let mut traceparents = Vec::with_capacity(pending.len());
        for (key, confirm, span) in pending {
            let outcome = match confirm.instrument(span.clone()).await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
                Ok(Confirmation::Ack(Some(_))) => Err(PublishError::Unroutable(key.to_owned())),
                Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
                Err(e) => {
                    self.forget().await;
                    Err(e.into())
                }
            };
            if let Err(e) = outcome {
                fail_span(&span, &e);
                return Err(e);
            }
            traceparents.push(careline_telemetry::trace_context::traceparent_of(&span));
        }
        metrics::counter!("careline_events_published_total").increment(batch.len() as u64);
        Ok(traceparents)
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
        let key = envelope.event.routing_key();
        let exchange = self.topology.delay_exchange();
        let span = publish_span(&exchange, key, envelope, None);
        let mut headers = trace_headers(&span);
        headers.insert(DELAY_HEADER.into(), AMQPValue::LongString(tier.as_millis().to_string().into()));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(envelope.message_id.to_string().into())
            .with_type(key.into())
            .with_headers(headers);
        let payload = serde_json::to_vec(envelope)?;
        let confirm = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &payload,
                props,
            )
            .instrument(span.clone())
            .await;
        let outcome = match confirm {
            Ok(confirm) => match confirm.instrument(span.clone()).await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(tier),
                Ok(Confirmation::Ack(Some(_))) => Err(PublishError::Unroutable(key.to_owned())),
                Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked),
                Err(e) => {
                    self.forget().await;
                    Err(e.into())
                }
            },
            Err(e) => {
                self.forget().await;
                Err(e.into())
            }
        };
        match &outcome {
            Ok(_) => {
                metrics::counter!("careline_events_delayed_total", "tier" => format!("{}s", tier.as_secs()))
                    .increment(1);
            }
            Err(e) => fail_span(&span, e),
        }
        outcome
    }
}

/// The `PRODUCER` span of one publish, with the OpenTelemetry messaging attributes (RabbitMQ:
/// the destination is the exchange, the routing key has its own attribute). It lasts until the
/// broker's confirm.
fn publish_span(exchange: &str, routing_key: &str, envelope: &Envelope, parent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {exchange}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %exchange,
        messaging.rabbitmq.destination.routing_key = %routing_key,
        messaging.message.id = %envelope.message_id,
    );
    careline_telemetry::trace_context::set_parent_from_traceparent(&span, parent);
    span
}

fn fail_span(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "error");
    span.record("error.type", tracing::field::display(error));
}

/// W3C trace context of `span`, as AMQP headers (`traceparent`, `tracestate`).
fn trace_headers(span: &tracing::Span) -> FieldTable {
    let mut carrier: HashMap<String, String> = HashMap::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    let mut headers = FieldTable::default();
    for (k, v) in carrier {
        headers.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    headers
}
