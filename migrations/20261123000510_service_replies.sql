-- webhook-consumer: the 24 h customer-service window of each (business number, patient number):
-- opened or extended by every inbound message. Free-form replies go out only while it is open.
CREATE TABLE customer_service_windows (
    phone_number_id  text NOT NULL,
    phone_e164       text NOT NULL,
    last_inbound_at  timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (phone_number_id, phone_e164)
);

-- webhook-consumer: free-form answers Careline sends itself (STOP/START acknowledgement, HELP),
-- written in the same transaction as the inbound message that asks for them, so each inbound
-- message gets at most one answer. The text is not stored: it is rendered at send time from
-- kind, language and facility. `to_e164` is contact data and is blanked by erasure and purge.
CREATE TABLE service_replies (
    reply_id            uuid PRIMARY KEY,
    inbound_message_id  text NOT NULL UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('stop_ack', 'start_ack', 'help')),
    phone_number_id     text NOT NULL,
    to_e164             text,
    facility_id         text,
    language            text NOT NULL,
    -- pending → sending → sent | failed | unknown (a call whose answer was lost; never resent)
    -- | window_closed (the 24 h window had closed before it could go out).
    state               text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'unknown', 'window_closed')),
    attempts            integer NOT NULL DEFAULT 0,
    retry_at            timestamptz NOT NULL DEFAULT now(),
    wamid               text,
    error_code          integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX service_replies_due ON service_replies (retry_at) WHERE state = 'pending';
