//! A conformance suite for [`RoomState`] implementations: the same checks
//! run against every backend. A backend's test file invokes
//! `room_state_conformance!(|| async { make_state() })`; each check uses its
//! own queue name, so a shared store (Redis) needs no flushing between them.
#![allow(dead_code)]

use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, Place, RoomState,
};
use queuegate::ticket::{Binding, TicketId};

pub const T: i64 = 1_700_000_000_000;

pub fn queue(name: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    format!("conformance-{name}-{}", u64::from_le_bytes(b))
}

pub fn who(i: u8) -> Binding {
    Binding([i; 16])
}

pub fn chain(i: u8) -> TicketId {
    TicketId([i; 16])
}

pub fn rule(now_ms: i64, per_sec: f64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec,
        burst: per_sec.max(1.0),
        max_admitted: None,
        opens_at_ms: i64::MIN,
        shuffle_seed: 0x5eed,
    }
}

pub fn joining(i: u8, live_until_ms: i64) -> JoinRecord {
    JoinRecord {
        binding: who(i),
        live_until_ms,
        max_waiting: None,
    }
}

/// Joins `i` and records its first ticket (id `chain(i)`), like the engine.
pub async fn join_recorded<S: RoomState>(
    s: &S,
    q: &str,
    i: u8,
    rule: &AdmissionRule,
    live_until_ms: i64,
) -> Place {
    let place = match s.join(q, &joining(i, live_until_ms), rule).await.unwrap() {
        Joined::New(p) => p,
        other => panic!("expected a new place, got {other:?}"),
    };
    record(s, q, i, live_until_ms).await;
    place
}

/// The facts of chain `i`'s ticket of `sequence`.
pub fn facts(i: u8, sequence: u32) -> ChainFacts {
    ChainFacts {
        ticket_id: chain(i),
        sequence,
        joined_at_ms: T,
        expires_at_ms: T + 43_200_000,
        admitted_from_ms: (sequence >= 5).then_some(T + 1_000),
        epoch: Some(sequence.wrapping_mul(2_654_435_761)),
    }
}

pub async fn record<S: RoomState>(s: &S, q: &str, i: u8, live_until_ms: i64) {
    record_seq(s, q, i, live_until_ms, 0).await
}

pub async fn record_seq<S: RoomState>(s: &S, q: &str, i: u8, live_until_ms: i64, sequence: u32) {
    s.record(
        q,
        &IssuedRecord {
            binding: who(i),
            chain: facts(i, sequence),
            live_until_ms,
        },
    )
    .await
    .unwrap();
}

pub async fn beat<S: RoomState>(s: &S, q: &str, i: u8, rule: &AdmissionRule) -> Option<Place> {
    s.beat(
        q,
        &BeatRecord {
            binding: who(i),
            ticket_id: chain(i),
        },
        rule,
    )
    .await
    .unwrap()
}

