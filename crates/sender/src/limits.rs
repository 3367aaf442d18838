//! Meta's two rate limits, held across every sender replica.
//!
//! - **Throughput per business number.** Each number's budget lives in PostgreSQL
//!   (`number_budget`): one send slot every `1 / mps` seconds. A replica that has jobs waiting
//!   *leases* the next few slots (at most [`LEASE_SPAN`] worth) in one statement that moves
//!   the number's `next_slot` forward, so slots leased by different replicas never overlap,
//!   whichever replicas join or leave. Slots are handed out just in time
//!   ([`LOOKAHEAD`] before they fall due), urgent jobs first: when a number is saturated,
//!   booking confirmations and reminders due within hours go ahead of reminders days ahead.
//!   An unused slot is lost, never saved up, so the number is never driven in a burst.
//! - **Pair rate per recipient.** The authoritative check is PostgreSQL's: a claim succeeds
//!   only if its slot is one pair interval after the recipient's last slot, from whichever
//!   replica (`recipient_pacing`, see `careline_store::sends::claim`). Before a job asks for a
//!   slot, [`RecipientGuard`] (governor's keyed limiter) filters out a second message to a
//!   recipient this replica has just served, so slots are not wasted on claims that would be
//!   refused. Its memory follows the recipients of the last pair interval, not every
//!   recipient ever seen.
//!
//! Both limits are kept [`HEADROOM`] inside Meta's: a slot is when the request leaves, and
//! network and scheduling delays between two requests can bring them closer on arrival.
//! Slot times are PostgreSQL's clock, so every replica (and every pod's clock) agrees on them;
//! each lease also reads PostgreSQL's clock to map slots to this process's monotonic clock.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use careline_domain::facility::NetworkConfig;
use careline_store::PgPool;
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How far inside Meta's limits the sender stays by default (1.5 %, `SENDER_HEADROOM_PERCENT`):
/// 81 requests at an 80 mps ceiling are more than 15 ms wider than a second, and two messages to
/// one recipient 90 ms further apart than a 6 s pair interval. Raise it where the time between a
/// slot and the request's arrival varies more (a loaded node, a far-away egress proxy).
pub const HEADROOM: f64 = careline_store::sends::DEFAULT_HEADROOM;
/// A slot is handed to its job this long before it falls due, so the job's claim can commit in
/// time for the call to leave on the slot.
pub const LOOKAHEAD: Duration = Duration::from_millis(40);
/// A lease covers at most this much of a number's time, so replicas share a saturated number
/// in turns of 100 ms and one replica's urgent jobs wait at most that long for another's bulk.
pub const LEASE_SPAN: Duration = Duration::from_millis(100);
/// Slots are leased again once the last leased slot is less than this ahead, so the next
/// lease starts where the previous one ends.
const LEASE_AHEAD: Duration = Duration::from_millis(150);
/// A lease's first slot is at least this far ahead of the moment it is taken: the hand-out
/// lookahead plus the lease's own round trip.
const LEASE_LEAD: Duration = Duration::from_millis(60);
/// The most slots one lease takes.
const MAX_LEASE: u32 = 256;
/// A slot handed out later than this after its time is dropped rather than used late (a late
/// call would bunch with the next one); a job whose claim committed later than this after its
/// slot asks for another slot.
pub const LATE_TOLERANCE: Duration = Duration::from_millis(5);
/// How long a clock-offset sample stays the reference (see [`ClockMap`]).
const OFFSET_SAMPLE_TTL: Duration = Duration::from_secs(30);
/// Pause after a failed lease (PostgreSQL unreachable).
const LEASE_RETRY: Duration = Duration::from_millis(250);

/// A send slot: when the call leaves, on this process's clock and on PostgreSQL's.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub at: Instant,
    pub db_at: DateTime<Utc>,
}

/// Which queue of waiters a job joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Urgent,
    Bulk,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::Bulk => "bulk",
        }
    }
}

struct SlotRequest {
    lane: Lane,
    reply: oneshot::Sender<Slot>,
}

/// The send slots of every business number in the network.
pub struct NumberPacers {
    pacers: HashMap<String, mpsc::UnboundedSender<SlotRequest>>,
}

pub use careline_store::sends::slot_period;

impl NumberPacers {
    /// One pacer task per business number (the lowest ceiling wins when facilities share a
    /// number), running until `shutdown`.
    pub fn start(network: &NetworkConfig, headroom: f64, pool: PgPool, shutdown: CancellationToken) -> Self {
        let mut ceilings: HashMap<String, u32> = HashMap::new();
        for facility in &network.facilities {
            let mps = facility.throughput_mps.max(1);
            ceilings.entry(facility.phone_number_id.clone()).and_modify(|c| *c = (*c).min(mps)).or_insert(mps);
        }
        let pacers = ceilings
            .into_iter()
            .map(|(number, mps)| {
                let (tx, rx) = mpsc::unbounded_channel();
                let pacer = Pacer::new(number.clone(), mps, headroom, pool.clone());
                tokio::spawn(pacer.run(rx, shutdown.clone()));
                (number, tx)
            })
            .collect();
        Self { pacers }
    }

