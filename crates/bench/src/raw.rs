//! The broker alone, measured in the same run: confirmed publishing into a throwaway quorum
//! queue declared like the sender's, then consuming it with the sender's prefetch and one ack
//! per message.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};

use crate::fixtures::QUEUE_EXPIRES_MS;

/// Messages in flight (published, not yet confirmed) while publishing.
const IN_FLIGHT: usize = 1000;
/// About the size of a `job.due` envelope.
const PAYLOAD_BYTES: usize = 300;

/// Raw rates, messages per second.
#[derive(Debug, Clone, Copy)]
pub struct RawRates {
    pub publish: f64,
    pub consume_ack: f64,
}

pub async fn measure(amqp_url: &str, prefix: &str, messages: usize, prefetch: u16) -> anyhow::Result<RawRates> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .context("cannot connect to RabbitMQ")?;
    let queue = format!("{prefix}.bench.raw");
    let channel = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(20));
    args.insert("x-expires".into(), AMQPValue::LongUInt(QUEUE_EXPIRES_MS));
    channel
        .queue_declare(queue.clone().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await?;

    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    let started = Instant::now();
    for _ in 0..messages {
        if pending.len() >= IN_FLIGHT {
            let confirm = pending.pop_front().context("a pending confirm")?;
            check(confirm.await?)?;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.clone().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push_back(confirm);
    }
    for confirm in pending {
        check(confirm.await?)?;
    }
    let publish = messages as f64 / started.elapsed().as_secs_f64();

    let consumer_channel = conn.create_channel().await?;
    consumer_channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consumer_channel
        .basic_consume(queue.clone().into(), "bench-raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    let mut acked = 0;
    while acked < messages {
        let delivery = deliveries.next().await.context("the consumer stopped")??;
        delivery.ack(BasicAckOptions::default()).await?;
        acked += 1;
    }
    let consume_ack = messages as f64 / started.elapsed().as_secs_f64();
    let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "bye".into()).await;
    Ok(RawRates { publish, consume_ack })
}

fn check(confirmation: Confirmation) -> anyhow::Result<()> {
    match confirmation {
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(_) => bail!("the broker nacked a raw publish"),
    }
}
