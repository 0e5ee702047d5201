//! Races on the waiting room (threats T3b, T7): many joins with the same
//! session at once get one place; many joins with different sessions get
//! different places; a chain heart-beaten from many tasks at once (a clone
//! on several devices) forks into no more than one next ticket.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use queuegate::room::{MemoryRoomState, RoomError, RoomTicket};
use queuegate::ticket::decode;
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented, WaitingRoom,
};
use tokio::sync::Barrier;

const T0: i64 = 1_795_608_000_000;
const TASKS: usize = 32;

type Room = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState>;

fn room() -> Arc<Room> {
    let clock = ManualClock::new(T0);
    let keys = Arc::new(KeyRing::new(1, &[9u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("races"),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    Arc::new(
        WaitingRoom::builder(issuer, MemoryRoomState::new())
            // Nobody is admitted during the test: every place stays waiting.
            .admit_per_sec(0.001)
            .unwrap()
            .liveness(Duration::from_secs(30), Duration::from_secs(300))
            .unwrap()
            .build()
            .unwrap(),
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_session_joining_at_once_gets_one_place() {
    for round in 0..10 {
        let room = room();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn many_sessions_joining_at_once_get_distinct_places() {
    let room = room();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_chain_heart_beaten_at_once_forks_into_one_next_ticket() {
    let room = room();
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
