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

    /// Whole seconds since the Unix epoch, never behind [`now`](Self::now) and at most one second ahead of it: only
    /// for judging that something has **not yet ended** (a remembered token's `exp`, a key set's staleness bound),
    /// where a later time ends it sooner, never later. Never for a start (`nbf`, `iat`), where a later time would
    /// accept sooner.
    ///
    /// The system clock is read coarsely where it can be: Linux's `CLOCK_REALTIME_COARSE`, the time of the last
    /// timer tick, costs about 2 ns against 30 ns for `SystemTime::now`. It lags the exact clock by a tick (a few
    /// milliseconds; more only while ticks stall), so one whole second is added to its seconds: the exact clock's
    /// second is never later than that as long as the lag stays under a second. An injected clock is read exactly.
    pub(crate) fn secs_not_behind(&self) -> i64 {
        if self.system {
            system_secs_not_behind()
        } else {
            unix_secs(self.now())
        }
    }
}

/// See [`HeldClock::secs_not_behind`]. A coarse clock the kernel refuses falls back to the exact one.
#[cfg(all(feature = "jwt", target_os = "linux"))]
fn system_secs_not_behind() -> i64 {
    use rustix::time::{ClockId, DynamicClockId, clock_gettime_dynamic};
    match clock_gettime_dynamic(DynamicClockId::Known(ClockId::RealtimeCoarse)) {
        Ok(coarse) => coarse.tv_sec.max(0).saturating_add(1),
        Err(_) => unix_secs(SystemTime::now()),
    }
}

#[cfg(all(feature = "jwt", not(target_os = "linux")))]
fn system_secs_not_behind() -> i64 {
    unix_secs(SystemTime::now())
}

#[cfg(all(test, feature = "jwt"))]
mod tests {
    use super::*;

    /// Across a second's boundary, where the coarse clock lags into the second before (the first milliseconds of
    /// each second): every reading is at or after the exact clock's second read before it, and at most one second
    /// past the exact clock's second read after it. Spins until the exact clock has crossed one boundary (< 1 s).
    #[test]
    fn the_system_clock_is_never_read_behind_and_at_most_a_second_ahead() {
        let held = HeldClock::new(SystemClock);
        let start = unix_secs(SystemTime::now());
        let mut crossed = 0u32;
        loop {
            let before = unix_secs(SystemTime::now());
            let read = held.secs_not_behind();
            let after = unix_secs(SystemTime::now());
            assert!(read >= before, "{read} behind {before}");
            assert!(read <= after + 1, "{read} more than a second past {after}");
            // Keep reading for a while into the new second: the coarse clock's lag is at its start.
            if before > start {
                crossed += 1;
                if crossed == 100_000 {
                    break;
                }
            }
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
