//! Several instances sharing one Redis (feature `redis`; ignored: needs
//! Redis on 127.0.0.1:6379, or for the `*_cluster` tests the Redis Cluster
//! of `.ci/redis-cluster start` on 127.0.0.1:7000-7005; fails when it is
//! absent).
//!
//! - Two demo instances over real HTTP: a join on one heart-beats on the
//!   other with the same place, positions come from one counter, and a
//!   booking made on one is single use on the other: its holder gets the
//!   same booking back (`"replayed": true`), never a second one.
//! - The Redis room state against the in-memory one: the same steps give
//!   the same answers.
//!
//! Each scenario is one function, run on a single Redis and on the Cluster.
#![cfg(feature = "redis")]

mod cluster_support;
mod demo_support;

use std::time::Duration;

use demo_support::reservation::Replay;
use demo_support::*;
use queuegate::replay::RedisReplayStore;
use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, MemoryRoomState,
    Place, RedisRoomState, RoomState,
};
use queuegate::ticket::Binding;
use queuegate::TicketId;

async fn clear(demo: &Demo) {
    match &*demo.app.replay {
        Replay::Redis(r) => r.clear().await.expect("delete the test's keys"),
        Replay::Memory(_) => panic!("the demo was meant to use Redis"),
    }
}

/// The Cluster's seed nodes, as the demo's `--redis-cluster` takes them.
const CLUSTER_FLAG: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

#[tokio::test]
#[ignore = "needs Redis"]
async fn two_demo_instances_share_one_redis() {
    two_demo_instances_share(["--redis", "redis://127.0.0.1:6379/"]).await;
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn two_demo_instances_share_one_redis_cluster() {
    let _turn = whole_cluster();
    two_demo_instances_share(["--redis-cluster", CLUSTER_FLAG]).await;
}

/// `store` is the demo's flag and its value (`--redis URL` or
/// `--redis-cluster SEEDS`).
async fn two_demo_instances_share(store: [&str; 2]) {
    let queue = format!("shared-{}", TicketId::random());
    let flags = [
        store[0],
        store[1],
        "--queue",
        queue.as_str(),
        "--admit-per-sec",
        "0",
    ];
    let a = start(&flags).await;
    let b = start(&flags).await;

    // One serving counter: places from both instances follow each other.
    let mut first = Person::new();
    assert_eq!(first.join(&a).await.status, 200);
    let mut second = Person::new();
    let r = second.join(&b).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((first.position(), second.position()), (1, 2));

    // Joined on A, heart-beats on B (same place, one ahead for the second).
    let r = first.beat(&b).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(first.position(), 1);
    let r = second.beat(&a).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (second.position(), r.json()["ahead"].as_u64()),
        (2, Some(1))
    );
    // Joining again on the other instance gives the same chain, not a new place.
    let again = first.join(&b).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(first.position(), 1);

    // Admission resumes on B only: the rate goes into the queue's shared
    // settings, and whichever instance holds the tick's lease admits the
    // front (A's lease lapses within 2 s when A gets no traffic, then B's
    // tick takes it over): within 3 s. A sees the admission.
    b.app.room.set_admit_per_sec(100.0).unwrap();
    for _ in 0..150 {
        let r = first.beat(&b).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if first.admitted() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first.admitted(), "admitted via the shared state");
    let r = first.beat(&a).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(first.admitted(), "A knows the admission B made");

    // Books on A; the same ticket on B is single use (shared): the layer
    // refuses it `replayed`, and the demo answers its holder with the
    // booking made on A (its bookings live in Redis too), never a second.
    let r = first.reserve(&a).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let booked = r.json()["reservation_id"].clone();
    assert!(booked.is_string(), "{}", r.body);
    let r = first.reserve(&b).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], true, "{}", r.body);
    assert_eq!(r.json()["reservation_id"], booked, "{}", r.body);
    clear(&a).await;
}

fn rule(now_ms: i64, per_sec: f64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec,
        burst: 1.0,
        max_admitted: Some(2),
        opens_at_ms: 0,
        shuffle_seed: 7,
    }
}

fn binding(n: u8) -> Binding {
    Binding([n; 16])
}

