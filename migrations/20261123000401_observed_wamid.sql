-- A status webhook can arrive while its job's call is still in flight (Meta answers after the
-- status, or the answer is lost). The wamid it names is kept here, so that if the call's
-- outcome then turns out unknown the job is settled as accepted with that wamid instead of
-- waiting for a webhook that has already come, and a resend after it would count as a
-- duplicate.
ALTER TABLE sends ADD COLUMN observed_wamid text;
