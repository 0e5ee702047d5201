//! The waiting-room engine on an injected clock: positions, one chain per
//! binding, admission rate and cap, pause and resume, drop-outs, the
//! opening shuffle, liveness by position and jitter.

use std::sync::Arc;
use std::time::Duration;

use queuegate::room::{JoinContext, JoinVerdict, MemoryRoomState, RoomError, RoomTicket};
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented, RejectionCode,
    WaitingRoom,
};

const T0: i64 = 1_700_000_000_000;

type Room<H = ()> = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState, H>;

fn issuer(clock: &ManualClock) -> Issuer<ManualClock> {
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    Issuer::new(
        keys,
        Policy::new("vaccine-53-54"),
        clock.clone(),
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap()
}

fn new_room(per_sec: f64) -> (Room, ManualClock) {
    let clock = ManualClock::new(T0);
    let room = WaitingRoom::builder(issuer(&clock), MemoryRoomState::new())
        .admit_per_sec(per_sec)
        .unwrap()
        .liveness(Duration::from_secs(10), Duration::from_secs(300))
        .unwrap()
        .build()
        .unwrap();
    (room, clock)
}

async fn join<H: queuegate::room::JoinHook>(room: &Room<H>, who: &str) -> RoomTicket {
    room.join(who.as_bytes(), ClientTime::Absent).await.unwrap()
}

async fn beat<H: queuegate::room::JoinHook>(
    room: &Room<H>,
    who: &str,
    t: &RoomTicket,
) -> Result<RoomTicket, RoomError> {
    room.heartbeat(&Presented {
        ticket: Some(t.ticket.as_bytes()),
        binding: Some(who.as_bytes()),
        client_time: ClientTime::Absent,
    })
    .await
}

fn claims(t: &RoomTicket) -> queuegate::Claims {
    queuegate::ticket::decode(t.ticket.as_bytes())
        .unwrap()
        .claims()
        .unwrap()
}

fn code(e: &RoomError) -> Option<RejectionCode> {
    match e {
        RoomError::Rejected(r) => Some(r.code()),
        _ => None,
    }
}

#[tokio::test]
async fn positions_are_monotonic_and_one_chain_per_binding() {
    let (room, clock) = new_room(0.0);
    let a = join(&room, "a").await;
    let b = join(&room, "b").await;
    let c = join(&room, "c").await;
    assert_eq!((a.position, b.position, c.position), (1, 2, 3));
    assert_eq!((a.ahead, b.ahead, c.ahead), (0, 1, 2));
    assert!(
        !a.admitted && a.estimated_wait.is_none(),
        "paused: no estimate"
    );

    // Joining again with a live chain returns that chain, not a new place:
    // its next ticket, minted afresh (the room keeps no ticket text).
    let again = join(&room, "b").await;
    assert_eq!(again.ticket_id, b.ticket_id);
    assert_eq!((again.position, again.ahead), (2, 1));
    assert_ne!(again.ticket, b.ticket);
    assert_eq!(claims(&again).sequence, claims(&b).sequence + 1);
    assert_eq!(claims(&again).joined_at_ms, claims(&b).joined_at_ms);
    assert_eq!(claims(&again).expires_at_ms, claims(&b).expires_at_ms);

    // The re-minted ticket heart-beats; once it has, the older one is
    // `replayed` (a copy of the chain cannot go on alone).
    clock.advance(Duration::from_secs(6));
    let b1 = beat(&room, "b", &again).await.unwrap();
    assert_eq!((b1.ticket_id, b1.position), (b.ticket_id, 2));
    let old = beat(&room, "b", &b).await.unwrap_err();
    assert_eq!(code(&old), Some(RejectionCode::Replayed));
    let again = join(&room, "b").await;
    assert_eq!(claims(&again).sequence, claims(&b1).sequence + 1);
    assert_eq!(room.stats().await.unwrap().entries, 3);

    let d = join(&room, "d").await;
    assert_eq!(d.position, 4);
}

#[tokio::test]
async fn admission_follows_the_rate_from_elapsed_time() {
    let (room, clock) = new_room(2.0);
    let mut people = Vec::new();
    for i in 0..10 {
        let who = format!("p{i}");
        let t = join(&room, &who).await;
        people.push((who, t));
    }
    // A new bucket starts with one second of admissions.
    assert_eq!(room.stats().await.unwrap().admitted_total, 2);
    assert!(people[0].1.admitted && people[1].1.admitted && !people[2].1.admitted);
    for step in 1..=3u64 {
        clock.advance(Duration::from_secs(1));
        for (who, t) in people.iter_mut() {
            *t = beat(&room, who, t).await.unwrap();
        }
        let admitted = people.iter().filter(|(_, t)| t.admitted).count() as u64;
        assert_eq!(admitted, 2 + 2 * step, "two people per second");
    }
    // Admission goes in position order.
    let flags: Vec<bool> = people.iter().map(|(_, t)| t.admitted).collect();
    assert_eq!(flags.iter().take_while(|a| **a).count(), 8);

    // The rate changes while running.
    room.set_admit_per_sec(0.5).unwrap();
    assert!(room.set_admit_per_sec(f64::NAN).is_err());
    assert!(room.set_admit_per_sec(-1.0).is_err());
    clock.advance(Duration::from_secs(2));
    for (who, t) in people.iter_mut() {
        *t = beat(&room, who, t).await.unwrap();
    }
    assert_eq!(people.iter().filter(|(_, t)| t.admitted).count(), 9);
}

#[tokio::test]
async fn the_cap_bounds_admitted_chains_alive_at_once() {
    let clock = ManualClock::new(T0);
    let room = WaitingRoom::builder(issuer(&clock), MemoryRoomState::new())
        .admit_per_sec(100.0)
        .unwrap()
        .max_admitted(2)
        .liveness(Duration::from_secs(10), Duration::from_secs(300))
        .unwrap()
        .build()
        .unwrap();
    let mut people = Vec::new();
    for i in 0..5 {
        let who = format!("p{i}");
        let t = join(&room, &who).await;
        people.push((who, t));
    }
    clock.advance(Duration::from_secs(5));
    for (who, t) in people.iter_mut() {
        *t = beat(&room, who, t).await.unwrap();
    }
    let admitted: Vec<usize> = (0..5).filter(|i| people[*i].1.admitted).collect();
    assert_eq!(admitted, [0, 1], "only two at once whatever the rate");
    assert_eq!(room.stats().await.unwrap().admitted_alive, 2);

    // One books and leaves: the next place is admitted.
    room.leave(b"p0").await.unwrap();
    let t = beat(&room, "p2", &people[2].1).await.unwrap();
    assert!(t.admitted && t.newly_admitted);
    people[2].1 = t;
    // One stops heart-beating: its slot frees once its deadline passes.
    clock.advance(Duration::from_secs(6));
    people[2].1 = beat(&room, "p2", &people[2].1).await.unwrap();
    people[3].1 = beat(&room, "p3", &people[3].1).await.unwrap();
    assert!(!people[3].1.admitted, "p1 is still alive");
    clock.advance(Duration::from_secs(5));
    people[2].1 = beat(&room, "p2", &people[2].1).await.unwrap();
    people[3].1 = beat(&room, "p3", &people[3].1).await.unwrap();
    assert!(people[3].1.admitted, "p1's slot went to p3");
    let gone = beat(&room, "p1", &people[1].1).await.unwrap_err();
    assert_eq!(code(&gone), Some(RejectionCode::OfflineResumed));
}

#[tokio::test]
async fn pause_and_resume() {
    let (room, clock) = new_room(10.0);
    room.pause();
    assert!(room.is_paused());
    let mut a = join(&room, "a").await;
    clock.advance(Duration::from_secs(30));
    a = beat(&room, "a", &a).await.unwrap();
    assert!(!a.admitted, "paused: nobody admitted");
    assert_eq!(a.estimated_wait, None);
    room.resume();
    clock.advance(Duration::from_millis(100));
    a = beat(&room, "a", &a).await.unwrap();
    assert!(a.admitted && a.newly_admitted);
    assert_eq!(room.stats().await.unwrap().admitted_total, 1);
}

#[tokio::test]
async fn dead_places_do_not_use_up_the_rate() {
    let (room, clock) = new_room(1.0);
    let a = join(&room, "a").await;
    assert!(a.admitted, "empty queue: admitted at once");
    let _b = join(&room, "b").await; // will vanish
    let mut c = join(&room, "c").await;
    let mut d = join(&room, "d").await;
    assert_eq!((c.position, c.ahead), (3, 1));
    // b's deadline (10 s near the front) passes while c and d keep beating.
    clock.advance(Duration::from_millis(500));
    c = beat(&room, "c", &c).await.unwrap();
    assert!(!c.admitted, "half a token");
    // Keep the bucket drained: nobody admitted before b is dead would be
    // b taking the token; so pause while b dies.
    room.pause();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(4));
        c = beat(&room, "c", &c).await.unwrap();
        d = beat(&room, "d", &d).await.unwrap();
    }
    assert_eq!(c.ahead, 0, "a dead place is not counted ahead");
    room.resume();
    clock.advance(Duration::from_secs(1));
    c = beat(&room, "c", &c).await.unwrap();
    assert!(c.admitted, "b's dead place was skipped, c took the token");
    d = beat(&room, "d", &d).await.unwrap();
    assert!(!d.admitted, "one token, one live person: the rate holds");
    assert_eq!(room.stats().await.unwrap().admitted_total, 2);
    clock.advance(Duration::from_secs(1));
    d = beat(&room, "d", &d).await.unwrap();
    assert!(d.admitted);
}

