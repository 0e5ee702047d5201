//! The Redis room state on a real Redis Cluster (feature `redis`; ignored:
//! needs the Cluster of `.ci/redis-cluster start` on 127.0.0.1:7000-7005,
//! and fails when it is absent).
//!
//! - Heartbeats touch only their people's slots (one `HMGET` each): with 3 primaries, the
//!   busiest one serves at most 0.45 of them, and none of them reaches
//!   the queue's own slot.
//! - Bad input creates nothing: heartbeats of unknown bindings or chains,
//!   records and leaves of unknown bindings leave the key count of every
//!   node as it was.
#![cfg(feature = "redis")]

use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, RedisRoomState,
    RoomState,
};
use queuegate::ticket::Binding;
use queuegate::TicketId;

fn facts(ticket_id: TicketId) -> ChainFacts {
    ChainFacts {
        ticket_id,
        sequence: 0,
        joined_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_003_600_000,
        admitted_from_ms: None,
        epoch: Some(11),
    }
}

const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];
const NODES: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];
const T: i64 = 1_700_000_000_000;

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
}

/// The primaries' ports.
async fn primaries() -> Vec<u16> {
    let mut out = Vec::new();
    for port in NODES {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node(port).await)
            .await
            .unwrap();
        if info.contains("role:master") {
            out.push(port);
        }
    }
    assert_eq!(out.len(), 3, "a cluster of 3 primaries");
    out
}

/// Heartbeat commands (`HMGET`) and scripts (`EVALSHA`, `EVAL`) a node
/// served since its last `RESETSTAT`.
async fn script_calls(port: u16) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut node(port).await)
        .await
        .unwrap();
    info.lines()
        .filter(|l| {
            ["cmdstat_hmget:", "cmdstat_evalsha:", "cmdstat_eval:"]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Keys under `prefix` on every node, by node (SCAN, so other tests'
/// keys do not move it).
async fn keys_everywhere(ports: &[u16], prefix: &str) -> std::collections::BTreeSet<(u16, String)> {
    let mut all = std::collections::BTreeSet::new();
    for &p in ports {
        let mut conn = node(p).await;
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
                .unwrap();
            all.extend(keys.into_iter().map(|k| (p, k)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    all
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

fn random_binding() -> Binding {
    Binding(TicketId::random().0)
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn heartbeats_spread_over_the_primaries_and_bad_input_creates_nothing() {
    let prefix = format!("qg-cluster-spread-{}", TicketId::random());
    let state = RedisRoomState::cluster_builder(&SEEDS)
        .prefix(&prefix)
        .connect()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`");
    let queue = format!("spread-{}", TicketId::random());
    let r = rule(T);
    let mut people = Vec::new();
    for _ in 0..300 {
        let binding = random_binding();
        let join = JoinRecord {
            binding,
            live_until_ms: T + 600_000,
            max_waiting: None,
        };
        assert!(matches!(
            state.join(&queue, &join, &r).await.unwrap(),
            Joined::New(_)
        ));
        let id = TicketId::random();
        state
            .record(
                &queue,
                &IssuedRecord {
                    binding,
                    chain: facts(id),
                    live_until_ms: T + 600_000,
                },
            )
            .await
            .unwrap();
        people.push((binding, id));
    }

    // Heartbeats at the same time as the joins: no tick is due, so every
    // command below is a heartbeat's HMGET on its person's slot.
    // One round first, so every primary has the script (a first EVALSHA
    // there fails with NOSCRIPT and is sent again as EVAL).
    for &(binding, ticket_id) in &people {
        state
            .beat(&queue, &BeatRecord { binding, ticket_id }, &r)
            .await
            .unwrap()
            .expect("a live chain");
    }
    let primaries = primaries().await;
    for &p in &primaries {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut node(p).await)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        for (i, &(binding, ticket_id)) in people.iter().enumerate() {
            let place = state
                .beat(&queue, &BeatRecord { binding, ticket_id }, &r)
                .await
                .unwrap()
                .expect("a live chain");
            assert_eq!(place.position, i as u64 + 1);
            assert_eq!(place.ahead, i as u64, "exact in a queue without holes");
        }
    }
    let mut calls = Vec::new();
    for &p in &primaries {
        calls.push(script_calls(p).await);
    }
    let total: u64 = calls.iter().sum();
    assert_eq!(total, 900, "one command per heartbeat: {calls:?}");
    let busiest = *calls.iter().max().unwrap() as f64 / total as f64;
    println!("heartbeat commands per primary: {calls:?}; busiest share {busiest:.3}");
    assert!(busiest <= 0.45, "{calls:?}");

    // Bad input: nothing is created on any node.
    let before = keys_everywhere(&NODES, &prefix).await;
    assert!(!before.is_empty(), "the room's own keys are counted");
    for &(binding, _) in &people {
        let unknown = random_binding();
        let beat = BeatRecord {
            binding: unknown,
            ticket_id: TicketId::random(),
        };
        assert_eq!(state.beat(&queue, &beat, &r).await.unwrap(), None);
        // A known binding with another chain's id.
        let wrong = BeatRecord {
            binding,
            ticket_id: TicketId::random(),
        };
        assert_eq!(state.beat(&queue, &wrong, &r).await.unwrap(), None);
        state
            .record(
                &queue,
                &IssuedRecord {
                    binding: unknown,
                    chain: facts(TicketId::random()),
                    live_until_ms: T + 600_000,
                },
            )
            .await
            .unwrap();
        state.leave(&queue, &random_binding()).await.unwrap();
    }
    // No key that was not there before, on any node. (One may have gone:
    // the admission lease expires 2 s after the last tick.)
    let after = keys_everywhere(&NODES, &prefix).await;
    let created: Vec<_> = after.difference(&before).collect();
    assert!(created.is_empty(), "bad input created keys: {created:?}");
    assert!(
        before.len() - after.len() <= 2,
        "only the lease (on its primary and replica) may have expired: {} keys before, {} after",
        before.len(),
        after.len()
    );
    state.clear(&queue).await.unwrap();
}
