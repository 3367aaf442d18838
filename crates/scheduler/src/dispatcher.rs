//! Handing due jobs to the sender.
//!
//! Each round claims up to `batch` due jobs with a lease (see `careline_store::jobs`), publishes
//! them as `job.due` with publisher confirms, and marks them enqueued. If publishing fails the
//! claim is released so the next round (of any replica) retries; if this process dies in
//! between, the lease runs out and another replica takes the jobs. A job may therefore be
//! published twice, never lost; the sender sends each job at most once.

use std::sync::Arc;
use std::time::Duration;

use careline_bus::Publisher;
use careline_domain::Clock;
use careline_domain::events::{Envelope, Event, JobDue};
use careline_store::{PgPool, jobs};
use tokio_util::sync::CancellationToken;

use crate::Settings;

pub struct Dispatcher {
    pool: PgPool,
    publisher: Arc<Publisher>,
    clock: Arc<dyn Clock>,
    worker_id: String,
    lease: chrono::Duration,
    batch: i64,
    tick: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Publish(#[from] careline_bus::PublishError),
}

impl Dispatcher {
    pub fn new(pool: PgPool, publisher: Arc<Publisher>, clock: Arc<dyn Clock>, settings: &Settings) -> Self {
        Self {
            pool,
            publisher,
            clock,
            worker_id: settings.worker_id.clone(),
            lease: chrono::Duration::milliseconds(settings.lease_ms),
            batch: settings.batch,
            tick: Duration::from_millis(settings.tick_ms),
        }
    }

    /// One round: claim, publish, mark. Returns how many jobs were handed over.
    // Debug level: at `info` every tick, busy or idle, would export a root span.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn dispatch_once(&self) -> Result<usize, DispatchError> {
        let now = self.clock.now();
        let claimed = jobs::claim_due(&self.pool, now, &self.worker_id, self.lease, self.batch).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = claimed.iter().map(|j| j.job_id).collect();
        let envelopes: Vec<(Envelope, Option<String>)> = claimed
            .into_iter()
            .map(|j| {
                let envelope = Envelope::new(
                    Event::JobDue(JobDue {
                        job_id: j.job_id,
                        appointment_id: j.appointment_id,
                        generation: j.generation,
                        kind: j.kind,
                        due_at: j.due_at,
                    }),
                    now,
                );
                (envelope, j.planned_traceparent)
            })
            .collect();
        // Each job's publish continues the trace that planned it, not this round's.
        let batch: Vec<(&Envelope, Option<&str>)> = envelopes.iter().map(|(e, t)| (e, t.as_deref())).collect();
        let dispatched = match self.publisher.publish_traced(&batch).await {
            Ok(dispatched) => dispatched,
            Err(e) => {
                if let Err(release) = jobs::release(&self.pool, &ids, &self.worker_id).await {
                    tracing::warn!(error = %release, "could not release claims; their lease will expire");
                }
                return Err(e.into());
            }
        };
        let marked = jobs::mark_enqueued(&self.pool, &ids, &dispatched, &self.worker_id).await?;
        metrics::counter!("careline_scheduler_jobs_dispatched_total").increment(ids.len() as u64);
        tracing::info!(dispatched = ids.len(), marked, "due jobs handed to the sender");
        Ok(ids.len())
    }

    /// Dispatches until `shutdown`, looping at once while rounds come back full.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let pause = match self.dispatch_once().await {
                Ok(n) if n as i64 >= self.batch => Duration::ZERO,
                Ok(_) => {
                    failures = 0;
                    self.tick
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "dispatch round failed");
                    metrics::counter!("careline_scheduler_dispatch_failures_total").increment(1);
                    (self.tick * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(10))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
