//! `careline dead-letters list|redrive`: the `{prefix}.dead-letters` queue, where consumers'
//! rejected (poison) messages and messages past the delivery limit end up.
//!
//! **Listing never loses a message.** RabbitMQ has no "peek" for a queue, so `list` takes
//! messages with `basic.get` *without acking*, holding them on its channel while it reads their
//! properties and `x-death` headers, then hands every one back with one
//! `basic.nack(multiple, requeue)`. While held they are still owned by the broker: if the CLI
//! dies, its channel closes and RabbitMQ requeues them. (The management API's "get messages"
//! does exactly the same thing; a stream would allow true non-destructive reads, but the queue
//! is a quorum queue so dead letters are replicated.) The visible side effects are the
//! `redelivered` flag and the quorum queue's delivery count; the dead-letter queue has no
//! delivery limit, so nothing is ever dropped for it. Order is kept: a quorum queue hands
//! returned messages out again first, oldest first.
//!
//! **Redrive** republishes a dead letter, body and properties unchanged (its `traceparent`
//! too, so the retry joins the original trace), to the exchange and routing key it was first
//! published with (`x-death`), on a confirm channel with `mandatory`; only after the broker's
//! confirm is the dead letter acked. A crash in between leaves both copies, and every Careline
//! consumer is idempotent by message id, so the duplicate is harmless. Redriving a message
//! whose cause is not fixed sends it straight back here.
//!
//! Bodies are never printed: they may carry names and phone numbers.

use std::io::Write;

use anyhow::{Context as _, bail};
use careline_bus::Topology;
use chrono::{DateTime, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};

use crate::Context;

/// `careline dead-letters …`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Shows dead letters (id, type, routing key, why) without removing any.
    List {
        /// Show at most this many, oldest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Republishes dead letters to where they were first published, then removes them here.
    Redrive {
        /// Every dead letter present when the command starts.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// Only the dead letter with this message id.
        #[arg(long, value_name = "MESSAGE_ID")]
        id: Option<String>,
    },
}

/// What the operator sees of one dead letter: ids and routing, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The envelope's `message_id` (AMQP property).
    pub message_id: Option<String>,
    /// The event type (`job.due`, `appointment.upserted`, …; AMQP `type`).
    pub kind: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// `rejected` (a consumer gave up on it), `delivery_limit`, `expired`, `maxlen`.
    pub reason: Option<String>,
    /// The queue it died in.
    pub queue: Option<String>,
    /// The exchange it was first published to (where redrive sends it).
    pub exchange: Option<String>,
    /// How many times it died in that queue.
    pub deaths: i64,
    /// When it (last) died there.
    pub died_at: Option<DateTime<Utc>>,
}

/// Runs one `dead-letters` command, printing to `out`.
pub async fn run(command: Command, context: &Context, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Command::List { limit } => {
            let letters = list(context, limit).await?;
            writeln!(
                out,
                "{:<38} {:<22} {:<22} {:<15} {:>6}  {:<25} QUEUE",
                "MESSAGE ID", "TYPE", "ROUTING KEY", "REASON", "DEATHS", "DIED AT"
            )?;
            for l in &letters {
                writeln!(
                    out,
                    "{:<38} {:<22} {:<22} {:<15} {:>6}  {:<25} {}",
                    l.message_id.as_deref().unwrap_or("-"),
                    l.kind.as_deref().unwrap_or("-"),
                    l.routing_key,
                    l.reason.as_deref().unwrap_or("-"),
                    l.deaths,
                    l.died_at.map_or("-".to_owned(), |t| t.to_rfc3339()),
                    l.queue.as_deref().unwrap_or("-"),
                )?;
            }
            writeln!(out, "{} dead letter(s) shown; none removed", letters.len())?;
        }
        Command::Redrive { all, id } => {
            let selection = match (all, id) {
                (_, Some(id)) => Selection::Id(id),
                (true, None) => Selection::All,
                (false, None) => bail!("say which: --all or --id MESSAGE_ID"),
            };
            let redriven = redrive(context, &selection).await?;
            for l in &redriven {
                writeln!(
                    out,
                    "redriven {} ({}) to {} / {}",
                    l.message_id.as_deref().unwrap_or("-"),
                    l.kind.as_deref().unwrap_or("-"),
                    l.exchange.as_deref().unwrap_or("-"),
                    l.routing_key
                )?;
            }
            writeln!(out, "{} dead letter(s) redriven", redriven.len())?;
        }
    }
    Ok(())
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Id(String),
}

async fn connect(context: &Context) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name("careline-cli".to_owned().into());
    Connection::connect(&context.bus.url, props).await.context("connecting to RabbitMQ (AMQP_URL)")
}

