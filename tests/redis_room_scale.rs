//! The Redis room state with a few thousand people (feature `redis`;
//! ignored: needs Redis on 127.0.0.1:6379, fails when it is absent):
//! "people ahead" stays within its documented bound when places die, and
//! admission skips the dead in bounded steps, in place order.
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

const T: i64 = 1_700_000_000_000;
/// The snapshot's block of places (see `room::redis::cache`).
const BLOCK: u64 = 1024;
const BATCH: u64 = 1000;

fn rule(now_ms: i64, per_sec: f64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec,
        burst: per_sec.max(1.0),
        max_admitted: None,
        opens_at_ms: i64::MIN,
        shuffle_seed: 1,
    }
}

fn who(i: u32) -> (Binding, TicketId) {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b[15] = 0xb;
    let mut t = b;
    t[15] = 0x7;
    (Binding(b), TicketId(t))
}

async fn state() -> RedisRoomState {
    RedisRoomState::builder("redis://127.0.0.1:6379/")
        .prefix(&format!("qg-room-scale-{}", TicketId::random()))
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379")
}

/// Joins `n` people while paused; those for whom `dies(i)` live until
/// `T + 1_000`, the others ten minutes.
async fn fill(s: &RedisRoomState, q: &str, n: u32, dies: impl Fn(u32) -> bool) {
    for i in 0..n {
        let (binding, ticket_id) = who(i);
        let live_until_ms = if dies(i) { T + 1_000 } else { T + 600_000 };
        let join = JoinRecord {
            binding,
            live_until_ms,
            max_waiting: None,
        };
        let Joined::New(place) = s.join(q, &join, &rule(T, 0.0)).await.unwrap() else {
            panic!("a new place");
        };
        assert_eq!(place.position, u64::from(i) + 1);
        let issued = IssuedRecord {
            binding,
            chain: facts(ticket_id),
            live_until_ms,
        };
        s.record(q, &issued).await.unwrap();
    }
}

async fn ahead_of(s: &RedisRoomState, q: &str, i: u32, r: &AdmissionRule) -> u64 {
    let (binding, ticket_id) = who(i);
    let place = s
        .beat(q, &BeatRecord { binding, ticket_id }, r)
        .await
        .unwrap()
        .expect("alive");
    assert_eq!(place.position, u64::from(i) + 1);
    place.ahead
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn people_ahead_stay_within_the_bound_and_the_sweep_brings_them_back() {
    let s = state().await;
    let q = "scale-ahead";
    let n = 3_000u32;
    let dies = |i: u32| i % 3 == 1;
    fill(&s, q, n, dies).await;
    let last = n - 1;
    let exact = (0..last).filter(|&i| !dies(i)).count() as u64;
    let dead_ahead = u64::from(last) - exact;
    // Before anyone died: exact (no holes).
    assert_eq!(
        ahead_of(&s, q, last, &rule(T + 500, 0.0)).await,
        u64::from(last)
    );
    // Dead but mostly not yet found: never under, at most the dead ahead
    // plus a block over.
    let got = ahead_of(&s, q, last, &rule(T + 2_000, 0.0)).await;
    assert!(
        got >= exact && got <= exact + dead_ahead + BLOCK,
        "{got} vs {exact}"
    );
    // The tick found at most one batch of them.
    let stats = s.stats(q, T + 2_000).await.unwrap();
    assert!(stats.waiting >= u64::from(n) - BATCH, "{stats:?}");
    // The sweep finds the rest in bounded batches; then within a block.
    let swept = s.sweep(q, T + 2_000).await.unwrap();
    let stats = s.stats(q, T + 2_000).await.unwrap();
    assert_eq!(
        stats.waiting,
        u64::from(n) - u64::from(n) / 3,
        "{swept} swept"
    );
    let got = ahead_of(&s, q, last, &rule(T + 2_001, 0.0)).await;
    assert!(got >= exact && got - exact < BLOCK, "{got} vs {exact}");
    // Near the front: the one hole in front of place 4 may be counted.
    let near = ahead_of(&s, q, 3, &rule(T + 2_001, 0.0)).await;
    assert!((2..=3).contains(&near), "{near}");
    s.clear(q).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn admission_skips_the_dead_in_bounded_steps_in_place_order() {
    let s = state().await;
    let q = "scale-admit";
    let (dead, live) = (2_500u32, 10u32);
    fill(&s, q, dead + live, |i| i < dead).await;
    // Resumed at 2 a second, one tick a second: each tick finds at most
    // a batch of dead in the sweep and skips at most a batch at the front
    // beyond the few it admits.
    let mut now = T + 2_000;
    let mut admitted = Vec::new();
    let mut waiting_before = u64::from(dead + live);
    for _ in 0..8 {
        let r = rule(now, 2.0);
        s.tick_now(q, &r).await.unwrap();
        let stats = s.stats(q, now).await.unwrap();
        assert!(
            waiting_before - stats.waiting <= 2 * BATCH + 10,
            "{waiting_before} -> {}",
            stats.waiting
        );
        waiting_before = stats.waiting;
        for i in dead..dead + live {
            let (binding, ticket_id) = who(i);
            let place = s
                .beat(q, &BeatRecord { binding, ticket_id }, &r)
                .await
                .unwrap()
                .expect("alive");
            if place.admitted && !admitted.contains(&i) {
                admitted.push(i);
            }
        }
        now += 1_000;
    }
    assert!(admitted.len() >= 4, "{admitted:?}");
    let mut sorted = admitted.clone();
    sorted.sort_unstable();
    assert_eq!(admitted, sorted, "in place order");
    assert_eq!(admitted[0], dead, "the first live place first");
    s.clear(q).await.unwrap();
}
