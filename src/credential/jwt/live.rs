//! Live key sets: a background refresh, a single-flight fetch for unknown `kid`s, the last good set kept through
//! an outage, and `unavailable` once it is too old.
//!
//! The request path reads one atomic here (until when the key set may be used) and never waits, except a token
//! whose `kid` is unknown (or whose issuer's set is not usable), which may wait for one cooldown-limited fetch.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::keyset::{JwksSource, KeySet, Origin};
use super::verify::{Failure, Issuer, RefreshError};
use crate::layer::{AuditSink, KeySetEvent};
use crate::policy::{Denial, DenialKind};

/// Default background refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Default shortest time between two fetches caused by unknown `kid`s (or by a failing provider).
pub(crate) const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(10);
/// Default longest time a key set is used without a good fetch.
pub(crate) const DEFAULT_MAX_STALE: Duration = Duration::from_secs(86_400);
/// The shortest `Cache-Control: max-age` that replaces the refresh interval.
pub(crate) const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// The longest `Cache-Control: max-age` that replaces the refresh interval.
pub(crate) const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);

/// How a live key set is kept fresh. Every duration is at least one second, and `max_stale` at least `interval`.
///
/// ```
/// use std::time::Duration;
/// use scopegate::credential::jwt::KeyRefresh;
///
/// let refresh = KeyRefresh::new()
///     .interval(Duration::from_secs(600))
///     .unknown_kid_cooldown(Duration::from_secs(30))
///     .max_stale(Duration::from_secs(12 * 3600));
/// assert_eq!(refresh.get_interval(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    interval: Duration,
    unknown_kid_cooldown: Duration,
    max_stale: Duration,
}

impl Default for KeyRefresh {
    fn default() -> Self {
        KeyRefresh {
            interval: DEFAULT_REFRESH_INTERVAL,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
            max_stale: DEFAULT_MAX_STALE,
        }
    }
}

impl KeyRefresh {
    /// The defaults: a refresh every 300 s, unknown-`kid` fetches at most every 10 s, 24 h of staleness.
    pub fn new() -> Self {
        Self::default()
    }

    /// The background refresh interval (a `Cache-Control: max-age` within 60 s..=86,400 s on the
    /// fetched document overrides it for the next refresh).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The shortest time between two fetches for tokens whose `kid` is not in the set; a failing provider is
    /// retried this often too.
    #[must_use]
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// How long the last good key set is used while fetches fail. Past it, the issuer's tokens get 503
    /// `unavailable` until a fetch succeeds.
    #[must_use]
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// The background refresh interval.
    pub fn get_interval(&self) -> Duration {
        self.interval
    }

    /// The unknown-`kid` cooldown.
    pub fn get_unknown_kid_cooldown(&self) -> Duration {
        self.unknown_kid_cooldown
    }

    /// The longest a key set is used without a good fetch.
    pub fn get_max_stale(&self) -> Duration {
        self.max_stale
    }

    /// The setting at fault (as the gate file names it) and why, if any.
    pub(super) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let second = Duration::from_secs(1);
        if self.interval < second {
            return Err(("refresh_seconds", "must be at least one second"));
        }
        if self.unknown_kid_cooldown < second {
            return Err((
                "unknown_kid_cooldown_seconds",
                "must be at least one second",
            ));
        }
        if self.max_stale < second {
            return Err(("max_stale_seconds", "must be at least one second"));
        }
        if self.max_stale < self.interval {
            return Err((
                "max_stale_seconds",
                "is shorter than refresh_seconds: the key set would go stale between two refreshes",
            ));
        }
        Ok(())
    }
}

/// `fresh_until` before the first good fetch.
const NEVER: i64 = i64::MIN;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Why a fetch is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// `refresh_keys()`: always.
    Forced,
    /// A token named a `kid` the set lacks (or the set is unusable): at most once per cooldown.
    UnknownKid,
    /// The background task woke: when the refresh is due.
    Due,
}

/// The refresh state of one issuer's live key set.
pub(super) struct Live {
    source: Arc<dyn JwksSource>,
    interval: i64,
    cooldown: i64,
    max_stale: i64,
    /// Unix seconds until which the key set may be used: the last good fetch plus `max_stale`; [`NEVER`] before the
    /// first.
    fresh_until: AtomicI64,
    /// Unix seconds at which the background refresh is due.
    next_due: AtomicI64,
    /// Whether the last fetch succeeded.
    healthy: AtomicBool,
    /// Whether the background task was started.
    running: AtomicBool,
    /// Serialises fetches (single flight); holds the last attempt and the current document's digest.
    gate: tokio::sync::Mutex<Attempts>,
    /// Where refresh failures are reported (the gate's audit sink, once attached).
    events: std::sync::OnceLock<Arc<dyn AuditSink>>,
}