#[tokio::test]
async fn the_opening_draws_places_at_random() {
    let clock = ManualClock::new(T0);
    let opens = T0 + 60_000;
    let room = WaitingRoom::builder(issuer(&clock), MemoryRoomState::new())
        .admit_per_sec(1.0)
        .unwrap()
        .opens_at_ms(opens)
        .liveness(Duration::from_secs(10), Duration::from_secs(300))
        .unwrap()
        .build()
        .unwrap();
    let mut people = Vec::new();
    for i in 0..12 {
        let who = format!("early{i}");
        let t = join(&room, &who).await;
        assert_eq!(t.position, 0, "no place before the opening");
        assert!(!t.admitted);
        assert_eq!(t.opens_in_ms, (opens - clock.now_ms_for_test()) as u64);
        assert!(t.retry_after_ms <= t.opens_in_ms + 1_000);
        people.push((who, t));
        clock.advance(Duration::from_secs(1));
    }
    clock.set_ms(opens + 1);
    let mut order = Vec::new();
    for (i, (who, t)) in people.iter_mut().enumerate() {
        *t = beat(&room, who, t).await.unwrap();
        if t.admitted {
            order.push(i);
        }
    }
    let positions: Vec<u64> = people.iter().map(|(_, t)| t.position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=12).collect::<Vec<_>>(), "{positions:?}");
    assert_ne!(positions, sorted, "the opening order is not the join order");
    // A late joiner comes after every early one.
    let late = join(&room, "late").await;
    assert_eq!(late.position, 13);

    // Admission follows the drawn places.
    for _ in 0..15 {
        for (i, (who, t)) in people.iter_mut().enumerate() {
            let was = t.admitted;
            *t = beat(&room, who, t).await.unwrap();
            if t.admitted && !was {
                order.push(i);
            }
        }
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(order.len(), 12);
    let by_position: Vec<usize> = {
        let mut idx: Vec<usize> = (0..12).collect();
        idx.sort_by_key(|i| positions[*i]);
        idx
    };
    assert_eq!(order, by_position);
    assert_ne!(order, (0..12).collect::<Vec<_>>());
}

