//! The operator's amnesty over a store outage: an outage longer than the
//! deadlines near the front, an amnesty covering it, and the people near
//! the front keep their places — in the verifier (`offline_resumed`) and
//! in the room state (which drops dead places). Without the amnesty the
//! same outage ends them, so the test can fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use queuegate::replay::{Advance, AdvanceRequest, ReplayCheck, ReplayVerdict, SettleHold};
use queuegate::room::{MemoryRoomState, RoomError, RoomTicket, Setting};
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented, RejectionCode,
    ReplayStore, StoreError, WaitingRoom,
};

const T0: i64 = 1_700_000_000_000;

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The memory store, failing every call while `down` is set (an outage).
struct FlakyStore {
    inner: MemoryReplayStore,
    down: AtomicBool,
}

impl ReplayStore for FlakyStore {
    type CheckFuture = Boxed<ReplayVerdict>;
    type AdvanceFuture = Boxed<Advance>;
    type SettleFuture = Boxed<()>;

    fn epoch(&self) -> u32 {
        self.inner.epoch()
    }

    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Timeout) });
        }
        Box::pin(self.inner.check(check))
    }

    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Timeout) });
        }
        Box::pin(self.inner.advance(request))
    }

    fn settle(&self, hold: &SettleHold) -> Self::SettleFuture {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Timeout) });
        }
        Box::pin(self.inner.settle(hold))
    }
}

type Room = WaitingRoom<ManualClock, Arc<FlakyStore>, MemoryRoomState>;

fn room() -> (Room, ManualClock, Arc<FlakyStore>) {
    let clock = ManualClock::new(T0);
    let store = Arc::new(FlakyStore {
        inner: MemoryReplayStore::new(),
        down: AtomicBool::new(false),
    });
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("amnesty"),
        clock.clone(),
        Arc::new(store.clone()),
    )
    .unwrap();
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(1.0)
        .unwrap()
        // Nobody admitted: everyone stays in line, the front on 10 s.
        .max_admitted(0)
        .liveness(Duration::from_secs(10), Duration::from_secs(300))
        .unwrap()
        .build()
        .unwrap();
    (room, clock, store)
}

fn who(i: usize) -> String {
    format!("person-{i}")
}

async fn beat(room: &Room, i: usize, t: &RoomTicket) -> Result<RoomTicket, RoomError> {
    let who = who(i);
    room.heartbeat(&Presented {
        ticket: Some(t.ticket.as_bytes()),
        binding: Some(who.as_bytes()),
        client_time: ClientTime::Absent,
    })
    .await
}

fn code(r: &Result<RoomTicket, RoomError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

/// 60 people join; the store fails for 25 s (two and a half times the front's
/// 10 s deadline) while the far end keeps heart-beating; then the front
/// comes back with the tickets it held. Returns the front's answers and
/// the people counted waiting after the outage.
async fn outage(amnesty: bool) -> (Room, ManualClock, Vec<Result<RoomTicket, RoomError>>, u64) {
    let (room, clock, store) = room();
    let mut tickets = Vec::new();
    for i in 0..60 {
        tickets.push(
            room.join(who(i).as_bytes(), ClientTime::Absent)
                .await
                .unwrap(),
        );
    }
    let front_deadline = tickets[0].live_until_ms;
    assert_eq!(
        front_deadline,
        T0 + 10_000,
        "the front holds the near deadline"
    );
    assert!(
        tickets[59].live_until_ms > T0 + 25_000,
        "the far end a longer one"
    );

    clock.advance(Duration::from_secs(1));
    store.down.store(true, Ordering::SeqCst);
    if amnesty {
        // The operator, alerted by the store_unavailable wave: from the
        // outage's start, two minutes on.
        room.declare_amnesty(T0, T0 + 120_000).unwrap();
    }
    // The far end heart-beats through the outage: the state runs (and
    // would drop the dead), the store refuses the renewal.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(5));
        let r = beat(&room, 59, &tickets[59]).await;
        assert_eq!(code(&r), "store_unavailable");
    }
    store.down.store(false, Ordering::SeqCst);
    let waiting = room.stats().await.unwrap().waiting;
    let front = {
        let mut out = Vec::new();
        for (i, t) in tickets.iter().enumerate().take(5) {
            out.push(beat(&room, i, t).await);
        }
        out
    };
    (room, clock, front, waiting)
}

