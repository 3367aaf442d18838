//! The two limits Meta enforces on sends, as Meta words them.
//!
//! - **Throughput** (130429): at most `mps` messages per business number in any sliding
//!   one-second window. A sliding window (not a fixed per-second bucket) is the strict reading:
//!   a sender that bursts 80 at 0.9 s and 80 at 1.1 s is over the limit, and Careline's
//!   pacing must not count on bucket edges.
//! - **Pair rate** (131056): per (business number, recipient), one message per interval
//!   (6 s by default) with a small burst allowance — a token bucket of `burst` tokens refilled
//!   at one per interval.
//!
//! Refused requests consume nothing: they are not messages. Both take `now` as an argument so
//! tests can drive time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);
/// Forget idle pair buckets every this many admissions, so memory follows active recipients.
const PRUNE_EVERY: u64 = 4096;

/// Per-number sliding one-second window.
#[derive(Debug, Default)]
pub struct ThroughputLimiter {
    windows: HashMap<String, VecDeque<Instant>>,
}

impl ThroughputLimiter {
    /// Admits one message for `number` if fewer than `mps` were admitted in the last second.
    /// `mps == 0` means unlimited.
    pub fn try_admit(&mut self, number: &str, mps: u32, now: Instant) -> bool {
        if mps == 0 {
            return true;
        }
        let window = self.windows.entry(number.to_owned()).or_default();
        while window.front().is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW) {
            window.pop_front();
        }
        if window.len() >= mps as usize {
            return false;
        }
        window.push_back(now);
        true
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per (number, recipient) token bucket.
#[derive(Debug)]
pub struct PairLimiter {
    interval: Duration,
    burst: u32,
    buckets: HashMap<(String, String), Bucket>,
    admissions: u64,
}

impl PairLimiter {
    /// One message per `interval` after a burst of `burst`; a zero interval disables it.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self { interval, burst: burst.max(1), buckets: HashMap::new(), admissions: 0 }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated);
        let earned = elapsed.as_secs_f64() / self.interval.as_secs_f64();
        bucket.tokens = (bucket.tokens + earned).min(f64::from(self.burst));
        bucket.updated = now;
    }

    /// Admits one message from `number` to `recipient` if the bucket has a token.
    pub fn try_admit(&mut self, number: &str, recipient: &str, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        self.admissions += 1;
        if self.admissions.is_multiple_of(PRUNE_EVERY) {
            self.prune(now);
        }
        let key = (number.to_owned(), recipient.to_owned());
        let mut bucket =
            self.buckets.get(&key).copied().unwrap_or(Bucket { tokens: f64::from(self.burst), updated: now });
        self.refill(&mut bucket, now);
        let admitted = bucket.tokens >= 1.0;
        if admitted {
            bucket.tokens -= 1.0;
        }
        self.buckets.insert(key, bucket);
        admitted
    }

    /// Drops buckets that have refilled completely: they behave like absent ones.
    fn prune(&mut self, now: Instant) {
        let full_after = self.interval.mul_f64(f64::from(self.burst));
        self.buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.buckets.clear();
        self.admissions = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_admits_mps_per_sliding_second() {
        let mut limiter = ThroughputLimiter::default();
        let t0 = Instant::now();
        let admitted = (0..30).filter(|_| limiter.try_admit("1", 20, t0)).count();
        assert_eq!(admitted, 20);
        // Still inside the window that started at t0.
        assert!(!limiter.try_admit("1", 20, t0 + Duration::from_millis(999)));
        // Other numbers have their own window.
        assert!(limiter.try_admit("2", 20, t0));
        // A second later the window has slid past all of them.
        let later = t0 + WINDOW;
        assert_eq!((0..30).filter(|_| limiter.try_admit("1", 20, later)).count(), 20);
        assert!(limiter.try_admit("1", 0, later), "0 means unlimited");
    }

    #[test]
    fn throughput_slides_rather_than_resetting_on_second_boundaries() {
        let mut limiter = ThroughputLimiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(limiter.try_admit("1", 10, t0 + Duration::from_millis(900 + i)));
        }
        // 200 ms later a fixed bucket would have reset; the sliding window has not.
        assert!(!limiter.try_admit("1", 10, t0 + Duration::from_millis(1100)));
        assert!(limiter.try_admit("1", 10, t0 + Duration::from_millis(1900)));
    }

    #[test]
    fn the_pair_limit_allows_one_message_per_interval_after_the_burst() {
        let mut limiter = PairLimiter::new(Duration::from_secs(6), 1);
        let t0 = Instant::now();
        assert!(limiter.try_admit("1", "a", t0));
        assert!(!limiter.try_admit("1", "a", t0 + Duration::from_secs(5)));
        assert!(limiter.try_admit("1", "b", t0), "other recipients are unaffected");
        assert!(limiter.try_admit("1", "a", t0 + Duration::from_secs(6)));
        assert!(!limiter.try_admit("1", "a", t0 + Duration::from_secs(7)));
    }

    #[test]
    fn a_burst_borrows_future_quota() {
        let mut limiter = PairLimiter::new(Duration::from_secs(6), 3);
        let t0 = Instant::now();
        assert_eq!((0..5).filter(|_| limiter.try_admit("1", "a", t0)).count(), 3);
        assert!(!limiter.try_admit("1", "a", t0 + Duration::from_secs(5)));
        assert!(limiter.try_admit("1", "a", t0 + Duration::from_secs(6)));
        assert!(!limiter.try_admit("1", "a", t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_zero_interval_disables_the_pair_limit_and_pruning_forgets_idle_pairs() {
        let mut off = PairLimiter::new(Duration::ZERO, 1);
        let t0 = Instant::now();
        assert!((0..100).all(|_| off.try_admit("1", "a", t0)));

        let mut limiter = PairLimiter::new(Duration::from_millis(10), 1);
        for i in 0..100 {
            limiter.try_admit("1", &i.to_string(), t0);
        }
        assert_eq!(limiter.buckets.len(), 100);
        limiter.prune(t0 + Duration::from_millis(5));
        assert_eq!(limiter.buckets.len(), 100, "not yet refilled");
        limiter.prune(t0 + Duration::from_secs(1));
        assert!(limiter.buckets.is_empty());
    }
}
