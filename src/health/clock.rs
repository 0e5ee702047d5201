//! [`ClockCheck`]: is this instance's clock the wrong one?
//!
//! Each check compares the instance's clock with two references:
//!
//! - **Redis `TIME`**, corrected for the round trip: the instance reads its
//!   clock before (`t0`) and after (`t1`) the command and compares the
//!   midpoint with Redis's answer, so the error is at most half the round
//!   trip;
//! - **the clients' median**: the middle of the authenticated client-clock
//!   offsets the instance measured since a few checks ago (from
//!   [`Metrics`]). One phone's clock proves nothing, but the median of many
//!   sits near true time; when it sits far off, the server's clock is the
//!   one that moved.
//!
//! The instance is **suspect** only when it is the outlier: it disagrees
//! with both references while they agree with each other. It stays
//! suspect until a reference agrees with it again (silence, a median that
//! fades out of a quiet room's window or a Redis that does not answer,
//! clears nothing). When the
//! references disagree with each other (Redis's clock is off, or the
//! clients' median was moved), or only one is available, the check cannot
//! tell who is wrong: it reports, and the instance stays ready. One wrong
//! clock therefore never takes every instance out: a skewed Redis makes no
//! instance unready.
//!
//! What it does not catch: a fleet whose instances and Redis share one
//! wrong time source while clients are too few to form a median; an error
//! smaller than the tolerance (30 s by default; the offset histogram's
//! buckets are ±1, ±5, ±30 s wide near 0, so a finer median is not
//! measured).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::duration_to_ms;
use crate::metrics::{MetricsSnapshot, OFFSET_BUCKETS_MS};
#[cfg(doc)]
use crate::Metrics;

/// Buckets of the offset histogram: the finite ones and one above.
const BUCKETS: usize = OFFSET_BUCKETS_MS.len() + 1;

/// One reading of Redis `TIME`: this instance's clock minus Redis's, at the
/// midpoint of the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisReading {
    /// Instance clock minus Redis clock (ms): positive = this instance is
    /// ahead of Redis.
    pub offset_ms: i64,
    /// The round trip (ms); the offset is known to within half of it.
    pub round_trip_ms: i64,
}

impl RedisReading {
    /// The reading of a `TIME` reply `redis_ms`, sent at `sent_ms` and
    /// answered at `received_ms` on this instance's clock.
    pub fn from_times(sent_ms: i64, redis_ms: i64, received_ms: i64) -> Self {
        let round_trip_ms = received_ms.saturating_sub(sent_ms).max(0);
        let midpoint = sent_ms.saturating_add(round_trip_ms / 2);
        Self {
            offset_ms: midpoint.saturating_sub(redis_ms),
            round_trip_ms,
        }
    }
}

/// What one check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockVerdict {
    /// Every available reference agrees with this instance's clock (or
    /// there is no reference to compare with).
    Consistent,
    /// This instance's clock is the outlier: both references disagree with
    /// it and agree with each other. The instance should be taken out.
    Suspect,
    /// A disagreement the check cannot pin on this instance: the references
    /// disagree with each other, or the only available one disagrees with
    /// the instance. Reported; the instance stays ready.
    ReferencesDisagree,
}

/// The result of one check, with the estimates it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReport {
    /// The verdict.
    pub verdict: ClockVerdict,
    /// Instance clock minus Redis's (ms), if Redis answered.
    pub redis_offset_ms: Option<i64>,
    /// Instance clock minus the clients' median (ms; the negated median
    /// client offset), if enough offsets were measured.
    pub clients_offset_ms: Option<i64>,
    /// How many client offsets the median was taken over.
    pub client_samples: u64,
}

/// The server-clock check. Cheap to share (`Arc`); the host calls
/// [`check`](Self::check) every few seconds (for example from a
/// `tokio::time::interval` task) with a fresh [`Metrics::snapshot`] and,
/// where Redis is used, a [`RedisReading`] (see `RedisTime`, feature
/// `redis`).
#[derive(Debug)]
pub struct ClockCheck {
    tolerance_ms: i64,
    min_client_samples: u64,
    window: usize,
    history: Mutex<VecDeque<[u64; BUCKETS]>>,
    suspect: AtomicBool,
    disagree: AtomicBool,
    last: Mutex<Option<ClockReport>>,
}