trait NowForTest {
    fn now_ms_for_test(&self) -> i64;
}
impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> i64 {
        queuegate::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn liveness_depends_on_distance_and_retries_are_jittered() {
    let (room, clock) = new_room(0.25);
    let mut last = None;
    let mut first = None;
    for i in 0..200 {
        let t = join(&room, &format!("p{i}")).await;
        if i == 0 {
            first = Some(t.clone());
        }
        if i == 1 {
            let near = t.live_until_ms - T0;
            assert_eq!(near, 10_000, "next in line: seconds");
        }
        if i == 40 {
            // 39 ahead at 0.25/s = 156 s wait: half of it.
            assert_eq!(t.live_until_ms - T0, 78_000);
        }
        last = Some(t);
    }
    let last = last.unwrap();
    assert_eq!(last.live_until_ms - T0, 300_000, "far: capped at the max");
    let first = first.unwrap();
    assert!(first.admitted);
    assert_eq!(first.live_until_ms - T0, 10_000, "admitted: seconds");

    // Retry hints sit between 40% and 60% of the deadline, and vary.
    let mut seen = std::collections::HashSet::new();
    let mut t = last;
    for _ in 0..50 {
        clock.advance(Duration::from_secs(1));
        t = beat(&room, "p199", &t).await.unwrap();
        let live = (t.live_until_ms - queuegate::Clock::now_ms(&clock)) as u64;
        assert!(
            t.retry_after_ms >= live * 2 / 5 && t.retry_after_ms < live * 3 / 5,
            "{} of {live}",
            t.retry_after_ms
        );
        seen.insert(t.retry_after_ms);
    }
    assert!(seen.len() > 10, "jittered: {seen:?}");
}

#[tokio::test]
async fn a_lost_heartbeat_response_costs_nothing() {
    let (room, clock) = new_room(0.0);
    let t0 = join(&room, "a").await;
    clock.advance(Duration::from_secs(1));
    let t1 = beat(&room, "a", &t0).await.unwrap();
    // The response was lost: the client sends t0 again.
    let t1_again = beat(&room, "a", &t0).await.unwrap();
    assert_eq!(t1_again.ticket_id, t1.ticket_id);
    assert_eq!(t1_again.position, t1.position);
    // Either answer carries on the chain.
    clock.advance(Duration::from_secs(1));
    let t2 = beat(&room, "a", &t1_again).await.unwrap();
    assert_eq!(t2.position, 1);
    // But an old copy is a replay.
    let old = beat(&room, "a", &t0).await.unwrap_err();
    assert_eq!(code(&old), Some(RejectionCode::Replayed));
}

#[tokio::test]
async fn going_offline_ends_the_chain_and_rejoining_works() {
    // While waiting (paused: far deadline, the max).
    let (room, clock) = new_room(0.0);
    let _x = join(&room, "x").await;
    let a = join(&room, "a").await;
    clock.advance(Duration::from_secs(301));
    let e = beat(&room, "a", &a).await.unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::OfflineResumed));
    let again = join(&room, "a").await;
    assert_ne!(again.ticket_id, a.ticket_id, "a new chain");
    assert_eq!(again.position, 3, "at the back");
    assert!(beat(&room, "a", &again).await.is_ok());

    // While admitted (seconds).
    let (room, clock) = new_room(10.0);
    let a = join(&room, "a").await;
    assert!(a.admitted);
    clock.advance(Duration::from_secs(11));
    let e = beat(&room, "a", &a).await.unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::OfflineResumed));
    let again = join(&room, "a").await;
    assert_ne!(again.ticket_id, a.ticket_id);
    assert!(again.admitted);
}