#[tokio::test]
async fn without_an_amnesty_the_outage_ends_the_front() {
    let (_, _, front, waiting) = outage(false).await;
    for r in &front {
        assert!(
            matches!(r, Err(RoomError::Rejected(x)) if x.code() == RejectionCode::OfflineResumed),
            "{:?}",
            code(r)
        );
    }
    assert!(waiting < 60, "the state dropped the front: {waiting}");
}

#[tokio::test]
async fn an_amnesty_covering_the_outage_keeps_the_front_in_place() {
    let (room, clock, front, waiting) = outage(true).await;
    assert_eq!(waiting, 60, "the state kept every forgiven place");
    for (i, r) in front.iter().enumerate() {
        let t = r
            .as_ref()
            .unwrap_or_else(|e| panic!("person {i}: {}", e.code()));
        assert_eq!((t.position, t.ahead), (i as u64 + 1, i as u64));
        assert!(t.live_until_ms > queuegate::Clock::now_ms(&clock));
    }
    assert_eq!(room.control_changes(Setting::Amnesty), 1);
    assert!(room
        .render_control_prometheus()
        .contains("queuegate_room_control_changes_total{setting=\"amnesty\"} 1"));
}

#[tokio::test]
async fn the_amnesty_is_bounded_by_its_window() {
    let (room, clock, store) = room();
    let a = room.join(b"person-0", ClientTime::Absent).await.unwrap();
    let b = room.join(b"person-1", ClientTime::Absent).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    // The window covers the outage but ends 30 s in.
    room.declare_amnesty(T0, T0 + 30_000).unwrap();
    clock.advance(Duration::from_secs(20));
    store.down.store(false, Ordering::SeqCst);
    // Inside the window: forgiven.
    assert_eq!(code(&beat(&room, 0, &a).await), "ok");
    // Past the window's end: the deadline counts again.
    clock.advance(Duration::from_secs(11));
    assert_eq!(code(&beat(&room, 1, &b).await), "offline_resumed");
    // A deadline outside the window is never forgiven.
    let c = room.join(b"person-2", ClientTime::Absent).await.unwrap();
    room.declare_amnesty(T0, T0 + 35_000).unwrap();
    clock.advance(Duration::from_secs(2 * 60));
    assert!(c.live_until_ms > T0 + 35_000);
    assert_eq!(code(&beat(&room, 2, &c).await), "offline_resumed");
    // A bad window changes nothing.
    assert!(room.declare_amnesty(T0 + 10, T0).is_err());
    assert_eq!(room.amnesty().window(), Some((T0, T0 + 35_000)));
}

#[tokio::test]
async fn a_long_outage_past_the_replay_records_retention_is_forgiven_too() {
    // 100 s down: past the front's deadline plus the replay store's 60 s
    // tolerance, and the store's purge runs meanwhile.
    let (room, clock, store) = room();
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(
            room.join(who(i).as_bytes(), ClientTime::Absent)
                .await
                .unwrap(),
        );
    }
    store.down.store(true, Ordering::SeqCst);
    room.declare_amnesty(T0, T0 + 300_000).unwrap();
    for _ in 0..10 {
        clock.advance(Duration::from_secs(10));
        store.inner.purge(queuegate::Clock::now_ms(&clock));
        // Someone new arrives: the state runs (and would drop the dead).
        let _ = room.join(b"newcomer", ClientTime::Absent).await;
    }
    store.down.store(false, Ordering::SeqCst);
    for (i, t) in tickets.iter().enumerate() {
        let next = beat(&room, i, t)
            .await
            .unwrap_or_else(|e| panic!("person {i}: {}", e.code()));
        assert_eq!(next.position, i as u64 + 1);
        // And the chain goes on from there.
        let again = beat(&room, i, &next).await;
        assert_eq!(code(&again), "ok", "person {i}");
    }
}
