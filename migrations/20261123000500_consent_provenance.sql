-- Consent with provenance: who at the hospital took the consent (`actor`, an id, never a
-- name), next to which component recorded it (`recorded_by`). Channel, purpose and source are
-- closed sets, so a typo can never create a purpose the sender does not look at.
ALTER TABLE consent_log ADD COLUMN actor text;
ALTER TABLE consent_log ADD CONSTRAINT consent_log_channel_known CHECK (channel IN ('whatsapp'));
ALTER TABLE consent_log ADD CONSTRAINT consent_log_purpose_known CHECK (purpose IN ('care', 'marketing'));
ALTER TABLE consent_log ADD CONSTRAINT consent_log_source_known
    CHECK (source IN ('booking_form', 'front_desk', 'hospital_system', 'patient_portal', 'whatsapp_keyword'));
