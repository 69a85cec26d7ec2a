//! The clock, injected: logic never reads the system time directly, so tests can move time.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use scopegate::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
//! clock.advance(Duration::from_secs(5));
//! assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_005));
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Whole seconds since the Unix epoch, saturating: 0 before it, `i64::MAX` beyond the range.
#[cfg(any(feature = "jwt", feature = "sqlite", feature = "postgres"))]
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// A shared clock is a clock (so that one `Arc<dyn Clock>` can be handed to several builders).
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for tests (shared: clones see the same time).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A clock as the JWT authenticator holds it: injected (read through [`Clock::now`] always), and known to be the
/// system's when it is, so that an expiry can be judged from the system's coarse clock.
#[cfg(feature = "jwt")]
#[derive(Clone, Debug)]
pub(crate) struct HeldClock {
    clock: Arc<dyn Clock>,
    system: bool,
}

#[cfg(feature = "jwt")]
impl HeldClock {
    /// Holds `clock`, noting whether it is [`SystemClock`].
    pub(crate) fn new<C: Clock>(clock: C) -> Self {
        HeldClock {
            system: std::any::TypeId::of::<C>() == std::any::TypeId::of::<SystemClock>(),
            clock: Arc::new(clock),
        }
    }

    /// The current time.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Whole seconds since the Unix epoch, never behind [`now`](Self::now) (it may be one second ahead, for the last
    /// few milliseconds of a second): only for judging that something has **not yet expired**, where a later time
    /// refuses sooner, never later. Never for a start (`nbf`, `iat`), where a later time would accept sooner.
    ///
    /// The system clock is read coarsely where it can be: Linux's `CLOCK_REALTIME_COARSE`, the time of the last
    /// timer tick, costs about 2 ns against 30 ns for `SystemTime::now`, and lags the exact clock by less than its
    /// resolution (a tick), which is added before rounding down. An injected clock is read exactly.
    pub(crate) fn secs_not_behind(&self) -> i64 {
        if self.system {
            system_secs_not_behind()
        } else {
            unix_secs(self.now())
        }
    }
}

/// See [`HeldClock::secs_not_behind`]. The coarse clock is used only when its resolution is known and under a second.
#[cfg(all(feature = "jwt", target_os = "linux"))]
fn system_secs_not_behind() -> i64 {
    use rustix::time::{ClockId, clock_getres, clock_gettime};
    static RESOLUTION: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    let resolution = *RESOLUTION.get_or_init(|| {
        let res = clock_getres(ClockId::RealtimeCoarse);
        (res.tv_sec == 0 && res.tv_nsec > 0).then_some(res.tv_nsec)
    });
    match resolution {
        Some(lag) => {
            let coarse = clock_gettime(ClockId::RealtimeCoarse);
            secs_after_lag(coarse.tv_sec, coarse.tv_nsec, lag)
        }
        None => unix_secs(SystemTime::now()),
    }
}

#[cfg(all(feature = "jwt", not(target_os = "linux")))]
fn system_secs_not_behind() -> i64 {
    unix_secs(SystemTime::now())
}

/// The whole second a reading of `secs` and `nanos` reaches once `lag` nanoseconds (less than a second) are added:
/// the latest second the exact clock can be in when the reading lags it by less than `lag`.
#[cfg(all(feature = "jwt", target_os = "linux"))]
fn secs_after_lag(secs: i64, nanos: i64, lag: i64) -> i64 {
    secs.saturating_add(i64::from(nanos + lag >= 1_000_000_000))
}

#[cfg(all(test, feature = "jwt"))]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lagging_reading_rounds_to_the_latest_second_the_exact_clock_can_be_in() {
        const TICK: i64 = 4_000_000;
        assert_eq!(secs_after_lag(1_000, 0, TICK), 1_000);
        assert_eq!(secs_after_lag(1_000, 995_999_999, TICK), 1_000);
        // Within a tick of the next second: the exact clock may be there already.
        assert_eq!(secs_after_lag(1_000, 996_000_000, TICK), 1_001);
        assert_eq!(secs_after_lag(1_000, 999_999_999, TICK), 1_001);
        assert_eq!(secs_after_lag(i64::MAX, 999_999_999, TICK), i64::MAX);
    }

    #[test]
    fn the_system_clock_is_never_read_behind_and_at_most_a_second_ahead() {
        let held = HeldClock::new(SystemClock);
        for _ in 0..1_000 {
            let before = unix_secs(SystemTime::now());
            let read = held.secs_not_behind();
            let after = unix_secs(SystemTime::now());
            assert!(read >= before, "{read} behind {before}");
            assert!(read <= after + 1, "{read} more than a second past {after}");
        }
    }

    #[test]
    fn an_injected_clock_is_read_exactly() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_999);
        let manual = ManualClock::new(start);
        let held = HeldClock::new(manual.clone());
        assert_eq!(held.now(), start);
        assert_eq!(held.secs_not_behind(), 1_000);
        manual.advance(Duration::from_millis(1));
        assert_eq!(held.secs_not_behind(), 1_001);
        // A shared system clock is injected like any other: read exactly, not coarsely.
        assert!(!HeldClock::new(Arc::new(SystemClock)).system);
        assert!(HeldClock::new(SystemClock).system);
    }
}