#[tokio::test]
async fn the_join_hook_refuses_and_capacity_is_bounded() {
    let clock = ManualClock::new(T0);
    let hook = |j: &JoinContext<'_>| {
        if j.binding.starts_with(b"bot") {
            JoinVerdict::Refuse {
                reason: "too many joins from this network",
                retry_after: Some(Duration::from_secs(30)),
            }
        } else {
            JoinVerdict::Allow
        }
    };
    let room = WaitingRoom::builder(issuer(&clock), MemoryRoomState::new())
        .admit_per_sec(0.0)
        .unwrap()
        .max_waiting(2)
        .join_hook(hook)
        .build()
        .unwrap();
    let e = room.join(b"bot-1", ClientTime::Absent).await.unwrap_err();
    assert_eq!(e.code(), "join_refused");
    assert_eq!(e.retry_after_ms(), Some(30_000));
    join(&room, "a").await;
    join(&room, "b").await;
    let e = room.join(b"c", ClientTime::Absent).await.unwrap_err();
    assert_eq!(e, RoomError::Full);
    // A live chain still gets itself back when full.
    assert_eq!(join(&room, "a").await.position, 1);
    // A clock far off is refused before any state is kept.
    let before = room.stats().await.unwrap().entries;
    let e = room
        .join(b"d", ClientTime::Millis(T0 + 3_600_000))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::ClockSkew));
    assert_eq!(room.stats().await.unwrap().entries, before);
}

