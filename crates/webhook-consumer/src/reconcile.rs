//! What a status webhook teaches the sender's bookkeeping, by the job id Careline put in
//! `biz_opaque_callback_data`:
//!
//! - **An unknown outcome resolved.** A `sent`/`delivered`/`read` status for a job whose call's
//!   outcome was unknown proves Meta accepted it: the send becomes `accepted` with that wamid,
//!   and the sender will not resend it. A status that comes while the call is still in flight
//!   is kept on the row (`observed_wamid`), and settles the call if its answer is lost.
//! - **A duplicate counted.** A status for a job that already holds another wamid means Meta
//!   has two messages for one job; that happens only after a resend that followed an unknown
//!   outcome (the documented trade-off), and is counted (`sends.duplicates`,
//!   `careline_webhook_duplicate_sends_total`).
//! - **An asynchronous failure classified.** A `failed` status goes through the same error table
//!   as a synchronous answer (`careline_whatsapp::errors`): retryable codes reopen the job and
//!   hand it back to the sender (through the outbox, so nothing is lost), a pause-the-number code
//!   pauses the number and also hands the job back (the sender holds it until the number is
//!   resumed), 131026 marks the patient as not on WhatsApp, and every other code fails the job
//!   for good with its class as the reason.

use careline_domain::events::{Envelope, Event, JobDue};
use careline_domain::status::DeliveryStatus;
use careline_store::sends::{self, SendSummary};
use careline_store::webhooks;
use careline_whatsapp::errors::ErrorClass;
use careline_whatsapp::webhook::WebhookError;
use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

/// What a status changed in the sender's bookkeeping, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    UnknownAccepted,
    Duplicate,
    Retried,
    NumberPaused,
    NotOnWhatsapp,
    Failed,
}

impl Reconciled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownAccepted => "unknown_accepted",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::NumberPaused => "number_paused",
            Self::NotOnWhatsapp => "not_on_whatsapp",
            Self::Failed => "failed",
        }
    }
}

/// Applies one new status event of `wamid` for `job_id` (see the module doc). `first_for_wamid`:
/// no status of this wamid was seen before.
pub async fn apply(
    conn: &mut PgConnection,
    job_id: Uuid,
    wamid: &str,
    status: DeliveryStatus,
    error: Option<&WebhookError>,
    first_for_wamid: bool,
) -> sqlx::Result<Option<Reconciled>> {
    let Some(send) = sends::summary(&mut *conn, job_id).await? else { return Ok(None) };
    let ours = send.wamid.as_deref() == Some(wamid);
    if status != DeliveryStatus::Failed {
        if send.state == "unknown" && sends::reconcile_accepted(&mut *conn, job_id, wamid, status.as_str()).await? {
            tracing::info!(%job_id, "unknown outcome resolved: Meta accepted the message");
            return Ok(Some(Reconciled::UnknownAccepted));
        }
        if send.state == "sending" && !ours {
            // The call is still in flight (or waiting for a retry): its outcome is settled by
            // this wamid when it is recorded.
            sends::observe_wamid(&mut *conn, job_id, wamid).await?;
            return Ok(None);
        }
        if !ours && first_for_wamid && send.state == "accepted" {
            sends::count_duplicate(&mut *conn, job_id).await?;
            tracing::warn!(%job_id, "a second message exists for this job (resent after an unknown outcome)");
            return Ok(Some(Reconciled::Duplicate));
        }
        return Ok(None);
    }
    // A failure of a message that is not the job's (an earlier attempt's) changes nothing.
    if !ours && send.state != "unknown" {
        return Ok(None);
    }
    let code = error.and_then(|e| e.code);
    let code32 = code.and_then(|c| i32::try_from(c).ok());
    let class = error.map_or(ErrorClass::Unknown, WebhookError::class);
    let detail = error.and_then(|e| e.details().or(e.message.as_deref())).unwrap_or("failed status").to_owned();
    let detail: String = detail.chars().take(500).collect();
    match class {
        ErrorClass::Retry | ErrorClass::SlowDownNumber | ErrorClass::RetryRecipientLater | ErrorClass::PauseNumber => {
            let paused = class == ErrorClass::PauseNumber;
            if paused && let Some(number) = &send.phone_number_id {
                let reason = format!("failed status with code {}", code.unwrap_or_default());
                sends::pause_number(&mut *conn, number, code32, &reason).await?;
                tracing::error!(number = %number, code, "business number paused after an asynchronous failure");
            }
            if sends::reopen_after_async_failure(&mut *conn, job_id, code32, &detail).await? {
                webhooks::enqueue_outbox(&mut *conn, &job_due(job_id, &send)).await?;
            }
            Ok(Some(if paused { Reconciled::NumberPaused } else { Reconciled::Retried }))
        }
        ErrorClass::NotOnWhatsapp => {
            sends::fail_after_async_failure(&mut *conn, job_id, "not_on_whatsapp", code32, &detail).await?;
            sends::mark_unreachable(&mut *conn, job_id).await?;
            Ok(Some(Reconciled::NotOnWhatsapp))
        }
        ErrorClass::Permanent | ErrorClass::DoNotHotRetry | ErrorClass::Unknown | ErrorClass::OutcomeUnknown => {
            sends::fail_after_async_failure(&mut *conn, job_id, class.as_str(), code32, &detail).await?;
            Ok(Some(Reconciled::Failed))
        }
    }
}

/// The job's `job.due` again, with a fresh message id (the outbox dedupes by it).
fn job_due(job_id: Uuid, send: &SendSummary) -> Envelope {
    Envelope::new(
        Event::JobDue(JobDue {
            job_id,
            appointment_id: send.appointment_id.clone(),
            generation: send.generation,
            kind: send.kind.clone(),
            due_at: send.due_at,
        }),
        Utc::now(),
    )
}
