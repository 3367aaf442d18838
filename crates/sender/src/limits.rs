//! The two WhatsApp rate limits, enforced before each call (governor, GCRA).
//!
//! - **Throughput** per business number (`phone_number_id`): at most the facility's
//!   `throughput_mps`. Meta (and wa-sandbox) count messages in any sliding second, so the
//!   limiter paces evenly (one cell every `1/mps` s, burst 1) rather than allowing a burst of
//!   `mps` that a sliding window would see twice.
//! - **Pair rate** per recipient: one message per `SENDER_PAIR_INTERVAL_MS`, keyed by E.164.
//!   Keyed by the recipient alone (Meta keys by number *and* recipient), which is stricter and
//!   never wrong.
//!
//! The pair wait comes first: it may be seconds long, and taking a throughput cell before it
//! would let the cell go unused while later sends bunch up. Waiting happens inside a job's
//! handler, so a recipient's wait holds one concurrency permit and never blocks other
//! recipients beyond the consumer's semaphore.
//!
//! These limits are per process. Across replicas, recipients must be sharded so that one
//! replica owns a recipient (the jobs exchange's consistent hashing), and `throughput_mps`
//! must be divided among the replicas sending for a number.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use careline_domain::facility::NetworkConfig;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limiters for every business number in the network and for every recipient.
/// How far inside Meta's limits the sender stays: a permit is not an arrival, and the
/// scheduling and network delays between the two can bunch requests that left evenly paced.
/// 1.5 % keeps 81 requests at an 80 mps ceiling more than 15 ms wider than a second, and two
/// messages to one recipient 90 ms further apart than a 6 s pair interval.
pub const HEADROOM: f64 = 0.015;

pub struct RateLimits {
    numbers: HashMap<String, DefaultDirectRateLimiter>,
    pairs: DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// One throughput limiter per business number (the lowest ceiling wins when facilities
    /// share a number) and a pair limiter of one message per `pair_interval`.
    pub fn new(network: &NetworkConfig, pair_interval: Duration) -> Self {
        let mut ceilings: HashMap<String, u32> = HashMap::new();
        for facility in &network.facilities {
            let mps = facility.throughput_mps.max(1);
            ceilings.entry(facility.phone_number_id.clone()).and_modify(|c| *c = (*c).min(mps)).or_insert(mps);
        }
        let numbers = ceilings
            .into_iter()
            .map(|(number, mps)| {
                (number, RateLimiter::direct(paced(Duration::from_secs(1).div_f64(f64::from(mps) * (1.0 - HEADROOM)))))
            })
            .collect();
        let pairs = RateLimiter::keyed(paced(pair_interval.mul_f64(1.0 + HEADROOM)));
        Self { numbers, pairs }
    }

    /// Waits until both limits allow one more message from `phone_number_id` to `recipient`,
    /// and returns how long that took.
    pub async fn until_ready(&self, phone_number_id: &str, recipient: &str) -> Duration {
        let started = Instant::now();
        // The number first: its queue can be seconds long when the number is saturated, and a
        // pair permit taken before that wait would age while the request has not left yet.
        if let Some(limiter) = self.numbers.get(phone_number_id) {
            limiter.until_ready().await;
        }
        self.pairs.until_key_ready(&recipient.to_owned()).await;
        let waited = started.elapsed();
        metrics::histogram!("careline_sender_limiter_wait_seconds").record(waited.as_secs_f64());
        waited
    }

    /// Forgets recipients whose limiter state is back to fresh, so memory follows the active
    /// recipients rather than every recipient ever seen.
    pub fn forget_idle_recipients(&self) {
        self.pairs.retain_recent();
        self.pairs.shrink_to_fit();
    }
}

/// One cell per `period`, burst 1; a zero period is raised to 1 µs (governor needs > 0).
fn paced(period: Duration) -> Quota {
    Quota::with_period(period.max(Duration::from_micros(1))).expect("period is non-zero").allow_burst(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(mps: u32) -> NetworkConfig {
        NetworkConfig::from_toml(&format!(
            r#"
            [templates.booking_confirmation]
            name = "appointment_booked"
            languages = {{ en = "en" }}
            [templates.reminder]
            name = "appointment_reminder"
            languages = {{ en = "en" }}
            [[facility]]
            id = "city"
            name = "City"
            time_zone = "UTC"
            phone_number_id = "1001"
            throughput_mps = {mps}
            "#
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn one_recipient_is_spaced_by_the_pair_interval_and_others_are_not() {
        let limits = RateLimits::new(&network(1000), Duration::from_millis(200));
        let started = Instant::now();
        limits.until_ready("1001", "+14155550001").await;
        limits.until_ready("1001", "+14155550002").await;
        assert!(started.elapsed() < Duration::from_millis(100), "different recipients do not wait");
        limits.until_ready("1001", "+14155550001").await;
        assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_number_is_paced_at_its_throughput() {
        let limits = RateLimits::new(&network(20), Duration::from_millis(1));
        let started = Instant::now();
        for i in 0..11 {
            limits.until_ready("1001", &format!("+1415555{i:04}")).await;
        }
        // 11 messages at 20 mps: the 11th goes out 10 × 50 ms after the first.
        assert!(started.elapsed() >= Duration::from_millis(480), "{:?}", started.elapsed());
    }
}
