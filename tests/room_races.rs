//! Races on the waiting room (threats T3b, T7): many joins with the same
//! session at once get one place; many joins with different sessions get
//! different places; a chain heart-beaten from many tasks at once (a clone
//! on several devices) forks into no more than one next ticket.
//!
//! Every scenario is a generic function over the room's replay store and
//! state, instantiated at the bottom of the file for memory, for Redis
//! (127.0.0.1:6379) and for the Redis Cluster of `.ci/redis-cluster start`
//! (127.0.0.1:7000-7005); the Redis ones are ignored unless
//! `--include-ignored`, and fail when their server is absent.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use queuegate::room::{MemoryRoomState, RoomError, RoomState, RoomTicket};
use queuegate::ticket::decode;
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented, ReplayStore,
    TicketId, WaitingRoom,
};
use tokio::sync::Barrier;

#[cfg(feature = "redis")]
mod cluster_support;

const T0: i64 = 1_795_608_000_000;
const TASKS: usize = 32;

type Room<S, R> = Arc<WaitingRoom<ManualClock, S, R>>;

/// A room over `store` and `state` for the queue `queue`, its clock at
/// `t0`, in which nobody is admitted during the test.
fn room_on<S: ReplayStore, R: RoomState>(
    store: Arc<S>,
    state: R,
    queue: &str,
    t0: i64,
) -> Room<S, R> {
    let clock = ManualClock::new(t0);
    let keys = Arc::new(KeyRing::new(1, &[9u8; 32]).unwrap());
    let issuer = Issuer::new(keys, Policy::new(queue), clock, store).unwrap();
    Arc::new(
        WaitingRoom::builder(issuer, state)
            // Nobody is admitted during the test: every place stays waiting.
            .admit_per_sec(0.001)
            .unwrap()
            .liveness(Duration::from_secs(30), Duration::from_secs(300))
            .unwrap()
            .build()
            .unwrap(),
    )
}

/// A queue name of this run's own (a shared Redis keeps every run's).
fn fresh_queue() -> String {
    format!("races-{}", TicketId::random())
}