pub async fn one_chain_per_binding<S: RoomState>(s: S) {
    let q = queue("chain");
    let r = rule(T, 0.0);
    let a = match s.join(&q, &joining(1, T + 10_000), &r).await.unwrap() {
        Joined::New(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!((a.position, a.ahead, a.admitted), (1, 0, false));
    // Before its first ticket is recorded: the chain exists, no ticket yet.
    match s.join(&q, &joining(1, T + 10_000), &r).await.unwrap() {
        Joined::Existing(place) => {
            assert_eq!(place.position, 1);
            assert_eq!(place.chain, None);
        }
        other => panic!("{other:?}"),
    }
    record(&s, &q, 1, T + 10_000).await;
    match s.join(&q, &joining(1, T + 10_000), &r).await.unwrap() {
        Joined::Existing(place) => {
            assert_eq!(place.chain, Some(facts(1, 0)));
        }
        other => panic!("{other:?}"),
    }
    // The facts of a later ticket replace them (an admitted one included);
    // a late record of an earlier one does not roll them back.
    record_seq(&s, &q, 1, T + 10_000, 6).await;
    record_seq(&s, &q, 1, T + 10_000, 4).await;
    match s.join(&q, &joining(1, T + 10_000), &r).await.unwrap() {
        Joined::Existing(place) => {
            assert_eq!(place.chain, Some(facts(1, 6)));
            assert_eq!(place.live_until_ms, T + 10_000);
        }
        other => panic!("{other:?}"),
    }
    let b = join_recorded(&s, &q, 2, &r, T + 10_000).await;
    assert_eq!((b.position, b.ahead), (2, 1));
    // Heartbeats find the chain by binding and id, nothing else.
    assert_eq!(beat(&s, &q, 2, &r).await.unwrap().position, 2);
    let wrong_chain = s
        .beat(
            &q,
            &BeatRecord {
                binding: who(2),
                ticket_id: chain(9),
            },
            &r,
        )
        .await
        .unwrap();
    assert_eq!(wrong_chain, None);
    assert_eq!(beat(&s, &q, 7, &r).await, None);
    // A dead chain is replaced by a new place at the back.
    let late = rule(T + 10_000, 0.0);
    let again = join_recorded(&s, &q, 1, &late, T + 30_000).await;
    assert_eq!(again.position, 3);
    let stats = s.stats(&q, T + 10_000).await.unwrap();
    assert_eq!(stats.last_position, 3);
}

pub async fn waiting_capacity<S: RoomState>(s: S) {
    let q = queue("full");
    let r = rule(T, 0.0);
    let mut j = joining(1, T + 10_000);
    j.max_waiting = Some(1);
    assert!(matches!(s.join(&q, &j, &r).await.unwrap(), Joined::New(_)));
    j.binding = who(2);
    assert_eq!(s.join(&q, &j, &r).await.unwrap(), Joined::Full);
    j.binding = who(1);
    assert!(matches!(
        s.join(&q, &j, &r).await.unwrap(),
        Joined::Existing { .. }
    ));
}

pub async fn admission_at_the_rate<S: RoomState>(s: S) {
    let q = queue("rate");
    let r = rule(T, 1.0);
    let a = join_recorded(&s, &q, 1, &r, T + 60_000).await;
    assert!(a.admitted, "a new bucket holds one second of admissions");
    for i in 2..=5 {
        assert!(!join_recorded(&s, &q, i, &r, T + 60_000).await.admitted);
    }
    // Two seconds with no call at all: two admissions, in position order.
    let later = rule(T + 2_000, 1.0);
    let p5 = beat(&s, &q, 5, &later).await.unwrap();
    assert_eq!((p5.admitted, p5.ahead), (false, 1));
    assert!(beat(&s, &q, 2, &later).await.unwrap().admitted);
    assert!(beat(&s, &q, 3, &later).await.unwrap().admitted);
    assert!(!beat(&s, &q, 4, &later).await.unwrap().admitted);
    let stats = s.stats(&q, T + 2_000).await.unwrap();
    assert_eq!((stats.admitted_total, stats.admitted_alive), (3, 3));
    // Paused: nothing more, however long.
    let paused = rule(T + 30_000, 0.0);
    assert!(!beat(&s, &q, 4, &paused).await.unwrap().admitted);
}

pub async fn dead_places_are_skipped_for_free<S: RoomState>(s: S) {
    let q = queue("dead");
    let r = rule(T, 1.0);
    join_recorded(&s, &q, 1, &r, T + 60_000).await; // admitted at once
    join_recorded(&s, &q, 2, &r, T + 500).await; // will stop heart-beating
    join_recorded(&s, &q, 3, &r, T + 60_000).await;
    join_recorded(&s, &q, 4, &r, T + 60_000).await;
    // Paused while 2 dies.
    let paused = rule(T + 1_000, 0.0);
    assert_eq!(beat(&s, &q, 3, &paused).await.unwrap().ahead, 0);
    assert_eq!(beat(&s, &q, 2, &paused).await, None, "dead");
    // One token: 2's place is skipped, 3 is admitted, 4 is not.
    let one = rule(T + 2_000, 1.0);
    assert!(beat(&s, &q, 3, &one).await.unwrap().admitted);
    assert!(!beat(&s, &q, 4, &one).await.unwrap().admitted);
    assert_eq!(s.stats(&q, T + 2_000).await.unwrap().admitted_total, 2);
}

pub async fn the_cap_and_leaving<S: RoomState>(s: S) {
    let q = queue("cap");
    let mut r = rule(T, 100.0);
    r.max_admitted = Some(1);
    assert!(join_recorded(&s, &q, 1, &r, T + 5_000).await.admitted);
    assert!(!join_recorded(&s, &q, 2, &r, T + 60_000).await.admitted);
    r.now_ms = T + 1_000;
    assert!(!beat(&s, &q, 2, &r).await.unwrap().admitted, "capped");
    s.leave(&q, &who(1)).await.unwrap();
    assert!(beat(&s, &q, 2, &r).await.unwrap().admitted);
    assert_eq!(beat(&s, &q, 1, &r).await, None, "left");
    // An admitted chain whose deadline passes frees its slot.
    assert!(!join_recorded(&s, &q, 3, &r, T + 120_000).await.admitted);
    r.now_ms = T + 61_000;
    assert!(beat(&s, &q, 3, &r).await.unwrap().admitted);
}

pub async fn recording_extends_the_deadline<S: RoomState>(s: S) {
    let q = queue("record");
    let r = rule(T, 0.0);
    join_recorded(&s, &q, 1, &r, T + 1_000).await;
    record(&s, &q, 1, T + 5_000).await;
    assert!(beat(&s, &q, 1, &rule(T + 2_000, 0.0)).await.is_some());
    assert_eq!(beat(&s, &q, 1, &rule(T + 5_000, 0.0)).await, None);
}

pub async fn the_opening_shuffles<S: RoomState>(s: S) {
    let q = queue("opening");
    let opens = T + 60_000;
    let mut before = rule(T, 1.0);
    before.opens_at_ms = opens;
    for i in 1..=20u8 {
        before.now_ms = T + i64::from(i);
        let p = join_recorded(&s, &q, i, &before, opens + 60_000).await;
        assert_eq!((p.position, p.admitted), (0, false), "no place yet");
    }
    let mut after = before;
    after.now_ms = opens;
    after.per_sec = 0.0;
    let mut positions = Vec::new();
    for i in 1..=20u8 {
        positions.push(beat(&s, &q, i, &after).await.unwrap().position);
    }
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=20).collect::<Vec<u64>>());
    assert_ne!(positions, sorted, "drawn, not by arrival");
    let late = join_recorded(&s, &q, 21, &after, opens + 60_000).await;
    assert_eq!(late.position, 21);
    assert!(s.stats(&q, opens).await.unwrap().opened);
}

