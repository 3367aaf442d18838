//! Sends the free-form answers queued by [`crate::inbound`] (STOP / START acknowledgements,
//! HELP answers) through the WhatsApp client, only inside the 24 h customer-service window.
//!
//! This is deliberately a small path of the webhook-consumer rather than the sender's: the
//! answers are not jobs (no template, no appointment, no consent check — an opt-out
//! acknowledgement must go out precisely when consent has just been withdrawn), there are few
//! of them, and they must not wait behind a reminder backlog. The protocol is in
//! [`careline_store::service_replies`]: committed `sending` before the call, never resent when
//! the answer of a call was lost.

use std::sync::Arc;
use std::time::Duration;

use careline_domain::facility::NetworkConfig;
use careline_domain::phone::Phone;
use careline_domain::service_reply::{self, ServiceReplyKind};
use careline_store::PgPool;
use careline_store::sends;
use careline_store::service_replies::{self as store, ServiceReply};
use careline_whatsapp::client::WhatsAppClient;
use careline_whatsapp::types::SendRequest;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::audit_trail;

/// Calls per answer, first one included.
const MAX_ATTEMPTS: i32 = 3;
/// Answers sent per round before looking at shutdown again.
const ROUND: usize = 50;

/// How one answer ended in this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    Sent,
    WindowClosed,
    Retry,
    Failed,
    Unknown,
}

impl ReplyOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::WindowClosed => "window_closed",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

/// Meta's pair interval, when not told otherwise.
const DEFAULT_PAIR_INTERVAL: Duration = Duration::from_secs(6);
/// A number's ceiling when the network file does not name it (Meta's default).
const DEFAULT_MPS: u32 = 80;
/// An answer's slot is at least this far ahead of its lease.
const SLOT_LEAD: Duration = Duration::from_millis(10);

/// Sends queued answers.
#[derive(Clone)]
pub struct ServiceReplier {
    pool: PgPool,
    client: Arc<WhatsAppClient>,
    network: Option<Arc<NetworkConfig>>,
    pair_interval: Duration,
}

impl ServiceReplier {
    pub fn new(pool: PgPool, client: WhatsAppClient, network: Option<Arc<NetworkConfig>>) -> Self {
        Self { pool, client: Arc::new(client), network, pair_interval: DEFAULT_PAIR_INTERVAL }
    }

    /// The recipient pair interval answers respect (Meta's, like `SENDER_PAIR_INTERVAL_MS`).
    pub fn with_pair_interval(mut self, pair_interval: Duration) -> Self {
        self.pair_interval = pair_interval;
        self
    }

    /// Waits for a send slot of the business number (the budget the sender's replicas share)
    /// and takes the recipient's turn. `false`: the recipient had a message less than the pair
    /// interval ago; try again later.
    async fn wait_for_limits(&self, phone_number_id: &str, to_e164: &str) -> sqlx::Result<bool> {
        let mps = self
            .network
            .as_ref()
            .and_then(|n| {
                n.facilities.iter().filter(|f| f.phone_number_id == phone_number_id).map(|f| f.throughput_mps).min()
            })
            .unwrap_or(DEFAULT_MPS);
        let period = sends::slot_period(mps, sends::DEFAULT_HEADROOM);
        let lease = sends::lease_slots(&self.pool, phone_number_id, 1, period, SLOT_LEAD).await?;
        let interval = self.pair_interval.mul_f64(1.0 + sends::DEFAULT_HEADROOM);
        if !sends::take_recipient_turn(&self.pool, &sends::recipient_key(to_e164), lease.first, interval).await? {
            return Ok(false);
        }
        if let Ok(wait) = (lease.first - lease.db_now).to_std() {
            tokio::time::sleep(wait).await;
        }
        Ok(true)
    }