impl Default for ClockCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockCheck {
    /// A check with a 30 s tolerance, a client median over the offsets
    /// measured in the last 6 checks, needing at least 50 of them.
    pub fn new() -> Self {
        Self {
            tolerance_ms: 30_000,
            min_client_samples: 50,
            window: 6,
            history: Mutex::new(VecDeque::new()),
            suspect: AtomicBool::new(false),
            disagree: AtomicBool::new(false),
            last: Mutex::new(None),
        }
    }

    /// How far two clocks may differ and still agree (default 30 s). Keep
    /// it at or above 30 s unless the offset histogram gets finer buckets:
    /// the clients' median is interpolated within buckets that wide.
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance_ms = duration_to_ms(tolerance).max(1);
        self
    }

    /// The fewest client offsets that make a median (default 50); fewer
    /// and the clients are no reference (a handful of clients, or bots,
    /// must not decide).
    #[must_use]
    pub fn min_client_samples(mut self, n: u64) -> Self {
        self.min_client_samples = n.max(1);
        self
    }

    /// Over how many checks the clients' offsets are pooled (default 6).
    #[must_use]
    pub fn window(mut self, checks: usize) -> Self {
        self.window = checks.max(1);
        self
    }

    /// Runs one check: takes the clients' median from `metrics` (the
    /// offsets measured since `window` checks ago) and compares it and
    /// `redis` with this instance's clock. Updates
    /// [`is_suspect`](Self::is_suspect), the gauges and
    /// [`last_report`](Self::last_report).
    ///
    /// Suspicion ends on evidence, not on its absence: once this instance
    /// was found the outlier, it stays suspect until a reference agrees
    /// with it again. In a quiet room the clients' median fades out of the
    /// window (each chain counts once until its slot is reused, see
    /// [`Metrics::observe_chain_offset_ms`]), a Redis read can time out, and
    /// an unready instance gets no clients at all: none of these shows its
    /// clock was fixed, and letting them clear it would make it flap back
    /// into service with the same wrong clock.
    pub fn check(&self, metrics: &MetricsSnapshot, redis: Option<RedisReading>) -> ClockReport {
        let (median, samples) = self.clients_median(metrics);
        let bucket = median.map(|m| m.bucket);
        let mut verdict = self.judge(redis, bucket);
        if verdict != ClockVerdict::Suspect
            && self.is_suspect()
            && !self.any_reference_agrees(redis, bucket)
        {
            verdict = ClockVerdict::Suspect;
        }
        let report = ClockReport {
            verdict,
            redis_offset_ms: redis.map(|r| r.offset_ms),
            clients_offset_ms: median.map(|m| m.estimate.saturating_neg()),
            client_samples: samples,
        };
        self.suspect
            .store(report.verdict == ClockVerdict::Suspect, Ordering::Relaxed);
        self.disagree.store(
            report.verdict == ClockVerdict::ReferencesDisagree,
            Ordering::Relaxed,
        );
        *lock(&self.last) = Some(report);
        report
    }

    /// The verdict from Redis's reading and the histogram bucket `(lo, hi]`
    /// that holds the clients' median offset. The median is known only to
    /// within its bucket, so the clients disagree with the instance only
    /// when the whole bucket lies beyond the tolerance, and the references
    /// agree when Redis's offset fits the bucket widened by the tolerance.
    fn judge(&self, redis: Option<RedisReading>, bucket: Option<(i64, i64)>) -> ClockVerdict {
        let t = self.tolerance_ms;
        // Redis's estimate is uncertain by half the round trip.
        let redis = redis.map(|r| (r.offset_ms, t.saturating_add(r.round_trip_ms / 2)));
        let off_redis = redis.map(|(o, tol)| o.unsigned_abs() > tol.unsigned_abs());
        // Instance clock minus the clients' median lies in (-hi, -lo].
        let clients = bucket.map(|(lo, hi)| (hi.saturating_neg(), lo.saturating_neg()));
        let off_clients = clients.map(|(a, b)| a >= t || b < t.saturating_neg());
        match (redis, clients) {
            (Some((o, tol)), Some((a, b)))
                if off_redis == Some(true) && off_clients == Some(true) =>
            {
                let agree = o >= a.saturating_sub(tol) && o <= b.saturating_add(tol);
                if agree {
                    ClockVerdict::Suspect
                } else {
                    ClockVerdict::ReferencesDisagree
                }
            }
            _ if off_redis == Some(true) || off_clients == Some(true) => {
                ClockVerdict::ReferencesDisagree
            }
            _ => ClockVerdict::Consistent,
        }
    }

    /// Whether Redis's reading or the clients' median (when available)
    /// agrees with this instance's clock.
    fn any_reference_agrees(
        &self,
        redis: Option<RedisReading>,
        bucket: Option<(i64, i64)>,
    ) -> bool {
        let t = self.tolerance_ms;
        let redis_agrees = redis.is_some_and(|r| {
            r.offset_ms.unsigned_abs() <= t.saturating_add(r.round_trip_ms / 2).unsigned_abs()
        });
        let clients_agree = bucket.is_some_and(|(lo, hi)| {
            let (a, b) = (hi.saturating_neg(), lo.saturating_neg());
            !(a >= t || b < t.saturating_neg())
        });
        redis_agrees || clients_agree
    }

    /// The median client offset over the pooled window (interpolated, and
    /// the bucket holding it), and the number of offsets it is taken over.
    fn clients_median(&self, metrics: &MetricsSnapshot) -> (Option<Median>, u64) {
        let now = metrics.offset_buckets;
        let mut history = lock(&self.history);
        let oldest = history.front().copied().unwrap_or([0; BUCKETS]);
        history.push_back(now);
        while history.len() > self.window {
            history.pop_front();
        }
        drop(history);
        let mut counts = [0u64; BUCKETS];
        for (k, c) in counts.iter_mut().enumerate() {
            // A reset counter (a new Metrics) counts from zero.
            *c = now[k].checked_sub(oldest[k]).unwrap_or(now[k]);
        }
        let total: u64 = counts.iter().sum();
        if total < self.min_client_samples {
            return (None, total);
        }
        (Some(median_of_buckets(&counts, total)), total)
    }

    /// Whether this instance's clock is the outlier (the last check).
    pub fn is_suspect(&self) -> bool {
        self.suspect.load(Ordering::Relaxed)
    }

    /// Whether the last check found a disagreement it could not pin on
    /// this instance.
    pub fn references_disagree(&self) -> bool {
        self.disagree.load(Ordering::Relaxed)
    }

    /// The last check's report, if a check has run.
    pub fn last_report(&self) -> Option<ClockReport> {
        *lock(&self.last)
    }

    /// The check's gauges in the Prometheus text format, to append to the
    /// host's `/metrics`: `queuegate_clock_suspect` (1: this instance's
    /// clock is the outlier), `queuegate_clock_references_disagree` (1:
    /// reported, stays ready) and `queuegate_clock_offset_ms` by reference
    /// (instance clock minus the reference; absent while unknown).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(640);
        let report = self.last_report();
        let gauge = |out: &mut String, name: &str, help: &str, v: bool| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", u8::from(v));
        };
        gauge(
            &mut out,
            "queuegate_clock_suspect",
            "1 when this instance's clock disagrees with Redis TIME and the clients' median while they agree (it reports unready).",
            self.is_suspect(),
        );
        gauge(
            &mut out,
            "queuegate_clock_references_disagree",
            "1 when a clock reference disagrees and the check cannot pin it on this instance (it stays ready).",
            self.references_disagree(),
        );
        let name = "queuegate_clock_offset_ms";
        let _ = writeln!(
            out,
            "# HELP {name} This instance's clock minus a reference's (ms), by reference."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        if let Some(r) = report {
            for (reference, v) in [
                ("redis", r.redis_offset_ms),
                ("clients", r.clients_offset_ms),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(out, "{name}{{reference=\"{reference}\"}} {v}");
                }
            }
        }
        out
    }
}

