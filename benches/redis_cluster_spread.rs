//! How the room's traffic spreads over the primaries of a Redis Cluster,
//! from each node's `INFO commandstats` (differences before and after, no
//! `RESETSTAT`: the Cluster is shared with other runs).
//!
//! Run (the Cluster of `.ci/redis-cluster start`, 127.0.0.1:7000-7005):
//! `cargo bench --features redis --bench redis_cluster_spread`
//! (`QG_CLUSTER_PEOPLE`, default 3,000). It prints:
//!
//! - per-person traffic: whole heartbeats (the room's beat, the replay
//!   store's advance, the room's record) of every person, counted per
//!   primary: the busiest primary's share (target ≤ 0.45 with 3);
//! - the queue's own slot: the commands one tick (and its snapshot) sends
//!   there, measured on a queue with nobody in it, and the share of the
//!   Cluster's commands that makes at the 2021 scale (6 million waiting,
//!   a heartbeat every 150 s on average: 40,000 heartbeats a second).
//!
//! Its keys live under a fresh prefix and are deleted at the end.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use queuegate::replay::{Advance, AdvanceRequest, RedisReplayStore, ReplayStore};
use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, RedisRoomState, RoomState,
};
use queuegate::ticket::Binding;
use queuegate::{TicketId, TicketKind};
use redis::aio::MultiplexedConnection;

const NODES: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];
const ROUNDS: u32 = 3;
const TICKS: i64 = 50;
/// People served at once.
const CHUNK: usize = 32;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn rule(now_ms: i64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec: 0.0,
        burst: 1.0,
        max_admitted: None,
        opens_at_ms: i64::MIN,
        shuffle_seed: 1,
    }
}

async fn node(port: u16) -> Result<MultiplexedConnection, String> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("no Cluster node on {port}: {e}"))
}

async fn primaries() -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for port in NODES {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node(port).await?)
            .await
            .map_err(|e| e.to_string())?;
        if info.contains("role:master") {
            out.push(port);
        }
    }
    if out.len() != 3 {
        return Err(format!("expected 3 primaries, found {out:?}"));
    }
    Ok(out)
}

/// Calls per command since the node started, from `INFO commandstats`.
async fn calls(port: u16) -> Result<Vec<(String, u64)>, String> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut node(port).await?)
        .await
        .map_err(|e| e.to_string())?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let n = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), n))
        })
        .collect())
}

/// Calls of `names` (all commands but the bench's own `INFO`, `CONFIG`,
/// `CLUSTER`, `SCAN` when empty) between two readings.
fn delta(before: &[(String, u64)], after: &[(String, u64)], names: &[&str]) -> u64 {
    let counted = |n: &str| {
        if names.is_empty() {
            ![
                "info", "config", "cluster", "scan", "unlink", "ping", "client", "hello",
            ]
            .iter()
            .any(|x| n.starts_with(x))
        } else {
            names.contains(&n)
        }
    };
    after
        .iter()
        .filter(|(n, _)| counted(n))
        .map(|(n, a)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |(_, b)| *b);
            a.saturating_sub(b)
        })
        .sum()
}

async fn snapshot(ports: &[u16]) -> Result<Vec<Vec<(String, u64)>>, String> {
    let mut out = Vec::new();
    for &p in ports {
        out.push(calls(p).await?);
    }
    Ok(out)
}

/// A person of random binding and chain id (their slots spread as real
/// people's do).
fn person() -> (Binding, TicketId) {
    (Binding(TicketId::random().0), TicketId::random())
}

