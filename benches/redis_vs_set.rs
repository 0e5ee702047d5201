//! The Redis replay store's check-and-record throughput beside
//! `redis-benchmark -t set` on the same Redis, in the same run.
//!
//! Run (Redis on 127.0.0.1:6379, `redis-benchmark` on the PATH):
//! `cargo bench --features redis --bench redis_vs_set`
//!
//! Both sides use the same number of concurrent clients
//! (`QG_REDIS_CLIENTS`, default 16) and the same request count (100 000 per
//! run, and at most 10 s of our side): `redis-benchmark` runs before and
//! after the store's run and the two SET figures are averaged, so a drift of
//! the machine in between shows up as a spread rather than a bias. Each
//! store check is one `EVALSHA` round trip (the atomic check-and-record
//! script) over the store's multiplexed connection; a SET is the cheapest
//! write Redis has, so the ratio is the price of the script and the client.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queuegate::replay::{RedisReplayStore, ReplayCheck, ReplayStore, ReplayVerdict};
use queuegate::ticket::ScopeId;
use queuegate::{TicketId, TicketKind};

const REQUESTS: u64 = 100_000;
const MAX_SECONDS: u64 = 10;

/// Runs `redis-benchmark -t set` and returns its requests per second.
fn redis_benchmark_set(clients: u64) -> Result<f64, String> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", "6379", "-t", "set", "-q"])
        .args(["-n", &REQUESTS.to_string(), "-c", &clients.to_string()])
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    if !out.status.success() {
        return Err(format!("redis-benchmark failed: {}", out.status));
    }
    // `-q` prints progress lines ended by '\r', then e.g.
    // "SET: 81566.07 requests per second, p50=0.175 msec".
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .rsplit(['\r', '\n'])
        .find(|l| l.starts_with("SET: ") && l.contains("requests per second"))
        .ok_or_else(|| format!("unexpected redis-benchmark output: {text:?}"))?;
    line["SET: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unexpected redis-benchmark line: {line:?}"))
}

/// A ticket's check, minted under the store's epoch.
fn check(store: &RedisReplayStore, n: u64, now_ms: i64) -> ReplayCheck {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..].copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    ReplayCheck {
        scope: ScopeId::from_name("bench"),
        ticket_id: TicketId(id),
        sequence: 0,
        kind: TicketKind::Admitted,
        same_client: true,
        live_until_ms: now_ms + 60_000,
        expires_at_ms: now_ms + 60_000,
        now_ms,
        grace_ms: 5_000,
        hold: None,
        epoch: store.epoch(),
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The store's checks per second with `clients` concurrent tasks.
fn store_checks(clients: u64) -> Result<f64, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let prefix = format!(
            "qg-bench-{:08x}",
            u32::from_le_bytes(TicketId::random().0[..4].try_into().expect("4 bytes"))
        );
        let store = Arc::new(
            RedisReplayStore::builder("redis://127.0.0.1:6379/")
                .prefix(&prefix)
                .connect()
                .await
                .map_err(|e| format!("no Redis on 127.0.0.1:6379: {e}"))?,
        );
        // Warm up: the script is loaded and the connection is busy.
        for n in 0..1_000 {
            store
                .check(&check(&store, u64::MAX - n, wall_ms()))
                .await
                .ok();
        }
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(MAX_SECONDS);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (store, next) = (store.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= REQUESTS || Instant::now() > deadline {
                        return done;
                    }
                    let verdict = store.check(&check(&store, n, wall_ms())).await;
                    assert_eq!(verdict, Ok(ReplayVerdict::Fresh), "check {n}");
                    done += 1;
                }
            }));
        }
        let mut done = 0;
        for t in tasks {
            done += t.await.expect("client task");
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        store.clear().await.map_err(|e| format!("cleanup: {e}"))?;
        Ok(rate)
    })
}

fn main() {
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"redis_vs_set".contains(&filter) {
            return;
        }
    }
    let clients: u64 = std::env::var("QG_REDIS_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16_u64)
        .clamp(1, 256);
    let run = || -> Result<(f64, f64, f64), String> {
        let before = redis_benchmark_set(clients)?;
        let ours = store_checks(clients)?;
        let after = redis_benchmark_set(clients)?;
        Ok((before, ours, after))
    };
    match run() {
        Err(e) => println!("redis_vs_set: SKIPPED, {e}"),
        Ok((before, ours, after)) => {
            let set = (before + after) / 2.0;
            println!("redis_vs_set: {clients} concurrent clients, {REQUESTS} requests per run");
            println!(
                "  redis-benchmark -t set  {set:>10.0} requests/s (before {before:.0}, after {after:.0})"
            );
            println!("  RedisReplayStore::check {ours:>10.0} checks/s");
            println!("  store ÷ SET: {:.3} (target ≥ 0.8)", ours / set);
        }
    }
}
