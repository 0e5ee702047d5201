//! Heartbeat cost against the position in a queue of 1,000,000 waiting
//! people, and the in-memory state's memory per waiting person.
//!
//! `cargo bench --bench room`. The queue is built once: a million joins
//! before the opening (each with its first ticket's facts recorded, as the
//! room does), then the opening places them all. Admission is paused
//! and the clock stands still, so every measured heartbeat finds the same
//! queue. Besides criterion's figures the bench prints its own quick
//! measurement of both positions and their ratio (1 means the cost does not
//! depend on the position), the resident memory per waiting person (RSS
//! from `/proc/self/statm`, 4 KiB pages), and, in a second queue, what the
//! heartbeats right after 100,000 of 200,000 people dropped out at once
//! cost (the longest single call holds the state's lock the longest).
//!
//! A second target, `room_whole_heartbeat`, times the whole
//! `WaitingRoom::heartbeat` (the issuer's check of the presented ticket,
//! the state's beat, the renewal: store advance, sign, encode, record) in
//! two rooms built alike, one with 10,000 and one with 1,000,000 people
//! waiting, for a person near the front (place 10) and the last one, and for
//! a crowd taking turns (all 10,000 of the small room; every 10th of the
//! large one), so that each heartbeat finds its person's state cold, as in
//! a real crowd. Each heartbeat presents the ticket the previous one
//! minted, with a client time, as the page's script does. It prints
//! interleaved rounds (thread CPU time, `benches/common`; the client's
//! tickets copied into a hot batch untimed, so only the server's side is
//! timed) and the per-round ratios 1M ÷ 10k (issue 15: ≤ 1.3) with an A/A
//! control (places 10 and 11 of the 10k room); criterion's figures follow
//! (there the crowds' tickets are read cold from the bench's own memory).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{interleaved, ratios, spread, ThreadCpuTime};
use criterion::{criterion_group, criterion_main, Criterion};
use queuegate::room::schedule::shuffle;
use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, MemoryRoomState, Place,
    RoomState,
};
use queuegate::ticket::{Binding, TicketId};
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Presented, RoomTicket, WaitingRoom,
};