    /// Runs until `shutdown`: a round every `poll` (the webhook poll interval).
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        loop {
            match self.send_due().await {
                Ok(n) if n >= ROUND => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "service replies not sent; retrying on the next round"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("service replier stopped");
    }

    /// Sends up to a round of due answers; returns how many were handled.
    pub async fn send_due(&self) -> sqlx::Result<usize> {
        let abandoned = store::expire_abandoned(&self.pool).await?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "service replies interrupted mid-call marked unknown; not resent");
        }
        let mut handled = 0;
        while handled < ROUND {
            match self.send_next().await? {
                Some(outcome) => {
                    handled += 1;
                    metrics::counter!("careline_webhook_service_replies_total", "outcome" => outcome.as_str())
                        .increment(1);
                }
                None => break,
            }
        }
        Ok(handled)
    }

    /// Claims one due answer and settles it. `None` when nothing is due.
    async fn send_next(&self) -> sqlx::Result<Option<ReplyOutcome>> {
        let mut tx = self.pool.begin().await?;
        let Some(reply) = store::claim_due(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let to = reply.to_e164.clone().unwrap_or_default();
        let closes_at = store::window_closes_at(&mut *tx, &reply.phone_number_id, &to).await?;
        if to.is_empty() || closes_at.is_none_or(|at| at <= Utc::now()) {
            store::set_state(&mut *tx, reply.reply_id, "window_closed", None, None, None).await?;
            audit_trail::service_reply_settled(
                &mut tx,
                reply.reply_id,
                &reply.inbound_message_id,
                &reply.kind,
                "window_closed",
                None,
                None,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(reply_id = %reply.reply_id, kind = %reply.kind, "customer-service window closed; answer not sent");
            return Ok(Some(ReplyOutcome::WindowClosed));
        }
        // Answers share the number's throughput and the recipient's pair interval with the
        // sender's messages: Meta counts them all.
        if !self.wait_for_limits(&reply.phone_number_id, &to).await? {
            let retry_in = chrono::Duration::from_std(self.pair_interval).unwrap_or_default();
            store::set_state(&mut *tx, reply.reply_id, "pending", None, None, Some(retry_in)).await?;
            tx.commit().await?;
            return Ok(Some(ReplyOutcome::Retry));
        }
        store::set_state(&mut *tx, reply.reply_id, "sending", None, None, None).await?;
        tx.commit().await?;

        let request = self.request(&reply, &to);
        let result = self.client.send(&reply.phone_number_id, &request).await;
        let (state, outcome, wamid, code, retry_in) = match &result {
            Ok(accepted) => ("sent", ReplyOutcome::Sent, Some(accepted.wamid.as_str()), None, None),
            Err(error) if error.outcome_unknown() => ("unknown", ReplyOutcome::Unknown, None, error.code(), None),
            Err(error) if error.class().is_retryable() && reply.attempts + 1 < MAX_ATTEMPTS => {
                let delay = chrono::Duration::seconds(2i64 << reply.attempts.clamp(0, 10));
                ("pending", ReplyOutcome::Retry, None, error.code(), Some(delay))
            }
            Err(error) => ("failed", ReplyOutcome::Failed, None, error.code(), None),
        };
        let code = code.and_then(|c| i32::try_from(c).ok());
        let mut tx = self.pool.begin().await?;
        store::set_state(&mut *tx, reply.reply_id, state, wamid, code, retry_in).await?;
        if state != "pending" {
            audit_trail::service_reply_settled(
                &mut tx,
                reply.reply_id,
                &reply.inbound_message_id,
                &reply.kind,
                state,
                wamid,
                code,
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(
            reply_id = %reply.reply_id,
            kind = %reply.kind,
            outcome = outcome.as_str(),
            error_code = code,
            "service reply settled"
        );
        Ok(Some(outcome))
    }

    fn request(&self, reply: &ServiceReply, to: &str) -> SendRequest {
        let kind = ServiceReplyKind::parse(&reply.kind).unwrap_or(ServiceReplyKind::Help);
        let facility = reply.facility_id.as_deref().and_then(|id| self.network.as_ref().and_then(|n| n.facility(id)));
        let body = service_reply::render(
            kind,
            &reply.language,
            facility.map(|f| f.name.as_str()),
            facility.and_then(|f| f.contact.as_ref()),
        );
        let wa_id = Phone::parse(to).map_or_else(|_| to.trim_start_matches('+').to_owned(), |p| p.wa_id().to_owned());
        SendRequest::text(wa_id, body).with_callback_data(format!("reply:{}", reply.reply_id))
    }
}
