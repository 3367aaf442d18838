-- Careline's schema. One writer per table (see README "Who writes what"); readers read right
-- before they act. Timestamps are timestamptz (UTC on the wire); ids from hospital systems are
-- text, ids Careline makes are uuid.

-- ingest: per-source API tokens, stored as SHA-256 of the token (never the token itself).
-- Several rows may be active for one source so tokens can be rotated without downtime.
CREATE TABLE api_tokens (
    token_id      uuid PRIMARY KEY,
    source        text NOT NULL,
    token_sha256  bytea NOT NULL UNIQUE,
    -- facility ids this token may write for; '*' covers every facility.
    facilities    text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz
);

-- scheduler: the patient profile as last reported by the hospital (newest report wins).
CREATE TABLE patients (
    patient_id    text PRIMARY KEY,
    facility_id   text NOT NULL,
    first_name    text,
    phone_e164    text NOT NULL,
    language      text NOT NULL,
    reported_at   timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_phone ON patients (phone_e164);

-- anyone who learns of it: append-only consent log. The current state for a patient is the
-- latest entry (by recorded_at, then id) among the patient's own entries and the entries for
-- the patient's phone number (a STOP typed on WhatsApp is about the number). Never updated.
CREATE TABLE consent_log (
    entry_id        bigserial PRIMARY KEY,
    patient_id      text,
    phone_e164      text,
    channel         text NOT NULL DEFAULT 'whatsapp',
    purpose         text NOT NULL DEFAULT 'care',
    state           text NOT NULL CHECK (state IN ('opted_in', 'opted_out')),
    recorded_at     timestamptz NOT NULL,
    source          text NOT NULL,
    evidence        text,
    wording_version text,
    recorded_by     text NOT NULL,
    -- the event or inbound message that produced this entry, so replays do not duplicate it
    dedupe_key      text UNIQUE,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (patient_id IS NOT NULL OR phone_e164 IS NOT NULL)
);
CREATE INDEX consent_log_patient ON consent_log (patient_id, recorded_at DESC, entry_id DESC);
CREATE INDEX consent_log_phone ON consent_log (phone_e164, recorded_at DESC, entry_id DESC);

-- scheduler: appointments keyed by the hospital's id. `version` is the hospital's (newest
-- wins, stale ignored); `generation` is Careline's and changes whenever the start time changes
-- or the appointment is cancelled, which makes every job of an older generation stale.
CREATE TABLE appointments (
    appointment_id    text PRIMARY KEY,
    facility_id       text NOT NULL,
    patient_id        text NOT NULL,
    version           bigint NOT NULL,
    generation        integer NOT NULL DEFAULT 1,
    status            text NOT NULL CHECK (status IN ('booked', 'cancelled')),
    starts_at         timestamptz NOT NULL,
    duration_minutes  integer,
    clinician         text,
    department        text,
    instructions      text,
    patient_response  text CHECK (patient_response IN ('confirmed', 'reschedule_requested', 'cancel_requested')),
    responded_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointments_patient ON appointments (patient_id);

-- scheduler: planned messages. Claimed with a short lease and FOR UPDATE SKIP LOCKED so several
-- scheduler replicas can dispatch; a lease that runs out is claimed again.
CREATE TABLE jobs (
    job_id          uuid PRIMARY KEY,
    appointment_id  text NOT NULL REFERENCES appointments (appointment_id),
    generation      integer NOT NULL,
    kind            text NOT NULL,
    due_at          timestamptz NOT NULL,
    state           text NOT NULL CHECK (state IN ('planned', 'claimed', 'enqueued', 'revoked', 'skipped')),
    reason          text,
    locked_by       text,
    locked_until    timestamptz,
    claims          integer NOT NULL DEFAULT 0,
    enqueued_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (appointment_id, generation, kind)
);
CREATE INDEX jobs_dispatchable ON jobs (due_at) WHERE state IN ('planned', 'claimed');

-- sender: one row per job it has taken on. The row is written (state 'sending') before the
-- WhatsApp call, so a redelivered job finds it and is never sent twice.
CREATE TABLE sends (
    job_id           uuid PRIMARY KEY,
    state            text NOT NULL CHECK (state IN ('sending', 'accepted', 'failed', 'suppressed', 'unknown')),
    reason           text,
    phone_number_id  text,
    template_name    text,
    language         text,
    wamid            text UNIQUE,
    message_status   text,
    error_code       integer,
    error_detail     text,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sends_state ON sends (state);

-- sender: every call to the WhatsApp API, for the audit of what was tried and what Meta said.
CREATE TABLE send_attempts (
    job_id        uuid NOT NULL,
    attempt       integer NOT NULL,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    http_status   integer,
    error_code    integer,
    outcome       text NOT NULL,
    latency_ms    integer,
    PRIMARY KEY (job_id, attempt)
);

-- webhook-consumer: every signed POST is stored here before Meta gets its 200.
CREATE TABLE webhook_inbox (
    inbox_id      bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    body          bytea NOT NULL,
    processed_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX webhook_inbox_pending ON webhook_inbox (inbox_id) WHERE processed_at IS NULL;

-- webhook-consumer: each (wamid, status) once, however often Meta repeats it.
CREATE TABLE message_status_events (
    wamid         text NOT NULL,
    status        text NOT NULL,
    job_id        uuid,
    occurred_at   timestamptz NOT NULL,
    error_code    integer,
    error_title   text,
    error_detail  text,
    inbox_id      bigint,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wamid, status)
);
CREATE INDEX message_status_events_job ON message_status_events (job_id);

-- webhook-consumer: the current delivery state of each message; only ever moves forward
-- (sent 1 < delivered 2 < read 3; failed 4 is terminal and keeps its error).
CREATE TABLE message_delivery (
    wamid         text PRIMARY KEY,
    job_id        uuid,
    status        text NOT NULL,
    status_rank   smallint NOT NULL,
    error_code    integer,
    error_detail  text,
    status_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_delivery_job ON message_delivery (job_id);

-- webhook-consumer: inbound patient messages, once each (Meta's message id). The text of a
-- free-form message is not kept.
CREATE TABLE inbound_messages (
    message_id       text PRIMARY KEY,
    phone_number_id  text NOT NULL,
    from_e164        text NOT NULL,
    received_at      timestamptz NOT NULL,
    kind             text NOT NULL,
    action           text NOT NULL,
    context_wamid    text,
    job_id           uuid,
    appointment_id   text,
    inbox_id         bigint,
    inserted_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_messages_appointment ON inbound_messages (appointment_id);