const PEOPLE: u32 = 1_000_000;
const T: i64 = 1_700_000_000_000;
const OPENS: i64 = T + 1_000;
/// The opening shuffle's seed (fixed, so the bench knows who got which place).
const SEED: u64 = 0x5EED;
const QUEUE: &str = "bench";

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random-looking 16 bytes for person `i` (bindings and ids are keyed
/// hashes or random in real use).
fn bytes(i: u32, salt: u64) -> [u8; 16] {
    let a = mix(u64::from(i) ^ salt);
    let b = mix(a);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

fn who(i: u32) -> Binding {
    Binding(bytes(i, 1))
}

fn chain(i: u32) -> TicketId {
    TicketId(bytes(i, 2))
}

/// What the room records for person `i`'s first ticket.
fn facts(i: u32) -> ChainFacts {
    ChainFacts {
        ticket_id: chain(i),
        sequence: 0,
        joined_at_ms: T,
        expires_at_ms: T + 43_200_000,
        admitted_from_ms: None,
        epoch: Some(11),
    }
}

fn rule(now_ms: i64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec: 0.0, // paused: the queue stays as built
        burst: 1.0,
        max_admitted: None,
        opens_at_ms: OPENS,
        shuffle_seed: SEED,
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

struct Setup {
    rt: tokio::runtime::Runtime,
    state: MemoryRoomState,
    /// Person at position `p` is `by_position[p - 1]`.
    by_position: Vec<u32>,
}

impl Setup {
    fn beat(&self, person: u32) -> Option<Place> {
        let record = BeatRecord {
            binding: who(person),
            ticket_id: chain(person),
        };
        self.rt
            .block_on(self.state.beat(QUEUE, &record, &rule(OPENS)))
            .expect("memory state")
    }

    fn at(&self, position: u64) -> u32 {
        self.by_position[position as usize - 1]
    }
}

fn build() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // The opening order, computed the way the state draws it (join order
    // shuffled with the rule's seed); checked against the state below.
    let mut by_position: Vec<u32> = (0..PEOPLE).collect();
    shuffle(&mut by_position, SEED);
    let rss_before = rss_bytes();
    let state = MemoryRoomState::new();
    let started = Instant::now();
    let live_until_ms = T + 3_600_000;
    let before_opening = rule(T);
    rt.block_on(async {
        for i in 0..PEOPLE {
            let join = JoinRecord {
                binding: who(i),
                live_until_ms,
                max_waiting: None,
            };
            state.join(QUEUE, &join, &before_opening).await.unwrap();
            let issued = IssuedRecord {
                binding: who(i),
                chain: facts(i),
                live_until_ms,
            };
            state.record(QUEUE, &issued).await.unwrap();
        }
    });
    let setup = Setup {
        rt,
        state,
        by_position,
    };
    // The first call after the opening places everyone.
    let first = setup.beat(setup.at(1)).expect("placed");
    assert_eq!((first.position, first.ahead), (1, 0));
    let rss_after = rss_bytes();
    let stats = setup.rt.block_on(setup.state.stats(QUEUE, OPENS)).unwrap();
    assert_eq!(stats.waiting, u64::from(PEOPLE));
    println!(
        "room: built a queue of {PEOPLE} waiting in {:.1} s; RSS grew by {:.1} MiB = {} bytes per waiting person",
        started.elapsed().as_secs_f64(),
        (rss_after.saturating_sub(rss_before)) as f64 / (1024.0 * 1024.0),
        rss_after.saturating_sub(rss_before) / u64::from(PEOPLE),
    );
    setup
}

/// The longest single call: a heartbeat just after `DROPPED` of twice as
/// many waiting people stopped heart-beating at the same moment (that call
/// drops them all). Printed once; a separate queue, so the main one is
/// untouched.
fn mass_drop_out(setup: &Setup) {
    const DROPPED: u32 = 100_000;
    const MASS: &str = "mass";
    let survivors_until = T + 3_600_000;
    let dead_at = OPENS + 10;
    let state = &setup.state;
    setup.rt.block_on(async {
        for i in PEOPLE..PEOPLE + 2 * DROPPED {
            // Every other one stops heart-beating.
            let live_until_ms = if i % 2 == 1 { dead_at } else { survivors_until };
            let join = JoinRecord {
                binding: who(i),
                live_until_ms,
                max_waiting: None,
            };
            state.join(MASS, &join, &rule(T)).await.unwrap();
            let issued = IssuedRecord {
                binding: who(i),
                chain: facts(i),
                live_until_ms,
            };
            state.record(MASS, &issued).await.unwrap();
        }
    });
    let survivor = BeatRecord {
        binding: who(PEOPLE),
        ticket_id: chain(PEOPLE),
    };
    // The opening, everyone still live.
    let opening = setup.rt.block_on(state.beat(MASS, &survivor, &rule(OPENS)));
    opening.unwrap().expect("placed");
    // Heartbeats of the survivor until every dead one is dropped (each call
    // drops a bounded batch; bounded here too, in case it never finishes).
    let (mut calls, mut longest, mut total) = (0u32, Duration::ZERO, Duration::ZERO);
    let mut held = u64::MAX;
    while held > u64::from(DROPPED) && calls < 1_000 {
        let started = Instant::now();
        let place = setup
            .rt
            .block_on(state.beat(MASS, &survivor, &rule(dead_at)))
            .unwrap()
            .expect("live");
        let took = started.elapsed();
        black_box(place);
        longest = longest.max(took);
        total += took;
        calls += 1;
        held = setup
            .rt
            .block_on(state.stats(MASS, dead_at))
            .unwrap()
            .entries;
    }
    println!(
        "room: after {DROPPED} of {} waiting dropped out at once: {calls} heartbeat(s) to drop them all, {total:?} in all, the longest {longest:?}",
        2 * DROPPED,
    );
}

/// Mean time of one heartbeat for `person`, over at most 2 s or 100,000
/// calls.
fn quick_mean(setup: &Setup, person: u32) -> Duration {
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < 100_000 && (calls < 3 || started.elapsed() < Duration::from_secs(2)) {
        black_box(setup.beat(person));
        calls += 1;
    }
    started.elapsed() / calls
}

fn heartbeat_by_position(c: &mut Criterion) {
    let setup = build();
    let near_pos = 10u64;
    let far_pos = u64::from(PEOPLE - 1);
    let (near, far) = (setup.at(near_pos), setup.at(far_pos));
    let p = setup.beat(near).expect("waiting");
    assert_eq!((p.position, p.ahead), (near_pos, near_pos - 1));
    let p = setup.beat(far).expect("waiting");
    assert_eq!((p.position, p.ahead), (far_pos, far_pos - 1));

    let near_mean = quick_mean(&setup, near);
    let far_mean = quick_mean(&setup, far);
    println!(
        "room: heartbeat at position {near_pos}: {near_mean:?}; at position {far_pos}: {far_mean:?}; ratio far/near = {:.2}",
        far_mean.as_secs_f64() / near_mean.as_secs_f64()
    );

    let mut group = c.benchmark_group("room_heartbeat_1M_waiting");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("position_10", |b| b.iter(|| black_box(setup.beat(near))));
    group.bench_function("position_999999", |b| b.iter(|| black_box(setup.beat(far))));
    group.finish();
    mass_drop_out(&setup);
}

type Room = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState>;

/// A person's session id and latest ticket.
type Person = (Vec<u8>, RoomTicket);

/// A room of `people` waiting (paused, open, the clock standing still),
/// joined through `WaitingRoom::join`; returns it with the sessions and
/// tickets of the people at places 10, 11 and the last place, and of every
/// `stride`-th person (the crowd whose heartbeats take turns).
fn whole_room(
    rt: &tokio::runtime::Runtime,
    people: u32,
    stride: u32,
) -> (Room, [Person; 3], Vec<Person>) {
    let clock = ManualClock::new(T);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        queuegate::Policy::new(QUEUE),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .paused(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut kept = Vec::new();
    let mut crowd = Vec::new();
    rt.block_on(async {
        for i in 1..=people {
            let session = bytes(i, 3).to_vec();
            let t = room
                .join(&session, ClientTime::Millis(T))
                .await
                .expect("join");
            assert_eq!(t.position, u64::from(i));
            let single = i == 10 || i == 11 || i == people;
            if i % stride == 0 && !single {
                crowd.push((session.clone(), t.clone()));
            }
            if single {
                kept.push((session, t));
            }
        }
    });
    println!(
        "room_whole_heartbeat: joined {people} through the room in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let far = kept.pop().unwrap();
    let next = kept.pop().unwrap();
    let near = kept.pop().unwrap();
    (room, [near, next, far], crowd)
}

/// One heartbeat of `who`, presenting its latest ticket and keeping the
/// next one.
fn whole_beat(rt: &tokio::runtime::Runtime, room: &Room, who: &mut Person) {
    let next = rt
        .block_on(room.heartbeat(&Presented {
            ticket: Some(who.1.ticket.as_bytes()),
            binding: Some(&who.0),
            client_time: ClientTime::Millis(T),
        }))
        .expect("heartbeat");
    debug_assert_eq!(next.position, who.1.position);
    who.1 = black_box(next);
}

fn whole_heartbeat_by_crowd(c: &mut Criterion<ThreadCpuTime>) {
    const SMALL: u32 = 10_000;
    const BEATS: usize = 1_000;
    const ROUNDS: usize = 60;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // The crowds: all 10,000 of the small room, every 10th of the large
    // one (100,000 people spread over the whole queue), beating in turn, so
    // each heartbeat finds its person's state cold, as in a real crowd.
    let (small, [small_near, small_next, small_far], small_crowd) = whole_room(&rt, SMALL, 1);
    let (large, [large_near, _, large_far], large_crowd) = whole_room(&rt, PEOPLE, 10);
    // The A/A control: places 10 and 11 of the 10k room do the same work.
    let rooms = [&small, &small, &small, &large, &large, &small, &large];
    let mut people: [Vec<Person>; 7] = [
        vec![small_near],
        vec![small_next],
        vec![small_far],
        vec![large_near],
        vec![large_far],
        small_crowd,
        large_crowd,
    ];
    let mut turn = [0usize; 7];
    let names = [
        "10k_place_10",
        "10k_place_11",
        "10k_last",
        "1M_place_10",
        "1M_last",
        "10k_crowd_in_turn",
        "1M_crowd_in_turn",
    ];
    for (k, who) in people.iter_mut().enumerate() {
        let who = &mut who[0];
        let before = who.1.position;
        whole_beat(&rt, rooms[k], who);
        assert_eq!(who.1.position, before, "{}", names[k]);
    }
    // The interleaved rounds time the server's side only: before each
    // round (untimed) the next people's sessions and tickets are copied into
    // a small batch, hot in cache as a request's bytes are when it has just
    // been read; after it, their new tickets are put back.
    let shared = std::cell::RefCell::new((&mut people, &mut turn, vec![None; names.len()]));
    let per_beat = interleaved(
        names.len(),
        ROUNDS,
        |k| {
            let mut guard = shared.borrow_mut();
            let (people, turn, pending) = &mut *guard;
            let crowd = &mut people[k];
            if let Some((from, done)) = pending[k].take() {
                let done: Vec<Person> = done;
                for (j, p) in done.into_iter().enumerate() {
                    let at = (from + j) % crowd.len();
                    crowd[at] = p;
                }
            }
            let n = BEATS.min(crowd.len());
            let from = turn[k] % crowd.len();
            turn[k] += n;
            let batch: Vec<Person> = (0..n)
                .map(|j| crowd[(from + j) % crowd.len()].clone())
                .collect();
            (from, batch)
        },
        |k, (from, mut batch): (usize, Vec<Person>)| {
            let n = batch.len();
            for j in 0..BEATS {
                whole_beat(&rt, rooms[k], &mut batch[j % n]);
            }
            shared.borrow_mut().2[k] = Some((from, batch));
            BEATS as u64
        },
    );
    // Put the last batches back before criterion's turn.
    {
        let mut guard = shared.borrow_mut();
        let (people, _, pending) = &mut *guard;
        for (k, slot) in pending.iter_mut().enumerate() {
            if let Some((from, done)) = slot.take() {
                let crowd = &mut people[k];
                for (j, p) in done.into_iter().enumerate() {
                    let at = (from + j) % crowd.len();
                    crowd[at] = p;
                }
            }
        }
    }
    drop(shared);
    let mut beat_next = |k: usize| {
        let crowd = &mut people[k];
        let i = turn[k] % crowd.len();
        turn[k] += 1;
        whole_beat(&rt, rooms[k], &mut crowd[i]);
    };
    for (k, name) in names.iter().enumerate() {
        let (lo, mid, hi) = spread(per_beat[k].clone());
        println!(
            "room_whole_heartbeat/{name}: median {mid:.0} CPU ns per heartbeat (p10–p90 {lo:.0}–{hi:.0}), {ROUNDS} interleaved rounds of {BEATS}"
        );
    }
    for (what, a, b) in [
        ("1M ÷ 10k, place 10", 3, 0),
        ("1M ÷ 10k, last place", 4, 2),
        ("A/A: 10k place 11 ÷ 10k place 10", 1, 0),
        ("1M: last ÷ place 10", 4, 3),
        ("1M ÷ 10k, crowds in turn", 6, 5),
    ] {
        let (lo, mid, hi) = spread(ratios(&per_beat[a], &per_beat[b]));
        println!("room_whole_heartbeat: {what} = {mid:.3} (p10–p90 {lo:.3}–{hi:.3})");
    }

    let mut group = c.benchmark_group("room_whole_heartbeat");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (k, name) in names.iter().enumerate() {
        if k == 1 {
            continue;
        }
        group.bench_function(*name, |b| b.iter(|| beat_next(k)));
    }
    group.finish();
}

criterion_group!(benches, heartbeat_by_position);
criterion_group! {
    name = whole;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = whole_heartbeat_by_crowd
}
criterion_main!(benches, whole);
