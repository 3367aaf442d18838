//! Applying hospital events: each in one transaction, idempotently, so a redelivered event
//! changes nothing.
//!
//! Appointments: the hospital's `version` decides (a version not newer than the stored one is
//! ignored). A change of start time, a cancellation or a re-booking starts a new *generation*:
//! every job of the old one still pending is revoked (including jobs already published — the
//! sender re-checks before sending) and the new generation is planned from scratch.

use std::sync::Arc;

use careline_bus::Handling;
use careline_domain::Clock;
use careline_domain::consent::ConsentState;
use careline_domain::events::{
    AppointmentStatus, AppointmentUpserted, Envelope, Event, PatientReplied, PatientUpserted,
};
use careline_domain::facility::NetworkConfig;
use careline_domain::plan::{Decision, plan_messages};
use careline_domain::reply::ReplyAction;
use careline_store::appointments::Appointment;
use careline_store::audit;
use careline_store::jobs::NewJob;
use careline_store::{PgPool, appointments, consent, jobs, patients};
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("facility '{0}' is not in CARELINE_CONFIG")]
    UnknownFacility(String),
}

/// What applying an appointment event did, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppointmentOutcome {
    /// First sight of the appointment: jobs planned.
    Created {
        planned: usize,
        skipped: usize,
    },
    /// Start time moved (or re-booked): old jobs revoked, new generation planned.
    Replanned {
        revoked: u64,
        planned: usize,
        skipped: usize,
    },
    Cancelled {
        revoked: u64,
    },
    /// Details changed (clinician, instructions…), the plan stands.
    Updated,
    /// A version not newer than the stored one.
    Stale,
}

pub struct Planner {
    pool: PgPool,
    network: Arc<NetworkConfig>,
    clock: Arc<dyn Clock>,
}

/// The actor named by the scheduler's audit records.
const AUDIT_ACTOR: &str = "scheduler";

impl Planner {
    pub fn new(pool: PgPool, network: Arc<NetworkConfig>, clock: Arc<dyn Clock>) -> Self {
        Self { pool, network, clock }
    }

    /// Applies one event and says what to do with its delivery.
    pub async fn handle(&self, envelope: Envelope) -> Handling {
        let result = match &envelope.event {
            Event::PatientUpserted(p) => self.apply_patient(p, &envelope).await.map(|_| ()),
            Event::AppointmentUpserted(a) => self.apply_appointment(a).await.map(|_| ()),
            Event::PatientReplied(r) => self.apply_reply(r).await.map(|_| ()),
            other => {
                tracing::warn!(kind = other.routing_key(), "event not for the scheduler; dropping");
                return Handling::Ack;
            }
        };
        match result {
            Ok(()) => Handling::Ack,
            Err(PlanError::Database(e)) if careline_store::is_transient(&e) => {
                tracing::warn!(error = %e, "database unavailable; event requeued");
                Handling::Requeue
            }
            Err(e) => Handling::Reject(e.to_string()),
        }
    }

