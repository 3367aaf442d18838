-- sender at scale: leases instead of advisory locks, limits shared by every replica through
-- PostgreSQL, Meta's error taxonomy applied to numbers and patients, unknown outcomes resent
-- at most a configured number of times.

-- A job is owned by one sender while `lease_until` is in the future: a claim sets owner and
-- lease in the same statement that raises `attempts`, so replicas never send one job at once,
-- and a dead owner's job is taken over when its lease ends.
-- `recorded_attempts` counts calls whose answer is recorded: `attempts > recorded_attempts`
-- means a call was on the wire when the owner stopped (outcome unknown).
ALTER TABLE sends
    ADD COLUMN owner              uuid,
    ADD COLUMN lease_until        timestamptz,
    ADD COLUMN recorded_attempts  integer NOT NULL DEFAULT 0,
    ADD COLUMN recipient_key      text,
    ADD COLUMN unknown_since      timestamptz,
    ADD COLUMN resends            integer NOT NULL DEFAULT 0,
    ADD COLUMN duplicates         integer NOT NULL DEFAULT 0,
    ADD COLUMN lane               text;
UPDATE sends s SET recorded_attempts = (SELECT count(*) FROM send_attempts a WHERE a.job_id = s.job_id);
-- The unknown-outcome sweeper looks for these.
CREATE INDEX sends_unknown ON sends (unknown_since) WHERE state = 'unknown';

-- Meta identifies a recipient by phone number; Careline keys its per-recipient limits by a
-- hash of it, so the limit tables hold no phone number in clear.
ALTER TABLE patients
    ADD COLUMN recipient_key text GENERATED ALWAYS AS (encode(sha256(phone_e164::bytea), 'hex')) STORED,
    -- Meta answered 131026 (not a WhatsApp user / cannot receive): nothing is sent to this
    -- patient until the phone changes (an update of the phone clears it).
    ADD COLUMN whatsapp_unreachable_at timestamptz;
CREATE INDEX patients_recipient_key ON patients (recipient_key);

-- Each business number's throughput budget, shared by every sender replica: a replica leases
-- the next `n` send slots (`next_slot` moves forward by n × period), so slots handed to
-- different replicas never overlap, whoever joins or leaves. `slow_until`: after a 130429 the
-- period doubles until then.
CREATE TABLE number_budget (
    phone_number_id  text PRIMARY KEY,
    next_slot        timestamptz NOT NULL,
    slow_until       timestamptz
);

-- The pair limit, shared by every replica: the slot time of the last message to a recipient.
-- A claim succeeds only if its slot is at least the pair interval after this.
CREATE TABLE recipient_pacing (
    recipient_key  text PRIMARY KEY,
    last_at        timestamptz NOT NULL
);
CREATE INDEX recipient_pacing_last_at ON recipient_pacing (last_at);

-- Business numbers paused after an answer that every further send would get too (expired
-- token, policy block, payment issue, unregistered number), until an operator resumes them.
CREATE TABLE business_numbers (
    phone_number_id  text PRIMARY KEY,
    paused_at        timestamptz,
    paused_code      integer,
    paused_reason    text,
    resumed_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Meta's messaging tier counts unique recipients of business-initiated messages per rolling
-- 24 h per business portfolio.
CREATE TABLE portfolio_recipients (
    portfolio      text NOT NULL,
    recipient_key  text NOT NULL,
    last_at        timestamptz NOT NULL,
    PRIMARY KEY (portfolio, recipient_key)
);
CREATE INDEX portfolio_recipients_window ON portfolio_recipients (portfolio, last_at);