#[tokio::test]
async fn sweep_frees_dead_chains() {
    let (room, clock) = new_room(0.0);
    for i in 0..5 {
        join(&room, &format!("p{i}")).await;
    }
    assert_eq!(room.stats().await.unwrap().entries, 5);
    clock.advance(Duration::from_secs(400));
    assert_eq!(room.sweep().await.unwrap(), 5);
    let s = room.stats().await.unwrap();
    assert_eq!((s.entries, s.waiting), (0, 0));
}

#[tokio::test]
async fn sparse_heartbeats_lose_no_admissions() {
    // Far-away people call rarely: the rate must hold over time anyway.
    let (room, clock) = new_room(1.0);
    let mut people = Vec::new();
    for i in 0..6 {
        let who = format!("p{i}");
        let t = join(&room, &who).await;
        people.push((who, t));
    }
    assert_eq!(room.stats().await.unwrap().admitted_total, 1);
    // Three seconds without a single call.
    clock.advance(Duration::from_secs(3));
    let (who, t) = &people[4];
    let t = beat(&room, who, t).await.unwrap();
    assert_eq!(room.stats().await.unwrap().admitted_total, 4);
    assert!(!t.admitted);
    assert_eq!(t.ahead, 0, "positions 2 to 4 were admitted");
    let (who, t) = &people[3];
    assert!(beat(&room, who, t).await.unwrap().admitted);
}

/// A hook that takes its time (as a challenge or a shared rate limiter
/// would) and lets a limited number of joins through.
struct SlowLimit {
    left: std::sync::atomic::AtomicU32,
}

impl queuegate::room::JoinHook for SlowLimit {
    fn on_join(
        &self,
        _join: &JoinContext<'_>,
    ) -> impl std::future::Future<Output = JoinVerdict> + Send {
        let allowed = self
            .left
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        async move {
            tokio::task::yield_now().await;
            if allowed {
                JoinVerdict::Allow
            } else {
                JoinVerdict::Refuse {
                    reason: "too many joins right now",
                    retry_after: Some(Duration::from_secs(5)),
                }
            }
        }
    }
}

#[tokio::test]
async fn an_async_hook_can_slow_and_limit_joins() {
    let clock = ManualClock::new(T0);
    let room = WaitingRoom::builder(issuer(&clock), MemoryRoomState::new())
        .join_hook(SlowLimit {
            left: std::sync::atomic::AtomicU32::new(2),
        })
        .build()
        .unwrap();
    assert!(room.join(b"a", ClientTime::Absent).await.is_ok());
    assert!(room.join(b"b", ClientTime::Absent).await.is_ok());
    let e = room.join(b"c", ClientTime::Absent).await.unwrap_err();
    assert_eq!(e.code(), "join_refused");
    assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        room.stats().await.unwrap().entries,
        2,
        "refused joins hold nothing"
    );
}
