//! Brute-force throttle (decision step 4): failed authentications are counted per client (IPv4 address or IPv6
//! /64) with `governor`'s GCRA; a client beyond its quota is locked out until the quota would admit another failure,
//! and a locked-out client gets 429 before any credential work. Successes consume nothing. Requests without a known
//! client or peer share one bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::credential::InsertionOrder;
use crate::network::canonical;

/// The most clients held locked out at once; beyond it, the oldest lock is dropped (with one quota every lock lasts
/// about as long, so the oldest is the first to end): a documented bound on memory under a distributed attack.
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

    /// One failure replenished every `period` per client, with `burst` allowed at once; `None` for a zero period.
    /// For periods a per-minute rate cannot state (short ones, in tests).
    pub fn per_period(period: Duration, burst: NonZeroU32) -> Option<Self> {
        Some(ThrottleConfig {
            quota: Quota::with_period(period)?.allow_burst(burst),
        })
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

/// What the throttle counts failures under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ThrottleKey {
    /// A client: its IPv4 address, or its IPv6 /64 (one subscriber usually holds a whole /64, so counting single
    /// IPv6 addresses would let it rotate through 2^64 of them).
    Client(IpAddr),
    /// Every request whose client and peer are both unknown (an acceptor that gives no peer): one bucket that they
    /// all share, so that brute force is throttled whatever the acceptor.
    Unknown,
}

impl ThrottleKey {
    /// The key of a request whose throttle address is `ip` (the client, else the trusted proxy), if any.
    pub(crate) fn of(ip: Option<IpAddr>) -> Self {
        match ip.map(canonical) {
            Some(IpAddr::V6(v6)) => {
                ThrottleKey::Client(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()))
            }
            Some(v4 @ IpAddr::V4(_)) => ThrottleKey::Client(v4),
            None => ThrottleKey::Unknown,
        }
    }
}

pub(crate) struct Throttle {
    failures: DefaultKeyedRateLimiter<ThrottleKey>,
    clock: DefaultClock,
    locks: Mutex<Locks>,
    /// How many locks `locks` holds, written under its mutex: read without it, so that a request takes no lock
    /// while nobody is locked out (the usual case).
    held: AtomicUsize,
    recorded: AtomicU64,
}

/// The clients locked out, each until an instant, with their insertion order for eviction. Every operation is
/// O(1) amortised: a full table drops its oldest lock (with one quota every lock lasts about as long, so the oldest
/// is also the first to end; an expired one goes before any live one).
struct Locks {
    until: HashMap<ThrottleKey, (Instant, u64)>,
    order: InsertionOrder<ThrottleKey>,
    next_stamp: u64,
}

impl Locks {
    fn new() -> Self {
        Locks {
            until: HashMap::new(),
            order: InsertionOrder::new(MAX_LOCKED_CLIENTS),
            next_stamp: 0,
        }
    }

    fn insert(&mut self, key: ThrottleKey, until: Instant) {
        if self.until.len() >= MAX_LOCKED_CLIENTS && !self.until.contains_key(&key) {
            let until_map = &self.until;
            if let Some(oldest) = self
                .order
                .pop_oldest(|k, stamp| Self::is_current(until_map, k, stamp))
            {
                self.until.remove(&oldest);
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.until.insert(key, (until, stamp));
        let until_map = &self.until;
        self.order
            .push(key, stamp, |k, stamp| Self::is_current(until_map, k, stamp));
    }

    /// Whether an order record (`key`, `stamp`) is still the table's entry for that key.
    fn is_current(
        until: &HashMap<ThrottleKey, (Instant, u64)>,
        key: &ThrottleKey,
        stamp: u64,
    ) -> bool {
        until.get(key).is_some_and(|(_, s)| *s == stamp)
    }
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig) -> Self {
        Throttle {
            failures: RateLimiter::keyed(config.quota),
            clock: DefaultClock::default(),
            locks: Mutex::new(Locks::new()),
            held: AtomicUsize::new(0),
            recorded: AtomicU64::new(0),
        }
    }

    /// Step 4: `Some(retry_after)` when the client (`None`: unknown) is locked out.
    pub(crate) fn locked_out(&self, client: Option<IpAddr>) -> Option<Duration> {
        // Nobody locked out, the usual case: no mutex, no clock read, no hashing.
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let key = ThrottleKey::of(client);
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        let (until, _) = *locks.until.get(&key)?;
        let now = self.clock.now();
        if until <= now {
            locks.until.remove(&key);
            self.held.store(locks.until.len(), Ordering::Relaxed);
            return None;
        }
        Some(Duration::from(until.duration_since(now)))
    }

    /// Counts one failed authentication of the client (`None`: unknown); locks it out when it is beyond its quota.
    pub(crate) fn record_failure(&self, client: Option<IpAddr>) {
        let key = ThrottleKey::of(client);
        if let Err(not_until) = self.failures.check_key(&key) {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.insert(key, not_until.earliest_possible());
            self.held.store(locks.until.len(), Ordering::Relaxed);
        }
        // Forget clients whose failures have fully replenished, now and then.
        if self.recorded.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.failures.retain_recent();
        }
    }