struct Attempts {
    /// Unix seconds of the last fetch attempt.
    last: Option<i64>,
    digest: Option<[u8; 32]>,
    /// Whether the last fetch failed (and was reported).
    failing: bool,
}

impl Live {
    pub(super) fn new(source: Arc<dyn JwksSource>, refresh: KeyRefresh) -> Self {
        Live {
            source,
            interval: secs(refresh.interval),
            cooldown: secs(refresh.unknown_kid_cooldown),
            max_stale: secs(refresh.max_stale),
            fresh_until: AtomicI64::new(NEVER),
            next_due: AtomicI64::new(NEVER),
            healthy: AtomicBool::new(false),
            running: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(Attempts {
                last: None,
                digest: None,
                failing: false,
            }),
            events: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn events(&self) -> &std::sync::OnceLock<Arc<dyn AuditSink>> {
        &self.events
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The request path's check: a set never fetched, or older than `max_stale`, answers `unavailable` (and a
    /// fetch may help).
    #[inline]
    pub(super) fn check_fresh(&self, now: i64) -> Result<(), Failure> {
        let until = self.fresh_until.load(Ordering::Acquire);
        if now <= until {
            Ok(())
        } else {
            Err(Self::not_fresh(until))
        }
    }

    #[cold]
    fn not_fresh(until: i64) -> Failure {
        let detail = if until == NEVER {
            "the issuer's key set has not been fetched yet"
        } else {
            "the issuer's key set is older than max_stale (its refreshes fail)"
        };
        Failure {
            denial: Denial::new(DenialKind::Unavailable, detail),
            refresh_may_help: true,
        }
    }

    /// How long the background task sleeps before it looks again: until the refresh is due, and never longer than
    /// the cooldown (so that a clock change or a failing provider is noticed in time).
    fn pause(&self, now: i64) -> Duration {
        let due = self.next_due.load(Ordering::Acquire);
        let wait = due.saturating_sub(now).clamp(0, self.cooldown);
        Duration::from_secs(u64::try_from(wait).unwrap_or(0))
    }

    fn report(&self, issuer: &str, outcome: &'static str, cause: Option<&str>) {
        let source = self.source.describe();
        let event = KeySetEvent::new(issuer, &source, outcome, cause);
        match self.events.get() {
            Some(sink) => sink.record_key_set(&event),
            None => crate::layer::TracingAudit.record_key_set(&event),
        }
    }
}

impl Issuer {
    /// Starts the background refresh on the current tokio runtime, once. Every fetch calls it, and a key set is
    /// only used after a fetch: a live issuer that serves tokens under tokio is refreshed in the background. (The
    /// task sleeps on tokio's timer, which `#[tokio::main]` enables; on another executor, or a runtime without
    /// timers, there is no background refresh, and a set past `max_stale` is fetched on demand.)
    fn ensure_refreshing(self: &Arc<Self>, live: &Live) {
        if live.running.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if live
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            runtime.spawn(refresh_loop(Arc::downgrade(self)));
        }
    }

    /// Puts in a key set by hand. A live issuer forgets its fetched document, under the fetch lock, so that the
    /// next fetch replaces this set even if the provider's document did not change; while a fetch runs, nothing is
    /// replaced (false).
    pub(super) fn replace_by_hand(&self, keys: KeySet) -> bool {
        let Some(live) = self.live() else {
            self.swap_keys(keys);
            return true;
        };
        let Ok(mut attempts) = live.gate.try_lock() else {
            return false;
        };
        attempts.digest = None;
        self.swap_keys(keys);
        true
    }

    /// One fetch if `why` calls for it, shared by concurrent callers. Returns whether the key set changed.
    ///
    /// On tokio the fetch runs in a task of its own: a caller that gives up (a cancelled request) does not abort a
    /// fetch that the cooldown already counts.
    pub(super) async fn refresh(self: &Arc<Self>, why: Why) -> Result<bool, RefreshError> {
        let Some(live) = self.live() else {
            return Err(RefreshError::NotRefreshable);
        };
        self.ensure_refreshing(live);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let this = Arc::clone(self);
                runtime
                    .spawn(async move { this.refresh_here(why).await })
                    .await
                    .unwrap_or_else(|_| Err(RefreshError::Fetch("the fetch task failed".into())))
            }
            Err(_) => self.refresh_here(why).await,
        }
    }

