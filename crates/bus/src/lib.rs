//! Careline's RabbitMQ bus: one topology, confirmed publishing, and consumers that ack only
//! after the durable effect, reconnecting when the broker goes away.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod publisher;
pub mod topology;

pub use consumer::{ConsumerSettings, Handling, run_consumer};
pub use publisher::{PublishError, Publisher};
pub use topology::{BusSettings, Topology};

/// Registers HELP text for the bus's metrics with the process's Prometheus recorder (installing
/// it if need be). Called by every publisher and consumer, so each service exposes them.
pub fn describe_metrics() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        careline_telemetry::metrics_handle();
        metrics::describe_counter!(
            "careline_events_published_total",
            "Messages published to RabbitMQ and confirmed by the broker."
        );
        metrics::describe_counter!(
            "careline_messages_consumed_total",
            "Deliveries handled, by queue and outcome (ack, requeue, reject = dead-lettered)."
        );
        metrics::describe_histogram!(
            "careline_message_handling_seconds",
            metrics::Unit::Seconds,
            "Time from delivery to the handler's decision, by queue."
        );
        metrics::describe_counter!(
            "careline_events_delayed_total",
            "Jobs published to a delay queue (a retry later, a paused number, a recipient who must wait), by tier."
        );
        metrics::describe_counter!(
            "careline_broker_reconnects_total",
            "Times a consumer lost its broker connection and reconnected, by queue."
        );
    });
}

/// Opens a connection named after the service (shown in the management UI).
pub(crate) async fn connect(settings: &BusSettings, name: &str) -> lapin::Result<lapin::Connection> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.to_owned().into());
    lapin::Connection::connect(&settings.url, props).await
}

/// The delays between reconnection attempts: 100 ms doubling up to 10 s, forever, with jitter.
pub(crate) fn reconnect_delays() -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