    #[cfg(test)]
    fn locks_held(&self) -> (usize, usize) {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        (locks.until.len(), locks.order.len())
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
            assert_eq!(t.locked_out(Some(attacker)), None);
            t.record_failure(Some(attacker));
        }
        assert_eq!(
            t.locked_out(Some(attacker)),
            None,
            "the burst itself is allowed"
        );
        t.record_failure(Some(attacker));
        let wait = t
            .locked_out(Some(attacker))
            .expect("locked after the burst");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            t.locked_out(Some(ip("203.0.113.8"))),
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
        t.record_failure(Some(ip("2001:db8:1:2::1")));
        t.record_failure(Some(ip("2001:db8:1:2::2")));
        assert!(
            t.locked_out(Some(ip("2001:db8:1:2::ffff"))).is_some(),
            "same /64"
        );
        assert!(
            t.locked_out(Some(ip("2001:db8:1:3::1"))).is_none(),
            "another /64"
        );
    }

    #[test]
    fn unknown_clients_share_one_bucket() {
        let t = Throttle::new(ThrottleConfig::per_minute(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(2).unwrap(),
        ));
        t.record_failure(None);
        t.record_failure(None);
        assert_eq!(t.locked_out(None), None, "the burst itself is allowed");
        t.record_failure(None);
        assert!(
            t.locked_out(None).is_some(),
            "requests without a known client are throttled together"
        );
        // The twin: a known client is not in that bucket.
        assert_eq!(t.locked_out(Some(ip("203.0.113.7"))), None);
    }

    #[test]
    fn throttle_keys_group_ipv6_by_64() {
        let key = |s: &str| ThrottleKey::of(Some(ip(s)));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(
            key("::ffff:203.0.113.7"),
            ThrottleKey::Client(ip("203.0.113.7"))
        );
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
        assert_eq!(ThrottleKey::of(None), ThrottleKey::Unknown);
    }

    /// A full table takes a new lock in O(1) amortised work: the oldest lock goes, the newest stays, and the
    /// eviction order never grows past twice the bound.
    #[test]
    fn a_full_table_drops_its_oldest_lock() {
        let t = Throttle::new(ThrottleConfig::per_minute(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(1).unwrap(),
        ));
        let client = |i: u32| Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        let extra = 1000;
        let max = u32::try_from(MAX_LOCKED_CLIENTS).unwrap();
        for i in 0..(max + extra) {
            t.record_failure(client(i));
            t.record_failure(client(i));
        }
        let (held, order) = t.locks_held();
        assert_eq!(held, MAX_LOCKED_CLIENTS);
        assert!(order <= 2 * MAX_LOCKED_CLIENTS, "{order}");
        for i in 0..extra {
            assert_eq!(
                t.locked_out(client(i)),
                None,
                "the oldest locks went first ({i})"
            );
        }
        for i in [extra, max + extra - 1] {
            assert!(t.locked_out(client(i)).is_some(), "newer locks stay ({i})");
        }
    }

    #[test]
    fn a_lock_renewed_before_the_table_fills_is_not_the_one_dropped() {
        let mut locks = Locks::new();
        let key = |i: u32| {
            ThrottleKey::of(Some(IpAddr::from(std::net::Ipv4Addr::from(
                0x0a00_0000 + i,
            ))))
        };
        let until = governor::clock::Clock::now(&DefaultClock::default());
        let max = u32::try_from(MAX_LOCKED_CLIENTS).unwrap();
        for i in 0..max {
            locks.insert(key(i), until);
        }
        // The first client is locked again: its first record in the order is stale now.
        locks.insert(key(0), until);
        locks.insert(key(max), until);
        assert_eq!(locks.until.len(), MAX_LOCKED_CLIENTS);
        assert!(
            locks.until.contains_key(&key(0)),
            "renewed, so not the oldest"
        );
        assert!(
            !locks.until.contains_key(&key(1)),
            "the oldest current lock went"
        );
        assert!(locks.until.contains_key(&key(max)));
    }

    #[test]
    fn locks_expire() {
        let config =
            ThrottleConfig::per_period(Duration::from_millis(30), NonZeroU32::MIN).unwrap();
        assert_eq!(
            ThrottleConfig::per_period(Duration::ZERO, NonZeroU32::MIN),
            None
        );
        let t = Throttle::new(config);
        let c = ip("198.51.100.1");
        t.record_failure(Some(c));
        t.record_failure(Some(c));
        assert!(t.locked_out(Some(c)).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(t.locked_out(Some(c)).is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(5_001)), 6);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
    }
}