async fn together<T: Send + 'static>(
    n: usize,
    task: impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let fut = task(i);
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// `new_room` makes a fresh room on a queue of its own (each call).
async fn one_session_joining_at_once_gets_one_place<S, R, F>(new_room: impl Fn() -> F)
where
    S: ReplayStore,
    R: RoomState,
    F: Future<Output = Room<S, R>>,
{
    for round in 0..10 {
        let room = new_room().await;
        let session = format!("session-{round}");
        let results: Vec<Result<RoomTicket, RoomError>> = together(TASKS, |_| {
            let room = room.clone();
            let session = session.clone();
            Box::pin(async move { room.join(session.as_bytes(), ClientTime::Absent).await })
        })
        .await;
        let mut chains = HashSet::new();
        for r in &results {
            match r {
                Ok(t) => {
                    chains.insert(t.ticket_id);
                }
                // The first join is still being processed: retry later.
                Err(RoomError::Busy) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(chains.len(), 1, "one chain for one session");
        let stats = room.stats().await.unwrap();
        // (The first place may be admitted at once: the bucket starts full.)
        assert_eq!(stats.waiting + stats.admitted_alive, 1, "{stats:?}");
        assert_eq!(stats.entries, 1, "{stats:?}");
        assert_eq!(stats.last_position, 1, "{stats:?}");
    }
}

async fn many_sessions_joining_at_once_get_distinct_places<S: ReplayStore, R: RoomState>(
    room: Room<S, R>,
) {
    let results = together(TASKS * 4, |i| {
        let room = room.clone();
        Box::pin(async move {
            room.join(format!("s-{i}").as_bytes(), ClientTime::Absent)
                .await
                .unwrap()
        })
    })
    .await;
    let positions: HashSet<u64> = results.iter().map(|t| t.position).collect();
    let ids: HashSet<_> = results.iter().map(|t| t.ticket_id).collect();
    assert_eq!(positions.len(), TASKS * 4, "no two sessions share a place");
    assert_eq!(ids.len(), TASKS * 4);
    assert_eq!(
        positions,
        (1..=(TASKS * 4) as u64).collect::<HashSet<_>>(),
        "places are 1..=n with no gap"
    );
}

async fn a_chain_heart_beaten_at_once_forks_into_one_next_ticket<S: ReplayStore, R: RoomState>(
    room: Room<S, R>,
) {
    let first = room.join(b"me", ClientTime::Absent).await.unwrap();
    let ticket = Arc::new(first.ticket);
    let results = together(TASKS, |_| {
        let room = room.clone();
        let ticket = ticket.clone();
        Box::pin(async move {
            let presented = Presented {
                ticket: Some(ticket.as_bytes()),
                binding: Some(b"me"),
                client_time: ClientTime::Absent,
            };
            room.heartbeat(&presented).await
        })
    })
    .await;
    let mut sequences = HashSet::new();
    for r in results {
        let t = r.expect("within the renewal grace, every copy gets the successor");
        let claims = decode(t.ticket.as_bytes()).unwrap().claims().unwrap();
        assert_eq!(claims.ticket_id, first.ticket_id);
        sequences.insert(claims.sequence);
    }
    assert_eq!(sequences, HashSet::from([1]), "the chain did not fork");
}

/// The scenarios on one backend: `$turn` is held while a test runs,
/// `$room` is an async block making a fresh room on a queue of its own.
macro_rules! room_races {
    ($name:ident, $turn:expr, $room:expr $(, #[$attr:meta])*) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            $(#[$attr])*
            async fn one_session_joining_at_once_gets_one_place() {
                let _turn = $turn;
                super::one_session_joining_at_once_gets_one_place(|| $room).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            $(#[$attr])*
            async fn many_sessions_joining_at_once_get_distinct_places() {
                let _turn = $turn;
                super::many_sessions_joining_at_once_get_distinct_places($room.await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
            $(#[$attr])*
            async fn a_chain_heart_beaten_at_once_forks_into_one_next_ticket() {
                let _turn = $turn;
                super::a_chain_heart_beaten_at_once_forks_into_one_next_ticket($room.await).await
            }
        }
    };
}

room_races!(memory, (), async {
    room_on(
        Arc::new(MemoryReplayStore::new()),
        MemoryRoomState::new(),
        &fresh_queue(),
        T0,
    )
});

/// Redis expires records on its own clock: the rooms' clocks start at the
/// wall-clock time. Records are left to expire (each run has its prefix).
#[cfg(feature = "redis")]
mod redis_rooms {
    use super::*;
    use queuegate::replay::RedisReplayStore;
    use queuegate::room::RedisRoomState;
    use queuegate::{Clock, SystemClock};

    pub async fn single() -> Room<RedisReplayStore, RedisRoomState> {
        let store = RedisReplayStore::builder("redis://127.0.0.1:6379/")
            .prefix(&format!("qg-room-races-{}", TicketId::random()))
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379");
        let state = RedisRoomState::new(&store);
        room_on(Arc::new(store), state, &fresh_queue(), SystemClock.now_ms())
    }

    pub async fn cluster() -> Room<RedisReplayStore, RedisRoomState> {
        let store = RedisReplayStore::cluster_builder(&cluster_support::SEEDS)
            .prefix(&format!("qg-room-races-{}", TicketId::random()))
            .connect()
            .await
            .expect(cluster_support::NEEDED);
        assert!(store.is_cluster());
        let state = RedisRoomState::new(&store);
        room_on(Arc::new(store), state, &fresh_queue(), SystemClock.now_ms())
    }
}

#[cfg(feature = "redis")]
room_races!(redis, (), redis_rooms::single(), #[ignore = "needs Redis"]);

#[cfg(feature = "redis")]
room_races!(
    redis_cluster,
    {
        // No failover test runs meanwhile.
        let turn = cluster_support::shared_turn();
        cluster_support::wait_whole(Duration::from_secs(20));
        turn
    },
    redis_rooms::cluster(),
    #[ignore = "needs Redis Cluster"]
);
