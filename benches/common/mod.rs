//! Shared by the benches: a thread-CPU-time measurement for criterion, and a
//! poll-once helper for futures that are always ready.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time of the calling thread (user + system), from the kernel's
/// per-thread accounting.
pub fn thread_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread, user + system).
pub fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are constants
    // that Linux always provides.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measurement in CPU time of the benchmarking thread, not wall
/// time: on a machine shared with other work, time spent descheduled is not
/// counted, so figures from a busy machine stay comparable. (Cache and
/// memory-bandwidth contention from neighbours still show.)
pub struct ThreadCpuTime;

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

/// A waker for futures that are always ready (the in-memory store's).
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A waker that does nothing.
pub fn noop_waker() -> Waker {
    Waker::from(Arc::new(Noop))
}

/// Polls a future once and returns its output. The in-memory store's futures
/// are `Ready`, so the verifier's and the issuer's futures over it complete
/// at the first poll; anything else panics.
pub fn now_or_never<F: Future>(waker: &Waker, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("expected a future that is ready at once"),
    }
}

/// The 10th, 50th and 90th percentiles of `v` (nearest rank).
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    assert!(!v.is_empty(), "no figures");
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.1), at(0.5), at(0.9))
}

/// Interleaved rounds: each round runs every variant once, in an order
/// that rotates from round to round, and records its thread CPU time per
/// operation (`run(k)` returns how many operations variant `k` did). The
/// neighbours' load on a shared machine then drifts over every variant
/// alike, and a ratio of two variants taken per round is a same-run,
/// same-moment figure. `prepare(k)` runs untimed just before `run(k, _)`
/// (to build inputs). Returns, per variant, its per-round ns per operation.
pub fn interleaved<P>(
    variants: usize,
    rounds: usize,
    mut prepare: impl FnMut(usize) -> P,
    mut run: impl FnMut(usize, P) -> u64,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(rounds); variants];
    for round in 0..rounds {
        for k in 0..variants {
            let which = (round + k) % variants;
            let input = prepare(which);
            let started = thread_cpu_time();
            let ops = run(which, input);
            let took = thread_cpu_time().saturating_sub(started);
            out[which].push(took.as_nanos() as f64 / ops.max(1) as f64);
        }
    }
    out
}

/// Per-round ratios `a[i] / b[i]` of two variants from [`interleaved`].
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}