    #[tracing::instrument(skip_all, fields(patient_id = %p.patient_id))]
    pub async fn apply_patient(&self, p: &PatientUpserted, envelope: &Envelope) -> Result<bool, PlanError> {
        let mut tx = self.pool.begin().await?;
        let changed = patients::upsert(
            &mut *tx,
            &patients::PatientProfile {
                patient_id: &p.patient_id,
                facility_id: &p.facility_id,
                first_name: p.first_name.as_deref(),
                phone_e164: &p.phone,
                language: &p.language,
                reported_at: envelope.occurred_at,
            },
        )
        .await?;
        if changed {
            let sharing = patients::count_at_phone(&mut *tx, &p.phone).await?;
            if sharing > 1 {
                // Flagged, never named: the number is contact data, the patient id is enough.
                metrics::counter!("careline_scheduler_shared_number_reports_total").increment(1);
                tracing::info!(
                    patients_at_number = sharing,
                    "patient shares a phone number; messages use neutral wording"
                );
            }
        }
        if let Some(c) = &p.consent {
            let dedupe_key = format!("event:{}", envelope.message_id);
            let entry_id = consent::append(
                &mut *tx,
                &consent::NewConsentEntry {
                    patient_id: Some(&p.patient_id),
                    phone_e164: None,
                    channel: c.channel,
                    purpose: c.purpose,
                    state: c.state,
                    recorded_at: c.recorded_at,
                    source: c.source,
                    evidence: c.evidence.as_deref(),
                    wording_version: c.wording_version.as_deref(),
                    recorded_by: &p.reported_by,
                    actor: c.recorded_by.as_deref(),
                    dedupe_key: &dedupe_key,
                },
            )
            .await?;
            if let Some(entry_id) = entry_id {
                audit::append(
                    &mut tx,
                    &audit::AuditRecord {
                        kind: "consent.recorded",
                        actor: AUDIT_ACTOR,
                        patient_id: Some(&p.patient_id),
                        body: serde_json::json!({
                            "entry_id": entry_id,
                            "channel": c.channel.as_str(),
                            "purpose": c.purpose.as_str(),
                            "state": c.state.as_str(),
                            "source": c.source.as_str(),
                            "recorded_at": c.recorded_at.to_rfc3339(),
                            "reported_by": p.reported_by,
                        }),
                        dedupe_key: Some(&format!("consent:{entry_id}")),
                        ..Default::default()
                    },
                )
                .await?;
            }
            metrics::counter!("careline_scheduler_consent_recorded_total", "state" => c.state.as_str()).increment(1);
        }
        tx.commit().await?;
        metrics::counter!("careline_scheduler_patients_total", "outcome" => if changed { "applied" } else { "stale" })
            .increment(1);
        Ok(changed)
    }

    #[tracing::instrument(skip_all, fields(appointment_id = %a.appointment_id, version = a.version))]
    pub async fn apply_appointment(&self, a: &AppointmentUpserted) -> Result<AppointmentOutcome, PlanError> {
        let facility =
            self.network.facility(&a.facility_id).ok_or_else(|| PlanError::UnknownFacility(a.facility_id.clone()))?;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        let existing = appointments::lock(&mut *tx, &a.appointment_id).await?;
        if existing.as_ref().is_some_and(|e| e.version >= a.version) {
            tx.rollback().await?;
            metrics::counter!("careline_scheduler_appointments_total", "outcome" => "stale").increment(1);
            tracing::info!("stale appointment version ignored");
            return Ok(AppointmentOutcome::Stale);
        }
        let cancelled = a.status == AppointmentStatus::Cancelled;
        let (generation, moved) = match &existing {
            None => (1, true),
            Some(e) => {
                let moved = cancelled != (e.status == "cancelled") || (!cancelled && e.starts_at != a.starts_at);
                (if moved { e.generation + 1 } else { e.generation }, moved)
            }
        };
        let row = Appointment {
            appointment_id: a.appointment_id.clone(),
            facility_id: a.facility_id.clone(),
            patient_id: a.patient_id.clone(),
            version: a.version,
            generation,
            status: a.status.as_str().to_owned(),
            starts_at: a.starts_at,
            duration_minutes: a.duration_minutes,
            clinician: a.clinician.clone(),
            department: a.department.clone(),
            instructions: a.instructions.clone(),
            // A new time asks for a new answer.
            patient_response: if moved { None } else { existing.as_ref().and_then(|e| e.patient_response.clone()) },
        };
        appointments::save(&mut *tx, &row).await?;

        let outcome = if !moved {
            AppointmentOutcome::Updated
        } else {
            let revoked = if existing.is_some() {
                let reason = if cancelled { "cancelled" } else { "rescheduled" };
                jobs::revoke_pending(&mut *tx, &a.appointment_id, "%", reason).await?
            } else {
                0
            };
            if cancelled {
                AppointmentOutcome::Cancelled { revoked }
            } else {
                let (planned, skipped) = self.plan(&mut tx, &row, facility, now).await?;
                if existing.is_some() {
                    AppointmentOutcome::Replanned { revoked, planned, skipped }
                } else {
                    AppointmentOutcome::Created { planned, skipped }
                }
            }
        };
        tx.commit().await?;
        let label = match outcome {
            AppointmentOutcome::Created { .. } => "created",
            AppointmentOutcome::Replanned { .. } => "replanned",
            AppointmentOutcome::Cancelled { .. } => "cancelled",
            AppointmentOutcome::Updated => "updated",
            AppointmentOutcome::Stale => "stale",
        };
        metrics::counter!("careline_scheduler_appointments_total", "outcome" => label).increment(1);
        tracing::info!(?outcome, generation, "appointment applied");
        Ok(outcome)
    }