async fn run(people: u64) -> Result<(), String> {
    let seeds: Vec<String> = NODES[..3]
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let prefix = format!("qg-bench-spread-{}", TicketId::random());
    let store = RedisReplayStore::cluster_builder(&seeds)
        .prefix(&prefix)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("no Redis Cluster: {e}"))?;
    let room = RedisRoomState::new(&store);
    let primaries = primaries().await?;
    let t0 = wall_ms();

    // The queue's own slot: ticks of an empty queue (one second apart on
    // the operations' clock), each with its snapshot.
    let empty = "spread-empty";
    room.tick_now(empty, &rule(t0))
        .await
        .map_err(|e| e.to_string())?;
    let before = snapshot(&primaries).await?;
    for k in 1..=TICKS {
        room.tick_now(empty, &rule(t0 + 1_000 * k))
            .await
            .map_err(|e| e.to_string())?;
    }
    let after = snapshot(&primaries).await?;
    let per_node: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| delta(b, a, &[]))
        .collect();
    let queue_per_tick = per_node.iter().max().copied().unwrap_or(0) as f64 / TICKS as f64;
    room.clear(empty).await.map_err(|e| e.to_string())?;

    // People: joined (not counted), then whole heartbeats.
    let queue = "spread";
    let mut who = Vec::new();
    for _ in 0..people {
        who.push(person());
    }
    for chunk in who.chunks(CHUNK) {
        join_all(chunk.iter().map(|&(binding, ticket_id)| {
            let room = &room;
            async move {
                room.join(
                    queue,
                    &JoinRecord {
                        binding,
                        live_until_ms: t0 + 3_600_000,
                        max_waiting: None,
                    },
                    &rule(t0),
                )
                .await
                .expect("join");
                room.record(
                    queue,
                    &IssuedRecord {
                        binding,
                        chain: ChainFacts {
                            ticket_id,
                            sequence: 0,
                            joined_at_ms: t0,
                            expires_at_ms: t0 + 7_200_000,
                            admitted_from_ms: None,
                            epoch: Some(11),
                        },
                        live_until_ms: t0 + 3_600_000,
                    },
                )
                .await
                .expect("record");
            }
        }))
        .await;
    }
    let heartbeat = |binding: Binding, ticket_id: TicketId, seq: u32| {
        let (room, store) = (&room, &store);
        async move {
            room.beat(queue, &BeatRecord { binding, ticket_id }, &rule(t0))
                .await
                .expect("beat")
                .expect("alive");
            let now_ms = wall_ms();
            let next = store
                .advance(&AdvanceRequest {
                    ticket_id,
                    sequence: seq,
                    kind: TicketKind::Waiting,
                    live_until_ms: now_ms + 300_000,
                    expires_at_ms: t0 + 7_200_000,
                    now_ms,
                    grace_ms: 5_000,
                    epoch: store.epoch_of(&ticket_id),
                })
                .await
                .expect("advance");
            assert!(matches!(next, Advance::Next { .. }), "{next:?}");
            room.record(
                queue,
                &IssuedRecord {
                    binding,
                    chain: ChainFacts {
                        ticket_id,
                        sequence: seq + 1,
                        joined_at_ms: t0,
                        expires_at_ms: t0 + 7_200_000,
                        admitted_from_ms: None,
                        epoch: Some(11),
                    },
                    live_until_ms: t0 + 3_600_000,
                },
            )
            .await
            .expect("record");
        }
    };
    // One round first: every primary has the scripts, every chain a record.
    for chunk in who.chunks(CHUNK) {
        join_all(chunk.iter().map(|&(b, t)| heartbeat(b, t, 0))).await;
    }
    let started = Instant::now();
    let before = snapshot(&primaries).await?;
    for round in 1..=ROUNDS {
        for chunk in who.chunks(CHUNK) {
            join_all(chunk.iter().map(|&(b, t)| heartbeat(b, t, round))).await;
        }
    }
    let after = snapshot(&primaries).await?;
    let person_calls: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| delta(b, a, &["hmget", "evalsha", "eval"]))
        .collect();
    let total: u64 = person_calls.iter().sum();
    let beats = people * u64::from(ROUNDS);
    let busiest = *person_calls.iter().max().unwrap_or(&0) as f64 / total.max(1) as f64;
    println!(
        "redis_cluster_spread: {beats} whole heartbeats of {people} people ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  per-person commands per primary {primaries:?}: {person_calls:?} ({:.2} per heartbeat); busiest share {busiest:.3} (target ≤ 0.45)",
        total as f64 / beats as f64
    );
    let heartbeats_per_s = 6_000_000.0 / 150.0;
    let per_heartbeat = total as f64 / beats as f64;
    // Per second: one tick (the lease holder) with its snapshot; the other
    // instances' snapshots add one command each (20 instances assumed).
    let queue_per_s = queue_per_tick + 19.0;
    println!(
        "  queue slot: {queue_per_tick:.1} commands per tick (with its snapshot), none per heartbeat; at 40,000 heartbeats/s and 20 instances: {:.5} of all commands",
        queue_per_s / (queue_per_s + heartbeats_per_s * per_heartbeat)
    );

    // Clean up: the room's queue keys, then everything under the prefix.
    room.clear(queue).await.map_err(|e| e.to_string())?;
    for &p in &primaries {
        let mut conn = node(p).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            for k in keys {
                let _: Result<i64, _> = redis::cmd("UNLINK").arg(&k).query_async(&mut conn).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

fn main() {
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"redis_cluster_spread".contains(&filter) {
            return;
        }
    }
    let people = std::env::var("QG_CLUSTER_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000u64)
        .max(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(people)) {
        println!("redis_cluster_spread: SKIPPED, {e}");
    }
}
