//! A primary of the Redis Cluster killed (`SIGKILL`) while people join,
//! heart-beat and book (feature `redis`; ignored: needs the Cluster of
//! `.ci/redis-cluster start` on 127.0.0.1:7000-7005, and fails when it is
//! absent or not whole).
//!
//! One room instance (a [`WaitingRoom`] and a single-use booking
//! [`Verifier`] on one [`RedisReplayStore`] and [`RedisRoomState`]) serves
//! people who join, heart-beat until admitted, then book, presenting each
//! booking several times at once and retrying it until it is answered for
//! good, and who keep presenting it after they booked. Mid-run the primary
//! holding the queue's own slot (and a third of the replay shards) is
//! killed; its replica is promoted by the Cluster itself (node timeout
//! 2 s). The promoted primary has no replica, so for a while no hold on its
//! shards can be confirmed (`WAIT 1`): those bookings fail closed. Then the
//! killed node is started again on its old `nodes.conf` (it rejoins as the
//! promoted node's replica) and the run goes on, in all for longer than a
//! single-use hold lasts, so a hold left behind by a commit the kill cut
//! off has expired and been retried. It asserts:
//!
//! - no ticket's booking handler ran twice (counted per chain);
//! - every answer is served or one of the refusals a failover may cause
//!   (`store_unavailable`, `replayed`, `in_progress`, `busy`, `ended`);
//! - service recovers on the same instance, never restarted: everyone has
//!   booked in the end.
//!
//! The Cluster is whole again at the end (3 primaries with a replica each,
//! every node `cluster_state:ok`), also when the test fails. The test holds
//! the Cluster's exclusive turn (`tests/cluster_support`): no other
//! failover test, and no test needing the Cluster whole, runs meanwhile.
#![cfg(feature = "redis")]

mod cluster_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queuegate::replay::RedisReplayStore;
use queuegate::room::{RedisRoomState, RoomError};
use queuegate::ticket::QueueId;
use queuegate::{
    ClientTime, Issuer, KeyRing, Policy, Presented, ReplayMode, Settlement, SystemClock, TicketId,
    Verifier, WaitingRoom,
};

use cluster_support::{Revive, NEEDED, SEEDS};

/// People in the room.
const PEOPLE: usize = 60;
/// How many copies of a booking are presented at once.
const COPIES: usize = 3;
/// How long the run goes on with the promoted primary alone (no replica).
const ORPHANED: Duration = Duration::from_secs(6);
/// How long the run goes on after the kill: longer than a single-use hold
/// (15 s by default), so a hold whose commit the kill cut off expires and
/// its booking is retried within the run.
const AFTER_KILL: Duration = Duration::from_secs(22);

type Room = WaitingRoom<SystemClock, RedisReplayStore, RedisRoomState>;

