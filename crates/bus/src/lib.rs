//! Careline's RabbitMQ bus: one topology, confirmed publishing, and consumers that ack only
//! after the durable effect, reconnecting when the broker goes away.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod publisher;
pub mod topology;

pub use consumer::{ConsumerSettings, Handling, run_consumer};
pub use publisher::{PublishError, Publisher};
pub use topology::{BusSettings, Topology};

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