    /// Waits for this job's slot on `phone_number_id`; `None` if the number is not configured
    /// or the sender is stopping.
    pub async fn slot(&self, phone_number_id: &str, lane: Lane) -> Option<Slot> {
        let pacer = self.pacers.get(phone_number_id)?;
        let (reply, slot) = oneshot::channel();
        pacer.send(SlotRequest { lane, reply }).ok()?;
        let started = Instant::now();
        let slot = slot.await.ok()?;
        metrics::histogram!("careline_sender_limiter_wait_seconds", "lane" => lane.as_str())
            .record(started.elapsed().as_secs_f64());
        Some(slot)
    }
}

/// Maps PostgreSQL's clock to this process's monotonic clock. Each lease reads PostgreSQL's
/// clock somewhere inside its round trip; the sample with the shortest round trip bounds that
/// uncertainty best (as NTP does), so it stays the reference until a sample nearly as tight
/// arrives or it ages out.
struct ClockMap {
    /// PostgreSQL time at `at`, and the round trip it was measured with.
    best: Option<(DateTime<Utc>, Instant, Duration)>,
}

impl ClockMap {
    fn sample(&mut self, db_now: DateTime<Utc>, asked: Instant, answered: Instant) {
        let rtt = answered - asked;
        let midpoint = asked + rtt / 2;
        let replace = match self.best {
            None => true,
            Some((_, at, best_rtt)) => rtt <= best_rtt + best_rtt / 2 || at.elapsed() > OFFSET_SAMPLE_TTL,
        };
        if replace {
            self.best = Some((db_now, midpoint, rtt));
        }
    }

    fn local(&self, db_at: DateTime<Utc>) -> Instant {
        let (db_ref, local_ref, _) = self.best.expect("sampled before use");
        match (db_at - db_ref).to_std() {
            Ok(ahead) => local_ref + ahead,
            Err(_) => local_ref.checked_sub((db_ref - db_at).to_std().unwrap_or_default()).unwrap_or(local_ref),
        }
    }
}

struct Pacer {
    number: String,
    mps: u32,
    period: Duration,
    pool: PgPool,
    clock: ClockMap,
    urgent: VecDeque<oneshot::Sender<Slot>>,
    bulk: VecDeque<oneshot::Sender<Slot>>,
    slots: VecDeque<Slot>,
}

impl Pacer {
    fn new(number: String, mps: u32, headroom: f64, pool: PgPool) -> Self {
        Self {
            number,
            mps,
            period: slot_period(mps, headroom),
            pool,
            clock: ClockMap { best: None },
            urgent: VecDeque::new(),
            bulk: VecDeque::new(),
            slots: VecDeque::new(),
        }
    }

    fn push(&mut self, request: SlotRequest) {
        match request.lane {
            Lane::Urgent => self.urgent.push_back(request.reply),
            Lane::Bulk => self.bulk.push_back(request.reply),
        }
    }

    fn waiting(&self) -> usize {
        self.urgent.len() + self.bulk.len()
    }

