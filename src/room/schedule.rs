//! The room's arithmetic, free of state and I/O: the admission token
//! bucket, the liveness deadline by distance to the front, jittered retry
//! times and the opening shuffle.
//!
//! Every [`RoomState`](super::RoomState) implementation applies the same
//! rules, so they live here where they can be tested alone.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a state operation needs to know to move admission forward: run on
/// every join and heartbeat, so admission progress is computed from
/// elapsed time and needs no background task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionRule {
    /// Server time of the operation (ms).
    pub now_ms: i64,
    /// Admission rate in people per second; `0` or negative admits nobody
    /// (paused).
    pub per_sec: f64,
    /// The most admissions that may be saved up while nobody is waiting.
    pub burst: f64,
    /// The most admitted chains alive at once, if capped.
    pub max_admitted: Option<u64>,
    /// When the queue opens (ms). Joins before it wait in a pre-queue and
    /// are placed in random order at the opening.
    pub opens_at_ms: i64,
    /// The seed of the opening shuffle (drawn from the OS by the engine).
    pub shuffle_seed: u64,
}

impl AdmissionRule {
    /// Whether admission is paused.
    pub fn paused(&self) -> bool {
        self.per_sec.is_nan() || self.per_sec <= 0.0
    }

    /// Whether the queue is open at `now_ms`.
    pub fn is_open(&self) -> bool {
        self.now_ms >= self.opens_at_ms
    }
}

/// Admissions saved up, refilled from elapsed time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenBucket {
    /// Admissions available now (fractional).
    pub tokens: f64,
    /// When `tokens` was last brought up to date; `None` before first use.
    pub last_ms: Option<i64>,
}

impl TokenBucket {
    /// Brings the bucket up to `rule.now_ms`, with `waiting` people in
    /// line. A new bucket starts full (an empty queue admits its first
    /// arrivals at once). Admissions earned while people wait are kept
    /// (however sparse the calls, the rate holds over time) up to the
    /// larger of one per waiting person and `rule.burst` (at least 1), not
    /// their sum. While paused or before the opening nothing accumulates. A
    /// clock that went backwards adds nothing.
    pub fn refill(&mut self, rule: &AdmissionRule, waiting: u64) {
        let saved = rule.burst.max(1.0);
        match self.last_ms {
            None => self.tokens = saved,
            Some(last) if !rule.paused() => {
                let cap = saved.max(waiting as f64);
                // Nothing is earned before the opening.
                let from = last.max(rule.opens_at_ms);
                let elapsed = rule.now_ms.saturating_sub(from).max(0) as f64;
                self.tokens = (self.tokens + rule.per_sec * elapsed / 1000.0).min(cap);
            }
            Some(_) => {}
        }
        self.last_ms = Some(match self.last_ms {
            Some(last) => last.max(rule.now_ms),
            None => rule.now_ms,
        });
    }

    /// Takes one admission if one is available.
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long a chain may go without a heartbeat, by its distance to the
/// front.
///
/// Far from the front a client heart-beats rarely: half its estimated wait,
/// up to [`max_ms`](Self::max_ms) (minutes in production), so millions of
/// waiting clients do not all call every few seconds. Near the front, and
/// once admitted, the deadline is [`near_ms`](Self::near_ms).
///
/// The near deadline must not be short: it has to outlast what honest
/// people do with their phones and browsers. A person who looks at a
/// message for 15 s stops every timer of the page; Chrome runs the timers
/// of a tab hidden for minutes at most once a minute (intensive wake-up
/// throttling), so a heartbeat may come a minute after it was due. Short
/// deadlines buy nothing against the airplane-mode trick: the gate refuses
/// every request without a live admitted ticket whatever the deadline.
/// The default, 75 s, is a minute of throttling plus 15 s of network; a
/// device away for longer (minutes) is `offline_resumed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The deadline near the front and while admitted (ms).
    pub near_ms: i64,
    /// The longest deadline ever granted (ms).
    pub max_ms: i64,
}

impl Default for Liveness {
    /// 75 seconds near the front and while admitted, 5 minutes at most.
    fn default() -> Self {
        Self {
            near_ms: 75_000,
            max_ms: 300_000,
        }
    }
}

