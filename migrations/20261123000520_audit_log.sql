-- Everyone (through careline_store::audit::append): the append-only, hash-chained audit trail.
-- Each row: hash = SHA-256(prev_hash || canonical JSON of the row's other fields), prev_hash =
-- the previous row's hash (32 zero bytes for the first). Rows carry ids, kinds, states and codes
-- only — never a phone number, a name or message text — so erasure and retention never need to
-- touch them and the chain stays verifiable (`careline audit verify`).
CREATE TABLE audit_log (
    seq                 bigint PRIMARY KEY,
    recorded_at         timestamptz NOT NULL,
    kind                text NOT NULL,
    actor               text NOT NULL,
    patient_id          text,
    appointment_id      text,
    job_id              uuid,
    wamid               text,
    inbound_message_id  text,
    body                jsonb NOT NULL,
    -- makes an append idempotent (a replayed webhook or event appends nothing)
    dedupe_key          text UNIQUE,
    prev_hash           bytea NOT NULL,
    hash                bytea NOT NULL UNIQUE
);
CREATE INDEX audit_log_patient ON audit_log (patient_id, seq) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_log_appointment ON audit_log (appointment_id, seq) WHERE appointment_id IS NOT NULL;
CREATE INDEX audit_log_job ON audit_log (job_id, seq) WHERE job_id IS NOT NULL;

-- Append-only for everyone who does not own the table: updates, deletes and truncation fail.
-- (An owner can still disable the trigger; the hash chain is what detects that.)
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- Erasure marks the patient profile (the profile row stays, so the audit skeleton keeps its
-- subject and nothing can be sent: no phone, and an opt-out is appended).
ALTER TABLE patients ADD COLUMN erased_at timestamptz;