    /// The next waiter still waiting, urgent lane first.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Slot>> {
        while let Some(waiter) = self.urgent.pop_front().or_else(|| self.bulk.pop_front()) {
            if !waiter.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<SlotRequest>, shutdown: CancellationToken) {
        let lease_cap = u32::try_from((LEASE_SPAN.as_nanos() / self.period.as_nanos().max(1)).max(1))
            .unwrap_or(MAX_LEASE)
            .min(MAX_LEASE);
        metrics::gauge!("careline_sender_number_limit_mps", "phone_number_id" => self.number.clone())
            .set(f64::from(self.mps));
        loop {
            while let Ok(request) = requests.try_recv() {
                self.push(request);
            }
            if self.waiting() == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    request = requests.recv() => match request {
                        Some(request) => self.push(request),
                        None => return,
                    },
                }
                continue;
            }
            // Slots whose time has passed are gone: using them late would bunch calls.
            let now = Instant::now();
            while self.slots.front().is_some_and(|s| s.at + LATE_TOLERANCE < now) {
                self.slots.pop_front();
                metrics::counter!("careline_sender_number_slots_unused_total", "phone_number_id" => self.number.clone())
                    .increment(1);
            }
            // Lease the next slots before these run out, so leases follow each other without a
            // gap (a lease's first slot is at least its lead away from the moment it is taken).
            let leased_until = self.slots.back().map(|s| s.at);
            let running_low = leased_until.is_none_or(|last| last < Instant::now() + LEASE_AHEAD);
            let unserved = self.waiting().saturating_sub(self.slots.len());
            if running_low && unserved > 0 {
                let n = u32::try_from(unserved).unwrap_or(u32::MAX).clamp(1, lease_cap);
                match self.lease(n).await {
                    Ok(leased) => self.slots.extend(leased),
                    Err(e) => {
                        tracing::warn!(error = %e, number = %self.number, "cannot lease send slots; retrying");
                        if self.slots.is_empty() {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(LEASE_RETRY) => {}
                            }
                        }
                    }
                }
                continue;
            }
            let Some(slot) = self.slots.front().copied() else {
                let n = u32::try_from(self.waiting()).unwrap_or(u32::MAX).clamp(1, lease_cap);
                match self.lease(n).await {
                    Ok(leased) => self.slots.extend(leased),
                    Err(e) => {
                        tracing::warn!(error = %e, number = %self.number, "cannot lease send slots; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(LEASE_RETRY) => {}
                        }
                    }
                }
                continue;
            };
            let hand_out_at = slot.at.checked_sub(LOOKAHEAD).unwrap_or(slot.at);
            if hand_out_at > Instant::now() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(hand_out_at) => {}
                }
                // Requests that came in meanwhile compete for this slot (urgent ones win).
                take_new_requests(&mut self, &mut requests);
            }
            self.slots.pop_front();
            match self.next_waiter() {
                Some(waiter) => {
                    // A waiter gone between the check and now loses the slot, like a stopped job.
                    let _ = waiter.send(slot);
                    metrics::counter!("careline_sender_number_sends_total", "phone_number_id" => self.number.clone())
                        .increment(1);
                }
                None => {
                    metrics::counter!("careline_sender_number_slots_unused_total", "phone_number_id" => self.number.clone())
                        .increment(1);
                }
            }
        }
    }

    /// Leases `n` slots from PostgreSQL and maps them to this process's clock.
    async fn lease(&mut self, n: u32) -> sqlx::Result<Vec<Slot>> {
        let asked = Instant::now();
        let lease = careline_store::sends::lease_slots(&self.pool, &self.number, n, self.period, LEASE_LEAD).await?;
        self.clock.sample(lease.db_now, asked, Instant::now());
        Ok((0..n)
            .map(|i| {
                let db_at = lease.first + chrono::Duration::from_std(lease.period * i).unwrap_or_default();
                Slot { at: self.clock.local(db_at), db_at }
            })
            .collect())
    }
}

fn take_new_requests(pacer: &mut Pacer, requests: &mut mpsc::UnboundedReceiver<SlotRequest>) {
    while let Ok(request) = requests.try_recv() {
        pacer.push(request);
    }
}

/// This replica's memory of recipients it has just given a slot: a second message to one of
/// them inside the pair interval is deferred without asking for a slot.
pub struct RecipientGuard {
    recent: DefaultKeyedRateLimiter<String>,
}

impl RecipientGuard {
    /// `pair_interval` already includes the headroom (see `Settings::policy`).
    pub fn new(pair_interval: Duration) -> Self {
        let period = pair_interval.max(Duration::from_micros(1));
        let quota = Quota::with_period(period).expect("period is non-zero").allow_burst(NonZeroU32::MIN);
        Self { recent: RateLimiter::keyed(quota) }
    }

    /// Takes the recipient's turn if it is free now; otherwise says how long until it is.
    pub fn try_take(&self, recipient_key: &str) -> Result<(), Duration> {
        self.recent.check_key(&recipient_key.to_owned()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
        })
    }

    /// Forgets recipients whose turn is free again, so memory follows the recipients of the
    /// last pair interval rather than every recipient ever seen.
    pub fn forget_idle(&self) {
        self.recent.retain_recent();
        self.recent.shrink_to_fit();
    }

    /// Recipients remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

/// Shared handle.
pub type Guard = Arc<RecipientGuard>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_inside_the_ceiling() {
        assert!(slot_period(80, HEADROOM) > Duration::from_millis(12));
        assert!(slot_period(80, HEADROOM) < Duration::from_micros(12_700));
        assert!(slot_period(1000, HEADROOM) > Duration::from_micros(1000));
        assert!(slot_period(80, 0.05) > slot_period(80, HEADROOM));
    }

    #[test]
    fn a_recipient_gets_one_turn_per_pair_interval_and_others_are_free() {
        let guard = RecipientGuard::new(Duration::from_secs(6));
        assert!(guard.try_take("a").is_ok());
        assert!(guard.try_take("b").is_ok());
        let wait = guard.try_take("a").unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6), "{wait:?}");
    }

    #[test]
    fn memory_follows_recent_recipients_not_every_recipient_ever_seen() {
        let guard = RecipientGuard::new(Duration::from_millis(20));
        for i in 0..1_000_000u32 {
            guard.try_take(&format!("{i:064x}")).unwrap();
        }
        assert_eq!(guard.len(), 1_000_000);
        std::thread::sleep(Duration::from_millis(200));
        guard.forget_idle();
        assert!(guard.is_empty(), "{} recipients still remembered", guard.len());
    }
}