impl Liveness {
    /// The deadline to grant (ms from now): `near_ms` when admitted, else
    /// half the estimated wait clamped to `near_ms..=max_ms` (`max_ms` when
    /// no estimate exists, e.g. admission is paused).
    pub fn live_for_ms(&self, admitted: bool, estimated_wait_ms: Option<i64>) -> i64 {
        let near = self.near_ms.min(self.max_ms).max(1);
        if admitted {
            return near;
        }
        match estimated_wait_ms {
            Some(wait) => (wait / 2).clamp(near, self.max_ms.max(near)),
            None => self.max_ms.max(near),
        }
    }
}

/// The estimated wait (ms) for a place with `ahead` people in front at
/// `per_sec` people per second, plus `until_open_ms`; `None` when paused.
pub(crate) fn estimated_wait_ms(ahead: u64, per_sec: f64, until_open_ms: i64) -> Option<i64> {
    if per_sec.is_nan() || per_sec <= 0.0 {
        return None;
    }
    let secs = ahead as f64 / per_sec;
    let ms = (secs * 1000.0).min(i64::MAX as f64 / 2.0) as i64;
    Some(ms.saturating_add(until_open_ms.max(0)))
}

/// How late a hidden Chrome tab may run a timer: it wakes at most once a
/// minute (intensive wake-up throttling).
pub(crate) const THROTTLED_WAKE_UP_MS: u64 = 60_000;

/// The network time allowed on top of a throttled wake-up.
const THROTTLE_MARGIN_MS: u64 = 5_000;

/// When to suggest the next heartbeat: a random point between 40% and 60%
/// of the liveness deadline, so clients do not return in waves and a lost
/// response still leaves time for a retry.
///
/// A throttled background tab runs the heartbeat at its next once-a-minute
/// wake-up, so the hint is also kept where that still arrives in time:
/// either a minute late is inside the deadline (hint + 70 s ≤ deadline), or
/// the hint is at most 50 s, so the timer fires at the very next wake-up, a
/// minute after the one that sent the last heartbeat (in time for any
/// deadline of 70 s or more). Only deadlines between about 85 s and 175 s
/// need the second rule; their hints then lie between 40% of the deadline
/// and 50 s, or at 40% where that is above 50 s.
pub(crate) fn jittered_retry_ms(live_for_ms: i64, random: u64) -> u64 {
    let live = live_for_ms.max(1) as u64;
    let low = live * 2 / 5;
    let span = (live / 5).max(1);
    let hint = low + random % span;
    // A minute late, plus the network on the way back and out again.
    let late = THROTTLED_WAKE_UP_MS + 2 * THROTTLE_MARGIN_MS;
    let soon = THROTTLED_WAKE_UP_MS - 2 * THROTTLE_MARGIN_MS;
    if hint + late <= live || hint <= soon {
        hint
    } else {
        // Where 40% of the deadline is above 50 s, it is early enough.
        soon.max(low).min(hint)
    }
}

/// A small pseudo-random sequence (SplitMix64) for jitter and the opening
/// shuffle; seeded from the OS random source, never used for secrets.
#[derive(Debug)]
pub(crate) struct SplitMix(AtomicU64);

impl SplitMix {
    /// A sequence starting at `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A sequence seeded from the operating system's random source.
    pub(crate) fn from_os() -> Self {
        Self::new(os_random_u64())
    }

