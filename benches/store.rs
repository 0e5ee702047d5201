//! Replay-store benchmarks.
//!
//! - `memory/check_and_record/{1,2}_threads`: a fresh chain's session check
//!   (lookup, insert, expiry upkeep) per iteration, against a store holding a
//!   steady ~600 000 live records; the 2-thread figure is total throughput.
//! - Resident bytes per live record at 1M and 10M records (printed before
//!   the timed benches): RSS from `/proc/self/statm` before and after
//!   filling a fresh store, divided by the number of records.
//! - `redis/check_and_record` (feature `redis`, only when Redis answers on
//!   127.0.0.1:6379): round trips per second over loopback, one client task
//!   and 16 concurrent ones, to read beside
//!   `redis-benchmark -t set -n 100000 -q`.
//!
//! Run: `cargo bench --bench store` (add `--features redis` for Redis).

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use queuegate::replay::{ReplayCheck, ReplayStore, ReplayVerdict};
use queuegate::ticket::ScopeId;
use queuegate::{MemoryReplayStore, TicketId, TicketKind};

const T0: i64 = 1_800_000_000_000;

/// Distinct ticket ids without a syscall per id (splitmix64).
fn id(n: u64) -> TicketId {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let a = z ^ (z >> 31);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&n.to_le_bytes());
    TicketId(out)
}

/// Hashed once: `ScopeId::from_name` is a SHA-256, not part of a check.
static SCOPE: std::sync::LazyLock<ScopeId> =
    std::sync::LazyLock::new(|| ScopeId::from_name("bench"));

fn check(n: u64, now_ms: i64, expires_at_ms: i64) -> ReplayCheck {
    ReplayCheck {
        scope: *SCOPE,
        ticket_id: id(n),
        sequence: 0,
        kind: TicketKind::Admitted,
        same_client: true,
        live_until_ms: expires_at_ms,
        expires_at_ms,
        now_ms,
        grace_ms: 5_000,
        hold: None,
        epoch: 0,
    }
}

thread_local! {
    static WAKER: std::task::Waker = noop_waker();
}

/// One check on the memory store (its future is ready at once).
fn memory_check(store: &MemoryReplayStore, c: &ReplayCheck) -> bool {
    let fut = store.check(c);
    // A `Ready` future: poll it once without a runtime.
    let mut fut = std::pin::pin!(fut);
    let waker = WAKER.with(|w| w.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r == Ok(ReplayVerdict::Fresh),
        std::task::Poll::Pending => unreachable!("the memory store's futures are ready"),
    }
}

fn noop_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    std::task::Waker::from(Arc::new(Noop))
}

/// Check number `n` in a steady stream: the clock moves 1 ms per 10 checks,
/// each record lives 60 s, so ~600 000 records are live and expiry keeps
/// pace with inserts.
fn stream_check(n: u64) -> ReplayCheck {
    let now = T0 + (n / 10) as i64;
    check(n, now, now + 60_000)
}

fn memory_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/check_and_record");
    group.throughput(Throughput::Elements(1));
    let store = Arc::new(
        MemoryReplayStore::builder()
            .tolerance(Duration::ZERO)
            .admitted_capacity(4_000_000)
            .build()
            .expect("valid settings"),
    );
    let next = Arc::new(AtomicU64::new(0));
    // Warm up to the steady state.
    for _ in 0..700_000 {
        let n = next.fetch_add(1, Ordering::Relaxed);
        assert!(memory_check(&store, &stream_check(n)));
    }
    for threads in [1u64, 2] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                // `iters` checks in total, split over the threads; the
                // stream's order is kept within each thread only, so the
                // clock is per check (monotone enough: 1 ms per 10).
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        let store = &store;
                        let next = &next;
                        s.spawn(move || {
                            for _ in 0..iters / threads {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                black_box(memory_check(store, &stream_check(n)));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

/// Fills a fresh store with `n` live records (expiries spread over an hour,
/// as joins would be) and prints resident bytes per record.
fn memory_per_record(n: u64) {
    let before = resident_bytes();
    let store = MemoryReplayStore::builder()
        .admitted_capacity(n as usize)
        .build()
        .expect("valid settings");
    let start = Instant::now();
    for i in 0..n {
        let expires = T0 + 600_000 + (i % 3_600) as i64 * 1_000;
        assert!(memory_check(&store, &check(i, T0, expires)));
    }
    let filled = start.elapsed();
    let after = resident_bytes();
    assert_eq!(store.len(), n as usize);
    println!(
        "memory/resident_bytes_per_record/{}M: {:.1} bytes (RSS +{} MB; heap held {:.1} bytes/record; filled at {:.2} M inserts/s)",
        n / 1_000_000,
        (after - before) as f64 / n as f64,
        (after - before) >> 20,
        store.heap_bytes() as f64 / n as f64,
        n as f64 / filled.as_secs_f64() / 1e6,
    );
    drop(store);
}

#[cfg(feature = "redis")]
fn redis_throughput(c: &mut Criterion) {
    use queuegate::replay::RedisReplayStore;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("qg-bench-{:08x}", rand_u32());
    let store = match rt.block_on(
        RedisReplayStore::builder("redis://127.0.0.1:6379/")
            .prefix(&prefix)
            .connect(),
    ) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            println!("redis/check_and_record: skipped, no Redis on 127.0.0.1:6379 ({e})");
            return;
        }
    };
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("redis/check_and_record");
    group.throughput(Throughput::Elements(1));
    for tasks in [1u64, 16] {
        group.bench_function(format!("{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                let store = store.clone();
                let next = next.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    let mut handles = Vec::new();
                    for _ in 0..tasks {
                        let store = store.clone();
                        let next = next.clone();
                        handles.push(tokio::spawn(async move {
                            for _ in 0..(iters / tasks).max(1) {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                let now = wall_ms();
                                let c = ReplayCheck {
                                    // The ticket's epoch: the store's one.
                                    epoch: store.epoch(),
                                    ..check(n, now, now + 60_000)
                                };
                                let r = store.check(&c).await;
                                assert_eq!(r, Ok(ReplayVerdict::Fresh));
                            }
                        }));
                    }
                    for h in handles {
                        h.await.expect("task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    rt.block_on(store.clear()).expect("cleanup");
}

#[cfg(feature = "redis")]
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

#[cfg(feature = "redis")]
fn rand_u32() -> u32 {
    u32::from_le_bytes(TicketId::random().0[..4].try_into().expect("4 bytes"))
}

#[cfg(not(feature = "redis"))]
fn redis_throughput(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = memory_throughput, redis_throughput
}

fn main() {
    // Each memory figure is taken in a child process of its own, so that
    // no allocator state from another fill or from criterion blurs the RSS
    // difference.
    if let Ok(n) = std::env::var("QUEUEGATE_BENCH_FILL") {
        memory_per_record(n.parse().expect("a record count"));
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().map_or(true, |f| f.contains("resident")) {
        for n in [1_000_000u64, 10_000_000] {
            let out = std::process::Command::new(std::env::current_exe().expect("own path"))
                .env("QUEUEGATE_BENCH_FILL", n.to_string())
                .output()
                .expect("run the fill");
            assert!(out.status.success(), "fill of {n} failed");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
