//! Server time: the [`Clock`] trait, the system and manual clocks, and a
//! monotone wrapper.
//!
//! Inside the library every instant is UTC integer milliseconds since the Unix
//! epoch (`i64`); chrono types appear only at the public edges. Every decision
//! is taken on the server's clock, never on the client's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of server time in UTC milliseconds since the Unix epoch.
///
/// Implementations must be cheap: the verifier reads the clock once per
/// request. Wrap a clock in [`MonotonicClock`] so that a clock stepped back
/// (an NTP correction) never un-expires a ticket; the [`Verifier`] and the
/// [`Issuer`] do this themselves.
///
/// [`Verifier`]: crate::Verifier
/// [`Issuer`]: crate::Issuer
pub trait Clock: Send + Sync + 'static {
    /// The current time, UTC milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The current time as a chrono instant (saturating at the ends of
    /// chrono's range).
    fn now(&self) -> DateTime<Utc> {
        ms_to_datetime(self.now_ms())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> i64 {
        (**self).now_ms()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970 is treated as the epoch itself: the
            // monotone wrapper then keeps time from running backwards.
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to: for tests and simulations.
///
/// Clones share the same time, so a test can keep one handle and give another
/// to the verifier.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `ms` milliseconds since the Unix epoch.
    pub fn new(ms: i64) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(ms)),
        }
    }

    /// A clock standing at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self::new(at.timestamp_millis())
    }

    /// Sets the time to `ms` milliseconds since the Unix epoch (backwards too).
    pub fn set_ms(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Sets the time to `at` (backwards too).
    pub fn set(&self, at: DateTime<Utc>) {
        self.set_ms(at.timestamp_millis());
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = duration_to_ms(by);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Moves the clock backward by `by` (saturating), as an NTP step would.
    pub fn rewind(&self, by: Duration) {
        let by = duration_to_ms(by);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_sub(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Wraps a clock so that the time it reports never decreases:
/// `now = max(last reported, inner now)`.
///
/// A server clock stepped back therefore never un-expires a ticket nor revives
/// a dead chain. Clones share the high-water mark.
#[derive(Debug, Clone)]
pub struct MonotonicClock<C> {
    inner: C,
    last: Arc<AtomicI64>,
}

impl<C: Clock> MonotonicClock<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            last: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// The wrapped clock.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: Clock> Clock for MonotonicClock<C> {
    fn now_ms(&self) -> i64 {
        let now = self.inner.now_ms();
        // Read first: the mark moves at most once a millisecond, so most
        // calls need no read-modify-write, and concurrent callers keep the
        // cache line shared instead of bouncing it between cores.
        let last = self.last.load(Ordering::Acquire);
        if now <= last {
            return last;
        }
        let previous = self.last.fetch_max(now, Ordering::AcqRel);
        previous.max(now)
    }
}

/// Milliseconds in `d`, saturating at `i64::MAX`.
pub(crate) fn duration_to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A chrono instant for `ms`, saturating at chrono's range.
pub(crate) fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotone_clock_never_runs_backwards() {
        let manual = ManualClock::new(1_000);
        let clock = MonotonicClock::new(manual.clone());
        assert_eq!(clock.now_ms(), 1_000);
        manual.rewind(Duration::from_secs(3600));
        assert_eq!(clock.now_ms(), 1_000, "a step back is ignored");
        manual.set_ms(5_000);
        assert_eq!(clock.now_ms(), 5_000);
    }

    #[test]
    fn manual_clock_saturates_at_the_ends() {
        let clock = ManualClock::new(i64::MAX - 1);
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now_ms(), i64::MAX);
        clock.set_ms(i64::MIN + 1);
        clock.rewind(Duration::from_secs(10));
        assert_eq!(clock.now_ms(), i64::MIN);
        // chrono conversion saturates instead of panicking.
        assert_eq!(clock.now(), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