/// Facts of a ticket of chain `id` (admitted from sequence 2 on, to carry
/// both shapes through the state).
fn facts(id: TicketId, sequence: u32) -> ChainFacts {
    ChainFacts {
        ticket_id: id,
        sequence,
        joined_at_ms: 1_800_000_000_000,
        expires_at_ms: 1_800_043_200_000,
        admitted_from_ms: (sequence >= 2).then_some(1_800_000_001_000),
        epoch: Some(sequence.wrapping_mul(2_654_435_761)),
    }
}

/// Runs the same steps on a state and returns every answer, rendered.
async fn script<S: RoomState>(s: &S, queue: &str) -> Vec<String> {
    let t = 1_800_000_000_000i64;
    let mut out = Vec::new();
    let ids: Vec<TicketId> = (1..=5u8).map(|n| TicketId([n; 16])).collect();
    let join = |n: u8, live: i64| JoinRecord {
        binding: binding(n),
        live_until_ms: live,
        max_waiting: Some(4),
    };
    // Paused: five joins, the fifth over the waiting cap.
    for n in 1..=5u8 {
        out.push(format!(
            "{:?}",
            s.join(queue, &join(n, t + 10_000), &rule(t, 0.0)).await
        ));
    }
    // Their first tickets are recorded.
    for n in 1..=4u8 {
        s.record(
            queue,
            &IssuedRecord {
                binding: binding(n),
                chain: facts(ids[n as usize - 1], u32::from(n)),
                live_until_ms: t + 20_000 + i64::from(n),
            },
        )
        .await
        .unwrap();
    }
    // Joining again returns the chain and the facts of its latest ticket.
    let again = s.join(queue, &join(2, t), &rule(t + 1, 0.0)).await;
    match &again {
        Ok(Joined::Existing(place)) => assert_eq!(place.chain, Some(facts(ids[1], 2))),
        other => panic!("expected the existing chain, got {other:?}"),
    };
    out.push(format!("{again:?}"));
    // A beat with a wrong chain id is nothing; with the right one a place.
    let beat = |n: u8, id: TicketId| BeatRecord {
        binding: binding(n),
        ticket_id: id,
    };
    out.push(format!(
        "{:?}",
        s.beat(queue, &beat(1, ids[1]), &rule(t + 2, 0.0)).await
    ));
    out.push(format!(
        "{:?}",
        s.beat(queue, &beat(3, ids[2]), &rule(t + 3, 0.0)).await
    ));
    // 1 leaves; admission at 1/s with burst 1 and a cap of 2 admitted.
    s.leave(queue, &binding(1)).await.unwrap();
    for (i, n) in [2u8, 3, 4, 2, 3, 4].into_iter().enumerate() {
        let now = t + 1_000 + 1_000 * i as i64;
        out.push(format!(
            "{:?}",
            s.beat(queue, &beat(n, ids[n as usize - 1]), &rule(now, 1.0))
                .await
        ));
    }
    out.push(format!("{:?}", s.stats(queue, t + 6_000).await));
    // Deadlines pass: 2 (admitted, t+20_002) and the rest; the sweep drops
    // them, and admitted slots free up.
    out.push(format!("{:?}", s.sweep(queue, t + 20_003).await));
    out.push(format!("{:?}", s.stats(queue, t + 20_003).await));
    out.push(format!("{:?}", s.sweep(queue, t + 30_000).await));
    out.push(format!("{:?}", s.stats(queue, t + 30_000).await));
    // A new join after all that gets the next position.
    let late = s
        .join(queue, &join(9, t + 40_000), &rule(t + 30_001, 1.0))
        .await;
    out.push(format!("{late:?}"));
    if let Ok(Joined::New(Place { position, .. })) = late {
        assert_eq!(position, 5);
    } else {
        panic!("{late:?}");
    }
    out
}

/// A store under a prefix of its own (fails when Redis is absent).
async fn fresh_store() -> RedisReplayStore {
    RedisReplayStore::builder("redis://127.0.0.1:6379/")
        .prefix(&format!("qg-room-test-{}", TicketId::random()))
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379")
}

/// The same on the Cluster (fails when it is absent).
async fn fresh_cluster_store() -> RedisReplayStore {
    RedisReplayStore::cluster_builder(&cluster_support::SEEDS)
        .prefix(&format!("qg-room-test-{}", TicketId::random()))
        .connect()
        .await
        .expect(cluster_support::NEEDED)
}