    async fn plan(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        row: &Appointment,
        facility: &careline_domain::facility::Facility,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), PlanError> {
        let (mut planned, mut skipped) = (0, 0);
        let traceparent = careline_telemetry::trace_context::current_traceparent();
        for message in plan_messages(facility, row.starts_at, now, true) {
            let (state, due_at, reason) = match message.decision {
                Decision::SendAt(at) => {
                    planned += 1;
                    ("planned", at, None)
                }
                Decision::Skip(why) => {
                    skipped += 1;
                    ("skipped", now, Some(why.as_str()))
                }
            };
            let job_id = uuid::Uuid::now_v7();
            let inserted = jobs::insert(
                &mut **tx,
                &NewJob {
                    job_id,
                    appointment_id: &row.appointment_id,
                    generation: row.generation,
                    kind: &message.kind,
                    due_at,
                    state,
                    reason,
                    traceparent: traceparent.as_deref(),
                },
            )
            .await?;
            if inserted {
                audit::append(
                    tx,
                    &audit::AuditRecord {
                        kind: "job.planned",
                        actor: AUDIT_ACTOR,
                        patient_id: Some(&row.patient_id),
                        appointment_id: Some(&row.appointment_id),
                        job_id: Some(job_id),
                        body: serde_json::json!({
                            "message_kind": message.kind,
                            "generation": row.generation,
                            "state": state,
                            "reason": reason,
                            "due_at": due_at.to_rfc3339(),
                        }),
                        ..Default::default()
                    },
                )
                .await?;
            }
            metrics::counter!("careline_scheduler_jobs_planned_total", "kind" => message.kind.clone(), "state" => state)
                .increment(1);
        }
        Ok((planned, skipped))
    }

    /// A patient's answer: Confirm marks the appointment confirmed; Reschedule records the
    /// request (the hospital moves it); Cancel records the request and stops further reminders.
    #[tracing::instrument(skip_all, fields(inbound_message_id = %r.inbound_message_id, action = r.action.as_str()))]
    pub async fn apply_reply(&self, r: &PatientReplied) -> Result<bool, PlanError> {
        let response = match r.action {
            ReplyAction::Confirm => "confirmed",
            ReplyAction::Reschedule => "reschedule_requested",
            ReplyAction::Cancel => "cancel_requested",
            _ => return Ok(false),
        };
        let Some(appointment_id) = r.appointment_id.as_deref() else {
            tracing::info!("reply names no appointment; nothing to record");
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let recorded = appointments::record_response(&mut *tx, appointment_id, response, r.received_at).await?;
        if recorded && r.action == ReplyAction::Cancel {
            jobs::revoke_pending(&mut *tx, appointment_id, "reminder_%", "patient_cancel_requested").await?;
        }
        tx.commit().await?;
        metrics::counter!("careline_scheduler_replies_total", "response" => response).increment(1);
        Ok(recorded)
    }
}

/// Whether consent allows sending (used by tests and the sender's documentation).
pub fn allows_sending(state: Option<ConsentState>) -> bool {
    state == Some(ConsentState::OptedIn)
}