/// The median of a signed-bucket histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Median {
    /// Interpolated within its bucket as Prometheus's `histogram_quantile`
    /// does; the open-ended buckets at either end give their finite bound.
    estimate: i64,
    /// The bucket `(lo, hi]` that holds it (`i64::MIN`/`i64::MAX` for the
    /// open ends).
    bucket: (i64, i64),
}

fn median_of_buckets(counts: &[u64; BUCKETS], total: u64) -> Median {
    let rank = total as f64 / 2.0;
    let mut below = 0u64;
    let last = BUCKETS - 1;
    for (k, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let lo = if k == 0 {
                i64::MIN
            } else {
                OFFSET_BUCKETS_MS[k - 1]
            };
            let hi = if k == last {
                i64::MAX
            } else {
                OFFSET_BUCKETS_MS[k]
            };
            let estimate = if k == 0 {
                OFFSET_BUCKETS_MS[0]
            } else if k == last {
                OFFSET_BUCKETS_MS[last - 1]
            } else {
                let within = (rank - below as f64) / c as f64;
                (lo as f64 + (hi - lo) as f64 * within).round() as i64
            };
            return Median {
                estimate,
                bucket: (lo, hi),
            };
        }
        below += c;
    }
    Median {
        estimate: 0,
        bucket: (0, 0),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "redis")]