pub async fn sweep_and_isolation<S: RoomState>(s: S) {
    let (q1, q2) = (queue("sweep"), queue("other"));
    let r = rule(T, 0.0);
    for i in 1..=4 {
        join_recorded(&s, &q1, i, &r, T + 1_000).await;
    }
    assert_eq!(join_recorded(&s, &q2, 1, &r, T + 1_000).await.position, 1);
    assert_eq!(s.stats(&q1, T).await.unwrap().entries, 4);
    assert_eq!(s.sweep(&q1, T + 1_000).await.unwrap(), 4);
    let stats = s.stats(&q1, T + 1_000).await.unwrap();
    assert_eq!((stats.entries, stats.waiting), (0, 0));
    assert_eq!(s.stats(&q2, T).await.unwrap().entries, 1);
}

/// Generates one `#[tokio::test]` per check for the state `make` builds.
#[macro_export]
macro_rules! room_state_conformance {
    (ignore = $reason:literal, $make:expr) => {
        $crate::room_state_conformance!(@all (ignore = $reason) $make);
    };
    ($make:expr) => {
        $crate::room_state_conformance!(@all (cfg_attr(any(), ignore)) $make);
    };
    (@all ($attr:meta) $make:expr) => {
        $crate::room_state_conformance!(@tests ($attr) $make;
            one_chain_per_binding,
            waiting_capacity,
            admission_at_the_rate,
            dead_places_are_skipped_for_free,
            the_cap_and_leaving,
            recording_extends_the_deadline,
            the_opening_shuffles,
            sweep_and_isolation,
        );
    };
    (@tests ($attr:meta) $make:expr; $($check:ident,)*) => {
        $(
            #[tokio::test]
            #[$attr]
            async fn $check() {
                let state = ($make)().await;
                room_state_support::$check(state).await;
            }
        )*
    };
}