/// The shared turn on the Cluster (no failover test runs meanwhile), once
/// it is whole; fails when it is absent.
fn whole_cluster() -> cluster_support::Turn {
    let turn = cluster_support::shared_turn();
    cluster_support::wait_whole(Duration::from_secs(20));
    turn
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_room_state_answers_like_the_memory_one() {
    answers_like_the_memory_one(fresh_store().await).await;
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn redis_room_state_answers_like_the_memory_one_on_a_cluster() {
    let _turn = whole_cluster();
    answers_like_the_memory_one(fresh_cluster_store().await).await;
}

async fn answers_like_the_memory_one(store: RedisReplayStore) {
    let redis = RedisRoomState::new(&store);
    let memory = MemoryRoomState::new();
    let expected = script(&memory, "q").await;
    let got = script(&redis, "q").await;
    // (On a Cluster, `store.clear` leaves the room's keys: clear them too.)
    redis.clear("q").await.unwrap();
    store.clear().await.unwrap();
    for (i, (m, r)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(m, r, "step {i}");
    }
    assert_eq!(expected.len(), got.len());
    // The steps did something: people were admitted and places refused.
    assert!(expected.iter().any(|s| s.contains("admitted: true")));
    assert!(expected.iter().any(|s| s.contains("Full")));
}

/// Joins before the opening wait in a pre-queue; at the opening the live
/// ones get places 1..=n in a shuffled order, the dead one is dropped.
async fn opening<S: RoomState>(s: &S, queue: &str) -> (Vec<u64>, Vec<String>) {
    let t = 1_800_000_000_000i64;
    let opens = t + 5_000;
    let rule = |now_ms: i64| AdmissionRule {
        now_ms,
        per_sec: 0.0,
        burst: 1.0,
        max_admitted: None,
        opens_at_ms: opens,
        shuffle_seed: 42,
    };
    let mut log = Vec::new();
    for n in 1..=6u8 {
        // Person 6's chain dies before the opening.
        let live = if n == 6 { t + 1_000 } else { t + 60_000 };
        let j = JoinRecord {
            binding: binding(n),
            live_until_ms: live,
            max_waiting: None,
        };
        log.push(format!(
            "{:?}",
            s.join(queue, &j, &rule(t + i64::from(n))).await
        ));
        if n < 6 {
            s.record(
                queue,
                &IssuedRecord {
                    binding: binding(n),
                    chain: facts(TicketId([n; 16]), 0),
                    live_until_ms: live,
                },
            )
            .await
            .unwrap();
        }
    }
    log.push(format!("{:?}", s.stats(queue, t + 10).await));
    let mut positions = Vec::new();
    for n in 1..=5u8 {
        let beat = BeatRecord {
            binding: binding(n),
            ticket_id: TicketId([n; 16]),
        };
        let place = s
            .beat(queue, &beat, &rule(opens + 1))
            .await
            .unwrap()
            .unwrap();
        assert!(!place.admitted);
        positions.push(place.position);
    }
    log.push(format!("{:?}", s.stats(queue, opens + 2).await));
    (positions, log)
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_room_state_opens_like_the_memory_one() {
    opens_like_the_memory_one(fresh_store().await).await;
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn redis_room_state_opens_like_the_memory_one_on_a_cluster() {
    let _turn = whole_cluster();
    opens_like_the_memory_one(fresh_cluster_store().await).await;
}

async fn opens_like_the_memory_one(store: RedisReplayStore) {
    let redis = RedisRoomState::new(&store);
    let (mut from_memory, memory_log) = opening(&MemoryRoomState::new(), "q").await;
    let (mut from_redis, redis_log) = opening(&redis, "q").await;
    redis.clear("q").await.unwrap();
    store.clear().await.unwrap();
    assert_eq!(memory_log, redis_log);
    assert!(memory_log[0].contains("position: 0"), "{}", memory_log[0]);
    // The order differs between the two shuffles; the places given do not.
    from_memory.sort_unstable();
    from_redis.sort_unstable();
    assert_eq!(from_memory, vec![1, 2, 3, 4, 5]);
    assert_eq!(from_redis, vec![1, 2, 3, 4, 5]);
}
