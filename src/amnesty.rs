//! [`Amnesty`]: liveness deadlines inside a window the operator names are
//! forgiven, so a store outage longer than the deadlines near the front
//! does not throw those people out.
//!
//! A liveness deadline `d` is forgiven at server time `now` when the
//! window `[from, until]` holds it and `now` is still before `until`: the
//! person has until the window's end to come back. The window bounds the
//! forgiveness both ways; nothing outside it is touched, and once `until`
//! has passed every deadline counts as it always did.
//!
//! Both places that decide liveness consult the same amnesty: the
//! verifier (`offline_resumed`, see
//! [`Verifier::with_amnesty`](crate::Verifier::with_amnesty)) and the room
//! state that drops dead places
//! ([`MemoryRoomState`](crate::room::MemoryRoomState) through
//! [`RoomState::share_amnesty`](crate::room::RoomState::share_amnesty)).
//! A place the state dropped before the amnesty was declared is not
//! brought back: declare it while the outage runs (the
//! `store_unavailable` alert fires within a minute), with a window that
//! may reach back to the outage's start.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

/// The longest window an amnesty may cover (a day): a typo must not
/// forgive the room for ever.
pub const MAX_AMNESTY_MS: i64 = 24 * 60 * 60 * 1000;

/// A forgiveness window for liveness deadlines, shared by the verifiers
/// and the room state (see the [module docs](self)). Reads are relaxed
/// atomic loads, made only when a deadline has already passed.
pub struct Amnesty {
    from_ms: AtomicI64,
    until_ms: AtomicI64,
}

impl Default for Amnesty {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Amnesty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Amnesty")
            .field("window", &self.window())
            .finish()
    }
}

/// Why an amnesty window was refused (nothing changed).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmnestyError {
    /// `from` is after `until`.
    #[error("the amnesty window must start before it ends")]
    Inverted,
    /// The window is longer than [`MAX_AMNESTY_MS`].
    #[error("the amnesty window may cover a day at most")]
    TooLong,
}

impl Amnesty {
    /// No window: nothing forgiven.
    pub fn new() -> Self {
        Self {
            from_ms: AtomicI64::new(i64::MAX),
            until_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Forgives the deadlines in `[from_ms, until_ms]` until `until_ms`.
    /// Replaces any earlier window.
    pub fn declare(&self, from_ms: i64, until_ms: i64) -> Result<(), AmnestyError> {
        if from_ms > until_ms {
            return Err(AmnestyError::Inverted);
        }
        if !matches!(until_ms.checked_sub(from_ms), Some(d) if d <= MAX_AMNESTY_MS) {
            return Err(AmnestyError::TooLong);
        }
        // Closed first, then widened: a reader between the stores sees an
        // empty window, never a wider one than declared.
        self.until_ms.store(i64::MIN, Ordering::Relaxed);
        self.from_ms.store(from_ms, Ordering::Relaxed);
        self.until_ms.store(until_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the amnesty at once.
    pub fn clear(&self) {
        self.until_ms.store(i64::MIN, Ordering::Relaxed);
        self.from_ms.store(i64::MAX, Ordering::Relaxed);
    }

    /// The declared window `(from_ms, until_ms)`, if any (past ones
    /// included).
    pub fn window(&self) -> Option<(i64, i64)> {
        let (from, until) = (
            self.from_ms.load(Ordering::Relaxed),
            self.until_ms.load(Ordering::Relaxed),
        );
        (from <= until).then_some((from, until))
    }

    /// Whether a passed deadline `deadline_ms` is forgiven at `now_ms`.
    pub fn forgives(&self, deadline_ms: i64, now_ms: i64) -> bool {
        match self.window() {
            Some((from, until)) => from <= deadline_ms && deadline_ms <= until && now_ms < until,
            None => false,
        }
    }

    /// The time to judge liveness by at `now_ms`: a deadline `d` is dead
    /// exactly when `d <= liveness_now(now_ms)`. During an amnesty that is
    /// just before the window's start, so the deadlines inside it live on
    /// (the ones after `now_ms` are alive anyway); otherwise `now_ms`.
    pub fn liveness_now(&self, now_ms: i64) -> i64 {
        match self.window() {
            Some((from, until)) if now_ms < until => now_ms.min(from.saturating_sub(1)),
            _ => now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgives_inside_the_window_until_its_end() {
        let a = Amnesty::new();
        assert!(!a.forgives(100, 200));
        a.declare(1_000, 5_000).unwrap();
        assert!(a.forgives(1_000, 4_999));
        assert!(a.forgives(5_000, 4_999));
        assert!(!a.forgives(999, 2_000), "before the window");
        assert!(!a.forgives(5_001, 5_002), "after the window");
        assert!(!a.forgives(2_000, 5_000), "the window has ended");
        assert_eq!(a.liveness_now(3_000), 999);
        assert_eq!(a.liveness_now(500), 500);
        assert_eq!(a.liveness_now(5_000), 5_000);
        // Every deadline: dead by liveness_now exactly when not forgiven.
        for now in [0, 999, 1_000, 3_000, 4_999, 5_000, 6_000] {
            for d in [0, 998, 999, 1_000, 2_000, 4_999, 5_000, 5_001, 7_000] {
                let dead_plain = d <= now && !a.forgives(d, now);
                assert_eq!(d <= a.liveness_now(now), dead_plain, "d={d} now={now}");
            }
        }
        a.clear();
        assert_eq!(a.window(), None);
        assert!(!a.forgives(2_000, 3_000));
    }

    #[test]
    fn bad_windows_change_nothing() {
        let a = Amnesty::new();
        a.declare(10, 20).unwrap();
        assert_eq!(a.declare(30, 20), Err(AmnestyError::Inverted));
        assert_eq!(a.declare(0, MAX_AMNESTY_MS + 1), Err(AmnestyError::TooLong));
        assert_eq!(a.declare(i64::MIN, i64::MAX), Err(AmnestyError::TooLong));
        assert_eq!(a.window(), Some((10, 20)));
    }
}