mod redis_time {
    use std::fmt;
    use std::time::Duration;

    use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

    use super::RedisReading;
    use crate::clock::Clock;
    use crate::error::StoreError;

    /// Reads Redis `TIME` for the [`ClockCheck`](super::ClockCheck), on its
    /// own reconnecting connection. `Debug` does not print the URL.
    #[derive(Clone)]
    pub struct RedisTime {
        conn: ConnectionManager,
        timeout: Duration,
    }

    impl fmt::Debug for RedisTime {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisTime").finish_non_exhaustive()
        }
    }

    fn backend(e: ::redis::RedisError) -> StoreError {
        // The kind only: a message could quote the URL.
        StoreError::Backend(format!("redis {:?} error", e.kind()))
    }

    impl RedisTime {
        /// Connects to the Redis at `url`; each reading times out after
        /// 500 ms (a slow answer says little about the time).
        pub async fn connect(url: &str) -> Result<Self, StoreError> {
            let client = ::redis::Client::open(url).map_err(backend)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_millis(500));
            let conn = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(backend)?;
            Ok(Self {
                conn,
                timeout: Duration::from_millis(500),
            })
        }

        /// One `TIME` round trip, read against `clock` (use the instance's
        /// raw clock, not a monotone one: a clock stepped back must show).
        pub async fn read(&self, clock: &impl Clock) -> Result<RedisReading, StoreError> {
            let mut conn = self.conn.clone();
            let sent = clock.now_ms();
            let reply: (String, String) =
                tokio::time::timeout(self.timeout, ::redis::cmd("TIME").query_async(&mut conn))
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(backend)?;
            let received = clock.now_ms();
            let secs: i64 = reply.0.parse().map_err(|_| bad_reply())?;
            let micros: i64 = reply.1.parse().map_err(|_| bad_reply())?;
            let redis_ms = secs.saturating_mul(1_000).saturating_add(micros / 1_000);
            Ok(RedisReading::from_times(sent, redis_ms, received))
        }
    }

    fn bad_reply() -> StoreError {
        StoreError::Backend("redis TIME reply is not two integers".into())
    }
}