/// What the run saw.
#[derive(Default)]
struct Seen {
    /// Booking handler runs, per chain.
    handled: HashMap<TicketId, u32>,
    /// Answers by kind of request and code (`ok` when served).
    answers: BTreeMap<(&'static str, String), u64>,
    /// Answers no failover explains.
    unexpected: Vec<String>,
    /// Per person, their latest answers (what a person who never booked
    /// was told, for the failure message).
    last: HashMap<usize, Vec<String>>,
    /// Refusals more than 3 s after the Cluster was whole again, by
    /// request and code.
    late: BTreeMap<(&'static str, String), u64>,
    /// The people who booked.
    done: std::collections::HashSet<usize>,
}

struct Run {
    room: Room,
    booking: Verifier<SystemClock, RedisReplayStore>,
    seen: Mutex<Seen>,
    booked: AtomicUsize,
    stop: AtomicBool,
    killed: Mutex<Option<Instant>>,
    /// When the Cluster was whole again.
    recovered: Mutex<Option<Instant>>,
}

impl Run {
    fn note(&self, what: &'static str, code: &str, allowed: &[&str]) {
        self.note_of(usize::MAX, what, code, allowed);
    }

    fn note_of(&self, n: usize, what: &'static str, code: &str, allowed: &[&str]) {
        let late = self
            .recovered
            .lock()
            .unwrap()
            .is_some_and(|k| k.elapsed() > Duration::from_secs(3));
        let mut seen = self.seen.lock().unwrap();
        if late && !code.starts_with("ok") {
            *seen.late.entry((what, code.to_owned())).or_default() += 1;
        }
        if n != usize::MAX {
            let last = seen.last.entry(n).or_default();
            if last.len() >= 6 {
                last.remove(0);
            }
            last.push(format!("{what}:{code}"));
        }
        *seen.answers.entry((what, code.to_owned())).or_default() += 1;
        if code != "ok" && !allowed.contains(&code) {
            seen.unexpected.push(format!("{what}: {code}"));
        }
    }

    /// One presentation of a booking: the verifier's check (the hold, which
    /// a replica must confirm), the handler, the commit. Whether the
    /// handler ran.
    async fn book(&self, n: usize, ticket: &str, binding: &[u8]) -> bool {
        let presented = Presented {
            ticket: Some(ticket.as_bytes()),
            binding: Some(binding),
            client_time: ClientTime::Absent,
        };
        match self.booking.verify(&presented).await {
            Ok(v) => {
                *self
                    .seen
                    .lock()
                    .unwrap()
                    .handled
                    .entry(v.claims.ticket_id)
                    .or_default() += 1;
                self.note_of(n, "book", "ok", &[]);
                // The handler's own work: a commit may be cut off by the kill.
                tokio::time::sleep(Duration::from_millis(5)).await;
                // A failed commit leaves the hold: the layer does the same.
                let _ = self
                    .booking
                    .settle(&v, Settlement::Commit)
                    .expect("a single-use hold")
                    .await;
                true
            }
            Err(r) => {
                let code = r.code().as_str();
                self.note(
                    "book",
                    code,
                    &["store_unavailable", "replayed", "in_progress"],
                );
                false
            }
        }
    }

    /// One person: joins, heart-beats, books once admitted (`COPIES` at
    /// once, again until one is served), then keeps heart-beating and
    /// presenting the booking (a client retrying a lost answer).
    async fn person(self: Arc<Self>, n: usize) {
        let binding = format!("person-{n}-{}", TicketId::random());
        let binding = binding.as_bytes();
        let mut current: Option<(String, bool)> = None;
        let mut booked = false;
        while !self.stop.load(Ordering::Relaxed) {
            match &current {
                None => match self.room.join(binding, ClientTime::Absent).await {
                    Ok(t) => {
                        self.note_of(n, "join", "ok", &[]);
                        current = Some((t.ticket, t.admitted));
                    }
                    Err(e) => self.note_of(n, "join", e.code(), &["store_unavailable", "busy"]),
                },
                Some((ticket, admitted)) => {
                    if *admitted {
                        let copies = (0..COPIES).map(|_| self.book(n, ticket, binding));
                        let served = futures_util::future::join_all(copies).await;
                        if served.contains(&true) && !booked {
                            booked = true;
                            self.seen.lock().unwrap().done.insert(n);
                            self.booked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let presented = Presented {
                        ticket: Some(ticket.as_bytes()),
                        binding: Some(binding),
                        client_time: ClientTime::Absent,
                    };
                    match self.room.heartbeat(&presented).await {
                        Ok(t) => {
                            self.note_of(
                                n,
                                "beat",
                                if t.admitted { "ok-admitted" } else { "ok" },
                                &["ok-admitted"],
                            );
                            current = Some((t.ticket, t.admitted));
                        }
                        Err(e) => {
                            let code = e.code();
                            self.note_of(
                                n,
                                "beat",
                                code,
                                &["store_unavailable", "replayed", "busy", "ended"],
                            );
                            // A chain the store can no longer vouch for (or
                            // that left): the client joins again.
                            if matches!(e, RoomError::Ended) || code == "replayed" {
                                current = None;
                            }
                        }
                    }
                }
            }
            let pause = 60 + (n as u64 * 7) % 50;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// The primary holding `key`.
fn primary_holding(key: &str) -> u16 {
    cluster_support::primaries()
        .into_iter()
        .find(|p| cluster_support::cli(*p, &["exists", key]).is_some_and(|t| t.trim() == "1"))
        .unwrap_or_else(|| panic!("no primary holds {key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Redis Cluster"]
async fn a_primary_killed_mid_booking_never_admits_a_ticket_twice() {
    let _turn = cluster_support::topology_turn();
    cluster_support::wait_whole(Duration::from_secs(30));
    let prefix = format!("qgt-kill-{}", TicketId::random());
    let queue = format!("kill-{}", TicketId::random());
    let store = RedisReplayStore::cluster_builder(&SEEDS)
        .prefix(&prefix)
        .replica_wait(Duration::from_millis(300))
        .connect()
        .await
        .expect(NEEDED);
    let state = RedisRoomState::new(&store);
    let store = Arc::new(store);
    let keys = Arc::new(KeyRing::new(1, &[0x4b; 32]).unwrap());
    let issuer = Issuer::new(
        keys.clone(),
        Policy::new(&queue),
        SystemClock,
        store.clone(),
    )
    .unwrap();
    let room = WaitingRoom::builder(issuer, state.clone())
        // Admissions spread over about 3 s: the kill finds people waiting,
        // admitted and booked.
        .admit_per_sec(20.0)
        .unwrap()
        .liveness(Duration::from_secs(30), Duration::from_secs(120))
        .unwrap()
        .build()
        .unwrap();
    let booking = Verifier::new(
        keys,
        Policy::new(&queue)
            .scope("reserve")
            .replay(ReplayMode::SingleUse),
        SystemClock,
        store.clone(),
    )
    .unwrap();
    let run = Arc::new(Run {
        room,
        booking,
        seen: Mutex::default(),
        booked: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        killed: Mutex::new(None),
        recovered: Mutex::new(None),
    });
    let people: Vec<_> = (0..PEOPLE)
        .map(|n| tokio::spawn(run.clone().person(n)))
        .collect();

    // Kill the primary of the queue's slot once bookings are under way.
    let started = Instant::now();
    while run.booked.load(Ordering::Relaxed) < PEOPLE / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nobody booked before the kill: {:?}",
            run.seen.lock().unwrap().answers
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let meta = format!("{prefix}:room:{{{}}}:meta", QueueId::from_name(&queue));
    let victim = primary_holding(&meta);
    let heir = cluster_support::replica_of(victim);
    let booked_at_kill = run.booked.load(Ordering::Relaxed);
    let revive = Revive(victim);
    cluster_support::kill(victim);
    let killed = Instant::now();
    *run.killed.lock().unwrap() = Some(killed);

    // The Cluster promotes the replica by itself.
    while cluster_support::role(heir).as_deref() != Some("master") {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{heir} was not promoted after {victim} was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_after = killed.elapsed();
    // The promoted primary has no replica: single-use holds on its shards
    // cannot be confirmed (`WAIT 1`), and are refused, until the killed
    // node is back as its replica. Run like that for a while.
    tokio::time::sleep(ORPHANED).await;
    let victim_back = tokio::task::spawn_blocking(move || {
        cluster_support::restart(victim);
        cluster_support::wait_whole(Duration::from_secs(60));
    });
    victim_back.await.expect("the Cluster is whole again");
    let whole_after = killed.elapsed();
    *run.recovered.lock().unwrap() = Some(Instant::now());

    // Run on past a hold's life, and until everyone has booked.
    let deadline = Instant::now() + Duration::from_secs(40);
    while killed.elapsed() < AFTER_KILL || run.booked.load(Ordering::Relaxed) < PEOPLE {
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop.store(true, Ordering::Relaxed);
    for p in people {
        p.await.expect("a person's task");
    }

    // The Cluster whole again before anything is asserted.
    drop(revive);
    let seen = std::mem::take(&mut *run.seen.lock().unwrap());
    let booked = run.booked.load(Ordering::Relaxed);
    println!(
        "killed {victim} with {booked_at_kill}/{PEOPLE} booked; {heir} promoted after {promoted_after:?}, whole again after {whole_after:?}; {} chains booked; answers {:?}; refusals 3 s after {:?}",
        seen.handled.len(),
        seen.answers,
        seen.late,
    );
    let _ = state.clear(&queue).await;
    let _ = store.clear().await;

    let twice: Vec<_> = seen.handled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "booking handlers ran twice: {twice:?}");
    assert!(
        seen.unexpected.is_empty(),
        "answers no failover explains: {:?}",
        seen.unexpected
    );
    let stuck: Vec<_> = seen
        .last
        .iter()
        .filter(|(n, _)| !seen.done.contains(n))
        .collect();
    assert_eq!(
        booked, PEOPLE,
        "the room did not recover: {booked} of {PEOPLE} booked within 60 s of the kill; the others' latest answers: {stuck:?}"
    );
    // The kill did something: some requests failed closed.
    assert!(
        seen.answers
            .keys()
            .any(|(_, code)| code == "store_unavailable" || code == "replayed"),
        "the kill went unnoticed: {:?}",
        seen.answers
    );
}
