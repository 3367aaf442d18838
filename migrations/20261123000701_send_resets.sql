-- operators (`careline jobs resend`): a failed send moved aside so the sender takes the job on
-- again. The `sends` row and every `send_attempts` row are kept here exactly as they were (the
-- audit of what was tried and what Meta answered) before they are removed from the sender's
-- tables, in the same transaction. Append-only.
CREATE TABLE send_resets (
    reset_id           bigserial PRIMARY KEY,
    job_id             uuid NOT NULL,
    reset_at           timestamptz NOT NULL DEFAULT now(),
    -- who asked (the operator's user name, or what they passed as --by)
    reset_by           text NOT NULL,
    previous_send      jsonb NOT NULL,
    previous_attempts  jsonb NOT NULL,
    -- the job.due message published for the new attempt
    message_id         uuid NOT NULL
);
CREATE INDEX send_resets_job ON send_resets (job_id);