#[cfg(feature = "redis")]
pub use redis_time::RedisTime;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// Metrics in which `n` clients measured offset `offset_ms`.
    fn clients(metrics: &Metrics, n: u64, offset_ms: i64) -> MetricsSnapshot {
        for _ in 0..n {
            metrics.observe_client_offset_ms(offset_ms);
        }
        metrics.snapshot()
    }

    fn redis(offset_ms: i64) -> Option<RedisReading> {
        // Sent at 1000, answered at 1040 on the instance's clock; Redis
        // read the time at the midpoint minus the offset.
        Some(RedisReading::from_times(1_000, 1_020 - offset_ms, 1_040))
    }

    #[test]
    fn round_trip_is_corrected_at_the_midpoint() {
        let r = RedisReading::from_times(10_000, 10_050, 10_100);
        assert_eq!(
            r,
            RedisReading {
                offset_ms: 0,
                round_trip_ms: 100
            }
        );
        let r = RedisReading::from_times(10_000, 9_000, 10_100);
        assert_eq!(r.offset_ms, 1_050);
        // A clock stepped back between send and receive: no negative trip.
        assert_eq!(
            RedisReading::from_times(10_000, 10_000, 9_000).round_trip_ms,
            0
        );
    }

    #[test]
    fn all_agree_is_consistent() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        // Honest clients: slightly behind (network delay), within 1 s.
        let r = check.check(&clients(&m, 200, -400), redis(150));
        assert_eq!(r.verdict, ClockVerdict::Consistent);
        assert!(!check.is_suspect() && !check.references_disagree());
        assert_eq!(r.client_samples, 200);
        assert!(r.clients_offset_ms.unwrap().abs() <= 1_000);
    }

    /// This instance's clock is 2 minutes fast: Redis and the clients both
    /// see it, and they agree with each other.
    #[test]
    fn an_instance_clock_far_off_is_suspect() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 200, -120_000), redis(120_000));
        assert_eq!(r.verdict, ClockVerdict::Suspect);
        assert!(check.is_suspect());
        let text = check.render_prometheus();
        assert!(text.contains("queuegate_clock_suspect 1\n"), "{text}");
        assert!(text.contains("queuegate_clock_references_disagree 0\n"));
        assert!(text.contains("queuegate_clock_offset_ms{reference=\"redis\"} 120000\n"));
        assert!(text.contains("queuegate_clock_offset_ms{reference=\"clients\"} 180000\n"));
        // Fixed: the next check clears it.
        let later = clients(&m, 2_000, 200);
        assert_eq!(
            check.check(&later, redis(0)).verdict,
            ClockVerdict::Consistent
        );
        assert!(!check.is_suspect());
        assert!(check
            .render_prometheus()
            .contains("queuegate_clock_suspect 0\n"));
    }

    /// Redis's clock is 5 minutes off; the clients agree with the instance.
    /// No instance may go unready over it: reported only.
    #[test]
    fn a_skewed_redis_is_reported_not_suspect() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 200, 300), redis(-300_000));
        assert_eq!(r.verdict, ClockVerdict::ReferencesDisagree);
        assert!(!check.is_suspect());
        assert!(check
            .render_prometheus()
            .contains("queuegate_clock_references_disagree 1\n"));
    }

    /// Bots move the clients' median; Redis agrees with the instance.
    #[test]
    fn a_moved_client_median_is_reported_not_suspect() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 200, 600_000), redis(0));
        assert_eq!(r.verdict, ClockVerdict::ReferencesDisagree);
        assert!(!check.is_suspect());
    }

    /// Both references disagree with the instance and with each other
    /// (Redis says it is 2 min fast, clients say 10 min slow): nobody can
    /// tell, so the instance stays ready.
    #[test]
    fn references_that_disagree_with_each_other_keep_the_instance_ready() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 200, 600_000), redis(120_000));
        assert_eq!(r.verdict, ClockVerdict::ReferencesDisagree);
        assert!(!check.is_suspect());
    }

    /// With one reference, the instance is never the proven outlier.
    #[test]
    fn one_reference_alone_never_makes_a_suspect() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 200, -120_000), None);
        assert_eq!(r.verdict, ClockVerdict::ReferencesDisagree);
        let r = check.check(&Metrics::new().snapshot(), redis(120_000));
        assert_eq!(r.verdict, ClockVerdict::ReferencesDisagree);
        assert!(!check.is_suspect());
        let r = check.check(&Metrics::new().snapshot(), None);
        assert_eq!(r.verdict, ClockVerdict::Consistent);
    }

    /// A handful of offsets is no reference: a few bots cannot decide.
    #[test]
    fn too_few_client_offsets_are_no_reference() {
        let check = ClockCheck::new();
        let m = Metrics::new();
        let r = check.check(&clients(&m, 49, -120_000), redis(120_000));
        assert_eq!(r.clients_offset_ms, None);
        assert_eq!(r.client_samples, 49);
        assert_ne!(r.verdict, ClockVerdict::Suspect);
    }

    /// The median pools the last `window` checks only: an old fault ages
    /// out, a new one shows within a check.
    #[test]
    fn the_median_covers_recent_checks_only() {
        let check = ClockCheck::new().window(2);
        let m = Metrics::new();
        assert_eq!(
            check
                .check(&clients(&m, 500, -120_000), redis(120_000))
                .verdict,
            ClockVerdict::Suspect
        );
        // The clock is fixed; new offsets are honest.
        check.check(&clients(&m, 500, 0), redis(0));
        let r = check.check(&clients(&m, 500, 0), redis(0));
        assert_eq!(r.client_samples, 1_000);
        assert_eq!(r.verdict, ClockVerdict::Consistent);
        assert!(r.clients_offset_ms.unwrap().abs() <= 1_000);
    }

    /// A suspect clock stays suspect while nothing agrees with it: the
    /// clients' median fading out of a quiet window, or Redis not
    /// answering, is no evidence that the clock was fixed. A reference
    /// agreeing again clears it.
    #[test]
    fn suspicion_ends_on_evidence_not_on_silence() {
        let check = ClockCheck::new().window(2);
        let m = Metrics::new();
        let r = check.check(&clients(&m, 100, -3_600_000), redis(3_600_000));
        assert_eq!(r.verdict, ClockVerdict::Suspect);
        // The clients went quiet: after the window, no median.
        for _ in 0..3 {
            let r = check.check(&m.snapshot(), redis(3_600_000));
            assert_eq!(r.verdict, ClockVerdict::Suspect, "{r:?}");
        }
        assert_eq!(check.last_report().unwrap().clients_offset_ms, None);
        // Redis does not answer either.
        assert_eq!(
            check.check(&m.snapshot(), None).verdict,
            ClockVerdict::Suspect
        );
        assert!(check.is_suspect());
        // The clock is fixed: Redis agrees again.
        let r = check.check(&m.snapshot(), redis(100));
        assert_eq!(r.verdict, ClockVerdict::Consistent);
        assert!(!check.is_suspect());
        // A clock never found suspect is not made so by silence.
        let fresh = ClockCheck::new();
        assert_eq!(
            fresh
                .check(&Metrics::new().snapshot(), redis(3_600_000))
                .verdict,
            ClockVerdict::ReferencesDisagree
        );
    }

    #[test]
    fn tolerance_is_a_boundary() {
        let check = ClockCheck::new().tolerance(Duration::from_secs(60));
        let m = Metrics::new();
        // 45 s off: within a 60 s tolerance, beyond the default 30 s.
        let snap = clients(&m, 200, -45_000);
        let r = check.check(&snap, redis(45_000));
        assert_eq!(r.verdict, ClockVerdict::Consistent);
        let strict = ClockCheck::new();
        assert_eq!(
            strict.check(&snap, redis(45_000)).verdict,
            ClockVerdict::Suspect
        );
    }

    #[test]
    fn median_interpolates_like_histogram_quantile() {
        let mut counts = [0u64; BUCKETS];
        counts[2] = 10; // (-300 s, -60 s]
        let m = median_of_buckets(&counts, 10);
        assert_eq!(m.estimate, -180_000);
        assert_eq!(m.bucket, (-300_000, -60_000));
        let mut counts = [0u64; BUCKETS];
        counts[BUCKETS - 1] = 3; // above 1 h
        let m = median_of_buckets(&counts, 3);
        assert_eq!(m.estimate, 3_600_000);
        assert_eq!(m.bucket, (3_600_000, i64::MAX));
        let mut counts = [0u64; BUCKETS];
        counts[0] = 3; // below -1 h
        assert_eq!(median_of_buckets(&counts, 3).estimate, -3_600_000);
        // 3 in (-1 s, 1 s], 1 in (1 s, 5 s]: rank 2 of 4 lies in the first.
        let mut counts = [0u64; BUCKETS];
        counts[6] = 3;
        counts[7] = 1;
        let m = median_of_buckets(&counts, 4);
        assert_eq!(m.bucket, (-1_000, 1_000));
        assert_eq!(m.estimate, 333);
    }
}

#[cfg(all(test, feature = "redis"))]
mod redis_tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};

    /// A real `TIME` round trip: Redis and this machine share a clock, so
    /// the corrected offset is within the round trip plus a millisecond of
    /// Redis's truncation to ms.
    #[tokio::test]
    #[ignore = "needs Redis"]
    async fn redis_time_reads_the_shared_clock() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let time = RedisTime::connect(&url).await.expect("Redis at REDIS_URL");
        let r = time.read(&SystemClock).await.unwrap();
        assert!(r.round_trip_ms < 1_000, "{r:?}");
        assert!(r.offset_ms.abs() <= r.round_trip_ms / 2 + 2, "{r:?}");
        // Against a clock 5 minutes fast, the same round trip reads +5 min.
        let fast = crate::clock::ManualClock::new(SystemClock.now_ms() + 300_000);
        let r = time.read(&fast).await.unwrap();
        assert!((r.offset_ms - 300_000).abs() < 2_000, "{r:?}");
    }
}
