//! Brute-force throttle (decision step 4): failed authentications are counted per client (IPv4 address or IPv6
//! /64) with `governor`'s GCRA; a client beyond its quota is locked out until the quota would admit another failure,
//! and a locked-out client gets 429 before any credential work. Successes consume nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::network::throttle_key;

/// The most clients held locked out at once; beyond it, expired locks are purged first, then the lock that ends
/// soonest is dropped (a documented bound on memory under a distributed attack).
pub const MAX_LOCKED_CLIENTS: usize = 65_536;

/// Throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    quota: Quota,
}

impl ThrottleConfig {
    /// `failed_auth_per_minute` failures per minute per client, with `burst` allowed at once.
    pub fn per_minute(failed_auth_per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        ThrottleConfig {
            quota: Quota::per_minute(failed_auth_per_minute).allow_burst(burst),
        }
    }

    /// Any `governor` quota (e.g. a short period, for tests).
    pub fn from_quota(quota: Quota) -> Self {
        ThrottleConfig { quota }
    }
}

impl Default for ThrottleConfig {
    /// Defaults to 10 failures per minute with a burst of 5, the contract's example: a human who mistypes a key a
    /// few times is not locked out; a guesser is held to one try every 6 seconds.
    fn default() -> Self {
        ThrottleConfig::per_minute(
            NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
        )
    }
}

type Instant = <DefaultClock as Clock>::Instant;

pub(crate) struct Throttle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    locked: Mutex<HashMap<IpAddr, Instant>>,
    recorded: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig) -> Self {
        let clock = DefaultClock::default();
        Throttle {
            failures: RateLimiter::keyed(config.quota),
            clock,
            locked: Mutex::new(HashMap::new()),
            recorded: AtomicU64::new(0),
        }
    }

    /// Step 4: `Some(retry_after)` when the client is locked out.
    pub(crate) fn locked_out(&self, client: IpAddr) -> Option<Duration> {
        let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
        // Nobody locked out, the usual case: no clock read, no hashing.
        if locked.is_empty() {
            return None;
        }
        let key = throttle_key(client);
        let now = self.clock.now();
        let until = *locked.get(&key)?;
        if until <= now {
            locked.remove(&key);
            return None;
        }
        Some(Duration::from(until.duration_since(now)))
    }

    /// Counts one failed authentication; locks the client out when it is beyond its quota.
    pub(crate) fn record_failure(&self, client: IpAddr) {
        let key = throttle_key(client);
        if let Err(not_until) = self.failures.check_key(&key) {
            let until = not_until.earliest_possible();
            let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
            if locked.len() >= MAX_LOCKED_CLIENTS && !locked.contains_key(&key) {
                let now = self.clock.now();
                locked.retain(|_, t| *t > now);
                if locked.len() >= MAX_LOCKED_CLIENTS
                    && let Some(soonest) = locked.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
                {
                    locked.remove(&soonest);
                }
            }
            locked.insert(key, until);
        }
        // Forget clients whose failures have fully replenished, now and then.
        if self.recorded.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.failures.retain_recent();
        }
    }
}

/// Whole seconds for `Retry-After`, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn locks_after_the_burst_and_only_that_client() {
        let t = Throttle::new(ThrottleConfig::per_minute(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(3).unwrap(),
        ));
        let attacker = ip("203.0.113.7");
        for _ in 0..3 {
            assert_eq!(t.locked_out(attacker), None);
            t.record_failure(attacker);
        }
        assert_eq!(t.locked_out(attacker), None, "the burst itself is allowed");
        t.record_failure(attacker);
        let wait = t.locked_out(attacker).expect("locked after the burst");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            t.locked_out(ip("203.0.113.8")),
            None,
            "other clients are unaffected"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let t = Throttle::new(ThrottleConfig::per_minute(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(1).unwrap(),
        ));
        t.record_failure(ip("2001:db8:1:2::1"));
        t.record_failure(ip("2001:db8:1:2::2"));
        assert!(t.locked_out(ip("2001:db8:1:2::ffff")).is_some(), "same /64");
        assert!(t.locked_out(ip("2001:db8:1:3::1")).is_none(), "another /64");
    }

    #[test]
    fn locks_expire() {
        let quota = Quota::with_period(Duration::from_millis(30))
            .unwrap()
            .allow_burst(NonZeroU32::new(1).unwrap());
        let t = Throttle::new(ThrottleConfig::from_quota(quota));
        let c = ip("198.51.100.1");
        t.record_failure(c);
        t.record_failure(c);
        assert!(t.locked_out(c).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(t.locked_out(c).is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(5_001)), 6);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
    }
}
