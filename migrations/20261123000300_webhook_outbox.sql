-- webhook-consumer: events produced while processing a webhook (patient replies, consent
-- changes) are written here in the same transaction as their effects, published to RabbitMQ
-- after commit and marked published. A crash or broker outage between commit and publish
-- leaves the row unpublished, and the processor publishes it later (consumers dedupe by id).
CREATE TABLE webhook_outbox (
    event_id      uuid PRIMARY KEY,
    envelope      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX webhook_outbox_unpublished ON webhook_outbox (created_at, event_id) WHERE published_at IS NULL;

-- webhook-consumer: a row whose processing failed waits until retry_at before it is claimed
-- again (backoff), instead of being retried in a tight loop.
ALTER TABLE webhook_inbox ADD COLUMN retry_at timestamptz;