    async fn refresh_here(&self, why: Why) -> Result<bool, RefreshError> {
        let Some(live) = self.live() else {
            return Err(RefreshError::NotRefreshable);
        };
        let mut attempts = live.gate.lock().await;
        let now = self.now_secs();
        let wanted = match why {
            Why::Forced => true,
            // Within the cooldown (or a clock that went backwards): the fetch that just ran, or is too recent, stands.
            Why::UnknownKid => attempts
                .last
                .is_none_or(|last| now < last || now >= last.saturating_add(live.cooldown)),
            Why::Due => now >= live.next_due.load(Ordering::Acquire),
        };
        if !wanted {
            return Ok(false);
        }
        attempts.last = Some(now);
        let result = self.fetch_and_swap(live, &mut attempts).await;
        let now = self.now_secs();
        // The cooldown runs from the end of the fetch: callers that waited through a slow one do not start another.
        attempts.last = Some(now);
        match &result {
            Ok((_, max_age)) => {
                live.healthy.store(true, Ordering::Release);
                live.fresh_until
                    .store(now.saturating_add(live.max_stale), Ordering::Release);
                // A max-age within bounds replaces the interval, but never lets the set go stale before the
                // next refresh is due.
                let next = max_age
                    .filter(|age| (MIN_MAX_AGE..=MAX_MAX_AGE).contains(age))
                    .map_or(live.interval, secs)
                    .min(live.max_stale.saturating_sub(live.cooldown))
                    .max(1);
                live.next_due
                    .store(now.saturating_add(next), Ordering::Release);
                if std::mem::take(&mut attempts.failing) {
                    live.report(self.label(), "recovered", None);
                }
            }
            Err(error) => {
                live.healthy.store(false, Ordering::Release);
                live.next_due
                    .store(now.saturating_add(live.cooldown), Ordering::Release);
                attempts.failing = true;
                live.report(self.label(), "failed", Some(&bounded(error.to_string())));
            }
        }
        result.map(|(changed, _)| changed)
    }

    async fn fetch_and_swap(
        &self,
        live: &Live,
        attempts: &mut Attempts,
    ) -> Result<(bool, Option<Duration>), RefreshError> {
        // The source bounds its own time (the HTTPS sources: one deadline for all their requests).
        let document = live.source.fetch().await.map_err(RefreshError::Fetch)?;
        let digest: [u8; 32] = Sha256::digest(document.bytes()).into();
        if attempts.digest == Some(digest) {
            return Ok((false, document.max_age()));
        }
        let set = KeySet::parse(document.bytes(), &live.source.describe(), Origin::Fetched)?;
        // A fetched set replaces the previous one: a key the provider removed stops verifying.
        self.swap_keys(set);
        attempts.digest = Some(digest);
        Ok((true, document.max_age()))
    }
}

/// An audit event's cause, at most 512 bytes (a provider's strings are inside).
fn bounded(mut cause: String) -> String {
    const MAX: usize = 512;
    if cause.len() > MAX {
        let mut end = MAX;
        while !cause.is_char_boundary(end) {
            end -= 1;
        }
        cause.truncate(end);
        cause.push('…');
    }
    cause
}

/// Clears `running` when the background task ends (its runtime shutting down, say), so that the next fetch on a
/// live runtime starts another. Not after a panic: a runtime without timers (`enable_time`) cannot run the task,
/// and trying again on every fetch would only repeat the panic.
struct Running(Weak<Issuer>);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(live) = self.0.upgrade().as_ref().and_then(|i| i.live()) {
            live.running.store(false, Ordering::Release);
        }
    }
}

async fn refresh_loop(issuer: Weak<Issuer>) {
    let _running = Running(issuer.clone());
    loop {
        let pause = {
            let Some(issuer) = issuer.upgrade() else {
                return;
            };
            let Some(live) = issuer.live() else {
                return;
            };
            live.pause(issuer.now_secs())
        };
        // At least a second between looks, whatever the clock says.
        tokio::time::sleep(pause.max(Duration::from_secs(1))).await;
        let Some(issuer) = issuer.upgrade() else {
            return;
        };
        // A failure is reported (audit event) inside; the previous set stays. Run here, in this task.
        let _ = issuer.refresh_here(Why::Due).await;
    }
}