    /// The next value.
    pub(crate) fn next_u64(&self) -> u64 {
        let x = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(x)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random `u64` from the operating system.
pub(crate) fn os_random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    u64::from_le_bytes(b)
}

/// Shuffles `items` uniformly (Fisher–Yates) with a sequence seeded by
/// `seed`: the opening order.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let rng = SplitMix::new(seed);
    for i in (1..items.len()).rev() {
        // Multiply-shift maps 64 random bits onto 0..=i without modulo bias
        // worth mentioning at queue sizes.
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(now_ms: i64, per_sec: f64) -> AdmissionRule {
        AdmissionRule {
            now_ms,
            per_sec,
            burst: per_sec.max(1.0),
            max_admitted: None,
            opens_at_ms: 0,
            shuffle_seed: 0,
        }
    }

    impl TokenBucket {
        fn refill_test(&mut self, rule: &AdmissionRule) {
            self.refill(rule, 0);
        }
    }

    #[test]
    fn bucket_keeps_what_waiting_people_earned() {
        let mut b = TokenBucket::default();
        b.refill(&rule(0, 1.0), 10);
        assert_eq!(b.tokens, 1.0, "a new bucket starts with the burst only");
        let mut b = TokenBucket {
            tokens: 0.0,
            last_ms: Some(0),
        };
        b.refill(&rule(3_000, 1.0), 10);
        assert_eq!(
            b.tokens, 3.0,
            "three seconds without a call still earn three"
        );
        b.refill(&rule(60_000, 1.0), 10);
        assert_eq!(b.tokens, 10.0, "never more than the people waiting");
    }

    #[test]
    fn bucket_refills_from_elapsed_time_and_caps_at_burst() {
        let mut b = TokenBucket::default();
        b.refill_test(&rule(1_000, 2.0));
        assert_eq!(b.tokens, 2.0, "a new bucket starts full");
        assert!(b.take() && b.take() && !b.take());
        b.refill_test(&rule(1_500, 2.0));
        assert!(b.take() && !b.take(), "half a second at 2/s is one");
        b.refill_test(&rule(100_000, 2.0));
        assert_eq!(b.tokens, 2.0, "capped at the burst");
        // Paused: nothing accumulates, and resuming does not back-fill.
        b.take();
        b.take();
        b.refill_test(&rule(200_000, 0.0));
        assert_eq!(b.tokens, 0.0);
        b.refill_test(&rule(200_000, 2.0));
        assert_eq!(b.tokens, 0.0);
        // A clock going backwards adds nothing.
        b.refill_test(&rule(100_000, 2.0));
        assert_eq!(b.tokens, 0.0);
    }

    #[test]
    fn liveness_grows_with_distance_and_is_capped() {
        let l = Liveness {
            near_ms: 5_000,
            max_ms: 30_000,
        };
        assert_eq!(l.live_for_ms(true, Some(1_000_000)), 5_000);
        assert_eq!(l.live_for_ms(false, Some(0)), 5_000);
        assert_eq!(l.live_for_ms(false, Some(20_000)), 10_000);
        assert_eq!(l.live_for_ms(false, Some(10_000_000)), 30_000);
        assert_eq!(l.live_for_ms(false, None), 30_000);
        let tiny = Liveness {
            near_ms: 5_000,
            max_ms: 1_000,
        };
        assert_eq!(tiny.live_for_ms(true, None), 1_000, "max bounds near too");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let rng = SplitMix::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let r = jittered_retry_ms(10_000, rng.next_u64());
            assert!((4_000..6_000).contains(&r), "{r}");
            seen.insert(r);
        }
        assert!(seen.len() > 100, "jitter actually varies");
    }

    /// Whatever the deadline above 70 s, a heartbeat that a throttled tab
    /// runs at the next whole-minute wake-up at or after the hint arrives
    /// before the deadline (with 5 s of network each way).
    #[test]
    fn hints_survive_a_wake_up_a_minute() {
        let rng = SplitMix::new(5);
        for live in (70_000..=300_000).step_by(500) {
            for _ in 0..200 {
                let hint = jittered_retry_ms(live, rng.next_u64());
                // The last heartbeat ran at a wake-up (t = 0); its answer
                // came back after 5 s; the timer fires at the first
                // wake-up at or after 5 s + hint.
                let fires = (5_000 + hint).div_ceil(THROTTLED_WAKE_UP_MS) * THROTTLED_WAKE_UP_MS;
                assert!(
                    fires + 5_000 <= live as u64,
                    "deadline {live}: hint {hint} fires at {fires}"
                );
                assert!(hint >= live as u64 * 2 / 5 && hint < live as u64 * 3 / 5);
            }
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut v, 42);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn wait_estimate() {
        assert_eq!(estimated_wait_ms(100, 50.0, 0), Some(2_000));
        assert_eq!(estimated_wait_ms(100, 0.0, 0), None);
        assert_eq!(estimated_wait_ms(0, 1.0, 3_000), Some(3_000));
    }
}
