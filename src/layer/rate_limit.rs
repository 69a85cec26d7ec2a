//! Per-key rate limits (decision step 9): an API key with a rate limit (`N/UNIT`, stored with the key) may make at
//! most N allowed requests per unit, counted with `governor`'s GCRA (burst N) keyed by key id. Only requests that
//! passed every other step count; a refused one (429 `rate_limited`) consumes nothing. Limits are per key, never per
//! client, and per gate: each replica counts on its own.
//!
//! Memory: one limiter per distinct limit (keys are issued from a handful), each holding a state for the keys that
//! used it recently; a key's state is dropped once its quota has fully replenished (swept every 4,096 checks). Only
//! keys that authenticated reach it, so a client cannot grow it with made-up ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use foldhash::fast::RandomState;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};

use crate::credential::api_key::{KeyId, RateLimit};

type KeyLimiter =
    RateLimiter<KeyId, DefaultKeyedStateStore<KeyId>, DefaultClock, StateInformationMiddleware>;

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// Limits up to this N keep every `RateLimit` value of an allowed answer made in advance.
const PREPARED_STATES: u32 = 1024;

/// One limit's limiter, and its header values made once.
struct Limiter {
    limit: RateLimit,
    keys: KeyLimiter,
    policy: HeaderValue,
    /// The `RateLimit` value of an allowed answer, by the remaining count (for N up to [`PREPARED_STATES`]).
    states: Vec<HeaderValue>,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        let count = limit.count().get();
        // N per unit, all N at once at most: one cell every unit/N.
        let quota = Quota::with_period(limit.unit().period() / count)
            .unwrap_or_else(|| Quota::per_second(limit.count()))
            .allow_burst(limit.count());
        let window = limit.unit().period().as_secs();
        let policy = HeaderValue::from_str(&format!("\"key\";q={count};w={window}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"key\""));
        let mut limiter = Limiter {
            limit,
            keys: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            policy,
            states: Vec::new(),
        };
        if count <= PREPARED_STATES {
            limiter.states = (0..=count).map(|r| limiter.allowed_state(r)).collect();
        }
        limiter
    }

    /// `RateLimit` for an allowed answer with `remaining` left: they are all back `t` seconds from now.
    fn allowed_state(&self, remaining: u32) -> HeaderValue {
        let count = self.limit.count().get();
        let missing = count.saturating_sub(remaining);
        state_value(
            remaining,
            ceil_secs(self.limit.unit().period() * missing / count),
        )
    }
}

/// The `RateLimit-Policy` and `RateLimit` header values of one answer (draft-ietf-httpapi-ratelimit-headers).
#[derive(Debug, Clone)]
pub(crate) struct RateHeaders {
    pub(crate) policy: HeaderValue,
    pub(crate) state: HeaderValue,
}

impl RateHeaders {
    /// Sets both headers on a response.
    pub(crate) fn apply(self, headers: &mut http::HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.state);
    }
}

/// A key's check: allowed (with the headers), or limited for this long (with the headers).
#[derive(Debug)]
pub(crate) enum RateOutcome {
    Allowed(RateHeaders),
    Limited(Duration, RateHeaders),
}

/// The limiters of one gate.
#[derive(Default)]
pub(crate) struct KeyRateLimits {
    by_limit: RwLock<HashMap<RateLimit, Arc<Limiter>, RandomState>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl KeyRateLimits {
    /// Counts one allowed request of key `id` against `limit`.
    pub(crate) fn check(&self, id: KeyId, limit: RateLimit) -> RateOutcome {
        {
            let all = self.by_limit.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(limiter) = all.get(&limit) {
                return self.check_with(limiter, id);
            }
        }
        // The first key with this limit: make its limiter (limits are few: keys are issued from a handful).
        let limiter = Arc::clone(
            self.by_limit
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(limit)
                .or_insert_with(|| Arc::new(Limiter::new(limit))),
        );
        self.check_with(&limiter, id)
    }

    fn check_with(&self, limiter: &Limiter, id: KeyId) -> RateOutcome {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.keys.retain_recent();
        }
        match limiter.keys.check_key(&id) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let state = usize::try_from(remaining)
                    .ok()
                    .and_then(|r| limiter.states.get(r).cloned())
                    .unwrap_or_else(|| limiter.allowed_state(remaining));
                RateOutcome::Allowed(RateHeaders {
                    policy: limiter.policy.clone(),
                    state,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let headers = RateHeaders {
                    policy: limiter.policy.clone(),
                    state: state_value(0, ceil_secs(wait).max(1)),
                };
                RateOutcome::Limited(wait, headers)
            }
        }
    }
}

fn state_value(remaining: u32, reset_secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"key\";r={remaining};t={reset_secs}"))
        .unwrap_or_else(|_| HeaderValue::from_static("\"key\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> KeyId {
        format!("{n:0>16}").parse().unwrap()
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_other_keys_are_untouched() {
        let limits = KeyRateLimits::default();
        let limit: RateLimit = "3/m".parse().unwrap();
        for expected_remaining in [2, 1, 0] {
            match limits.check(id(1), limit) {
                RateOutcome::Allowed(h) => {
                    assert_eq!(h.policy, "\"key\";q=3;w=60");
                    let state = h.state.to_str().unwrap().to_owned();
                    assert!(
                        state.starts_with(&format!("\"key\";r={expected_remaining};t=")),
                        "{state}"
                    );
                }
                RateOutcome::Limited(..) => panic!("limited within the burst"),
            }
        }
        match limits.check(id(1), limit) {
            RateOutcome::Limited(wait, h) => {
                assert!(
                    wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
                    "{wait:?}"
                );
                assert!(h.state.to_str().unwrap().starts_with("\"key\";r=0;t="));
            }
            RateOutcome::Allowed(_) => panic!("allowed past the burst"),
        }
        // Another key with the same limit, and the same key under another limit, count apart.
        assert!(matches!(
            limits.check(id(2), limit),
            RateOutcome::Allowed(_)
        ));
        assert!(matches!(
            limits.check(id(1), "1/s".parse().unwrap()),
            RateOutcome::Allowed(_)
        ));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn an_allowed_answer_says_when_the_used_requests_are_all_back() {
        let limiter = Limiter::new("3/m".parse().unwrap());
        let states: Vec<_> = (0..=3).map(|r| limiter.allowed_state(r)).collect();
        assert_eq!(
            states,
            [
                "\"key\";r=0;t=60",
                "\"key\";r=1;t=40",
                "\"key\";r=2;t=20",
                "\"key\";r=3;t=0"
            ]
        );
        // Made in advance, the same values.
        assert_eq!(limiter.states, states);
        // 7 per hour: 3 used come back in 3/7 of an hour, 1,542.857… s, rounded up.
        let odd = Limiter::new("7/h".parse().unwrap());
        assert_eq!(odd.allowed_state(4), "\"key\";r=4;t=1543");
        assert_eq!(odd.policy, "\"key\";q=7;w=3600");
    }

    #[test]
    fn both_headers_are_set_and_replace_what_was_there() {
        let mut headers = http::HeaderMap::new();
        headers.insert(RATELIMIT, HeaderValue::from_static("stale"));
        RateHeaders {
            policy: HeaderValue::from_static("\"key\";q=3;w=60"),
            state: HeaderValue::from_static("\"key\";r=2;t=20"),
        }
        .apply(&mut headers);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[RATELIMIT_POLICY], "\"key\";q=3;w=60");
        assert_eq!(headers[RATELIMIT], "\"key\";r=2;t=20");
    }
}