/// How many messages the dead-letter queue holds, without creating it.
async fn queue_depth(channel: &Channel, queue: &str) -> anyhow::Result<u32> {
    let declared = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .with_context(|| format!("no queue {queue}: is AMQP_PREFIX right, and has a service started with it?"))?;
    Ok(declared.message_count())
}

/// Up to `limit` dead letters, oldest first; every one stays in the queue (see the module doc).
pub async fn list(context: &Context, limit: u32) -> anyhow::Result<Vec<DeadLetter>> {
    let queue = Topology::new(&context.bus.prefix).dead_letters();
    let connection = connect(context).await?;
    let channel = connection.create_channel().await?;
    queue_depth(&channel, &queue).await?;
    let mut letters = Vec::new();
    let mut last_tag = None;
    // Held messages are not handed out again, so this ends when every ready one is held.
    for _ in 0..limit {
        let Some(message) = channel.basic_get(queue.clone().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        letters.push(describe(&message.delivery));
        last_tag = Some(message.delivery.delivery_tag);
    }
    if let Some(tag) = last_tag {
        channel.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await?;
    }
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    Ok(letters)
}

/// Republishes the selected dead letters (confirmed) and acks each after its confirm. Looks at
/// most at the messages present when it starts, so a message that dies again meanwhile is not
/// picked up a second time. Returns what was redriven.
pub async fn redrive(context: &Context, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
    let queue = Topology::new(&context.bus.prefix).dead_letters();
    let connection = connect(context).await?;
    let reader = connection.create_channel().await?;
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    let depth = queue_depth(&reader, &queue).await?;
    let mut redriven = Vec::new();
    let mut held = None;
    let mut outcome = Ok(());
    for _ in 0..depth {
        let Some(message) = reader.basic_get(queue.clone().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        let letter = describe(&delivery);
        let selected = match selection {
            Selection::All => true,
            Selection::Id(id) => letter.message_id.as_deref() == Some(id.as_str()),
        };
        if !selected {
            held = Some(delivery.delivery_tag);
            continue;
        }
        let Some(exchange) = letter.exchange.clone().filter(|e| !e.is_empty()) else {
            // Published to the default exchange or without x-death: nowhere sensible to send it.
            held = Some(delivery.delivery_tag);
            outcome = Err(anyhow::anyhow!(
                "dead letter {} has no original exchange in x-death; left in place",
                letter.message_id.as_deref().unwrap_or("-")
            ));
            continue;
        };
        let confirm = publisher
            .basic_publish(
                exchange.clone().into(),
                letter.routing_key.clone().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                reader.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
                redriven.push(letter);
                if matches!(selection, Selection::Id(_)) {
                    break;
                }
            }
            Confirmation::Ack(Some(_)) => {
                held = Some(delivery.delivery_tag);
                outcome = Err(anyhow::anyhow!(
                    "no queue is bound to {exchange} / {} any more; dead letter left in place",
                    letter.routing_key
                ));
                break;
            }
            Confirmation::Nack(_) => {
                held = Some(delivery.delivery_tag);
                outcome = Err(anyhow::anyhow!("the broker refused the republished message; dead letter left in place"));
                break;
            }
        }
    }
    // Everything looked at but not redriven goes back, in order.
    if let Some(tag) = held {
        reader.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await?;
    }
    let _ = reader.close(200, "bye".into()).await;
    let _ = publisher.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    outcome?;
    if let Selection::Id(id) = selection
        && redriven.is_empty()
    {
        bail!("no dead letter with message id {id} among the {depth} in {queue}");
    }
    Ok(redriven)
}

/// Ids, routing and the most recent `x-death` entry of a delivery.
fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let props = &delivery.properties;
    let headers = props.headers().as_ref();
    let header_text = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(text);
    let death = headers
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| match v {
            AMQPValue::FieldArray(entries) => entries.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|entry| match entry {
            AMQPValue::FieldTable(table) => Some(table),
            _ => None,
        });
    let death_field = |name: &str| death.as_ref().and_then(|d| d.inner().get(name));
    DeadLetter {
        message_id: props.message_id().as_ref().map(|s| s.to_string()),
        kind: props.kind().as_ref().map(|s| s.to_string()),
        routing_key: delivery.routing_key.to_string(),
        reason: death_field("reason").and_then(text).or_else(|| header_text("x-first-death-reason")),
        queue: death_field("queue").and_then(text).or_else(|| header_text("x-first-death-queue")),
        exchange: death_field("exchange").and_then(text).or_else(|| header_text("x-first-death-exchange")),
        deaths: death_field("count")
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => Some(*n),
                AMQPValue::LongInt(n) => Some(i64::from(*n)),
                _ => None,
            })
            .unwrap_or(0),
        died_at: death_field("time").and_then(|v| match v {
            AMQPValue::Timestamp(secs) => DateTime::from_timestamp(i64::try_from(*secs).ok()?, 0),
            _ => None,
        }),
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}
