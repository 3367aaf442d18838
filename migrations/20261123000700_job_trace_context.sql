-- scheduler: where each job sits in a distributed trace (W3C `traceparent`, NULL when tracing
-- is off). `planned_traceparent` is the span that planned the job (inside the trace of the
-- hospital's request); the `job.due` publish, possibly days later, continues it.
-- `dispatched_traceparent` is that publish span: the webhook-consumer parents the handling of
-- the message's status webhooks on it (Meta's webhooks carry no trace context of their own).
ALTER TABLE jobs ADD COLUMN planned_traceparent text;
ALTER TABLE jobs ADD COLUMN dispatched_traceparent text;
