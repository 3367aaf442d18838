//! Consuming with manual acks, bounded concurrency and reconnection.
//!
//! A delivery is acked only after its handler has made the effect durable, so a crash at any
//! point leaves it unacked and the broker delivers it again: handlers must be idempotent.
//! Prefetch bounds how many unacked messages this consumer holds; a semaphore bounds how many
//! run at once. On shutdown the consumer stops taking deliveries, lets in-flight handlers
//! finish and ack, then closes the channel (the broker requeues anything prefetched but not
//! started).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use careline_domain::events::Envelope;
use careline_telemetry::Readiness;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::topology::{BusSettings, Topology};

/// What to do with a delivery once its handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// The effect is durable: remove the message.
    Ack,
    /// A transient problem (database down): put it back to be tried again.
    Requeue,
    /// It can never succeed: dead-letter it, with the reason logged.
    Reject(String),
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Service name, used for the connection name and logs.
    pub name: String,
    /// Queue to consume from.
    pub queue: String,
    /// Unacked messages the broker may push to us at once.
    pub prefetch: u16,
    /// Handlers running at once.
    pub concurrency: usize,
}

/// Consumes `settings.queue` until `shutdown` fires, reconnecting with backoff whenever the
/// broker connection is lost. `readiness` is set under the check name `broker`.
pub async fn run_consumer<F, Fut>(
    bus: BusSettings,
    settings: ConsumerSettings,
    readiness: Readiness,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Envelope, bool) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Handling> + Send + 'static,
{
    crate::describe_metrics();
    let mut delays = crate::reconnect_delays();
    while !shutdown.is_cancelled() {
        match consume_until_error(&bus, &settings, &readiness, &shutdown, handler.clone()).await {
            Ok(()) => break,
            Err(e) => {
                readiness.set("broker", false);
                let delay = delays.next().unwrap_or(std::time::Duration::from_secs(10));
                tracing::warn!(queue = %settings.queue, error = %e, retry_in_ms = delay.as_millis() as u64, "consumer lost the broker");
                metrics::counter!("careline_broker_reconnects_total", "queue" => settings.queue.clone()).increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    readiness.set("broker", false);
}

async fn consume_until_error<F, Fut>(
    bus: &BusSettings,
    settings: &ConsumerSettings,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    handler: F,
) -> lapin::Result<()>
where
    F: Fn(Envelope, bool) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Handling> + Send + 'static,
{
    let conn = crate::connect(bus, &format!("{}-consumer", settings.name)).await?;
    let channel = conn.create_channel().await?;
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
    Topology::new(&bus.prefix).declare(&channel, bus.queue_expires_ms).await?;
    let tag = format!("{}-{}", settings.name, uuid::Uuid::now_v7());
    let mut deliveries = channel
        .basic_consume(
            settings.queue.clone().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    readiness.set("broker", true);
    tracing::info!(queue = %settings.queue, prefetch = settings.prefetch, "consuming");

    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let outcome = loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = deliveries.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(e),
            None => {
                break Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                    lapin::ConnectionState::Closed,
                )));
            }
        };
        // Reap finished handlers so the set does not grow.
        while in_flight.try_join_next().is_some() {}
        let handler = handler.clone();
        let queue = settings.queue.clone();
        in_flight.spawn(async move {
            let _permit = permit;
            handle_delivery(delivery, &queue, handler).await;
        });
    };

    let _ = channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
    while in_flight.join_next().await.is_some() {}
    let _ = channel.close(200, "bye".into()).await;
    let _ = conn.close(200, "bye".into()).await;
    outcome
}

async fn handle_delivery<F, Fut>(delivery: lapin::message::Delivery, queue: &str, handler: F)
where
    F: Fn(Envelope, bool) -> Fut,
    Fut: Future<Output = Handling>,
{
    let exchange = delivery.exchange.as_str();
    // `CONSUMER` span, child of the publish span whose `traceparent` the message carries.
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {exchange}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %exchange,
        messaging.destination.subscription.name = %queue,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        messaging.message.id = tracing::field::Empty,
        messaging.careline.redelivered = delivery.redelivered,
    );
    let _ = span.set_parent(parent_context(&delivery.properties));
    let started = std::time::Instant::now();
    let handling = async {
        match serde_json::from_slice::<Envelope>(&delivery.data) {
            Ok(envelope) => {
                tracing::Span::current().record("messaging.message.id", tracing::field::display(envelope.message_id));
                handler(envelope, delivery.redelivered).await
            }
            Err(e) => Handling::Reject(format!("not a Careline envelope: {e}")),
        }
    }
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    let result = match &handling {
        Handling::Ack => delivery.ack(BasicAckOptions::default()).await,
        Handling::Requeue => delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await,
        Handling::Reject(reason) => {
            span.record("otel.status_code", "error");
            span.record("error.type", "rejected");
            tracing::error!(reason = %reason, "dead-lettering message");
            delivery.nack(BasicNackOptions { requeue: false, multiple: false }).await
        }
    };
    let outcome = match handling {
        Handling::Ack => "ack",
        Handling::Requeue => "requeue",
        Handling::Reject(_) => "reject",
    };
    metrics::counter!("careline_messages_consumed_total", "queue" => queue.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("careline_message_handling_seconds", "queue" => queue.to_owned())
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        // The channel is gone; the broker will redeliver, and the handler is idempotent.
        tracing::warn!(error = %e, "could not settle delivery; it will be redelivered");
    }
}

fn parent_context(props: &lapin::BasicProperties) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    if let Some(headers) = props.headers() {
        for (k, v) in headers.inner() {
            if let AMQPValue::LongString(s) = v {
                carrier.insert(k.to_string(), s.to_string());
            }
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}
