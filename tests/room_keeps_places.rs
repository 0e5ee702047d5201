//! Issue 12 items 4 and 5: nobody loses a place they earned to a rotation
//! of the signing key or to an honest correction of their device clock.
//!
//! Instances are modelled as rooms built over one shared state and one
//! shared replay store (as instances sharing Redis are), each with its own
//! key ring, on one injected clock.

use std::sync::Arc;
use std::time::Duration;

use queuegate::room::{MemoryRoomState, RoomError, RoomTicket};
use queuegate::{
    ClientTime, ConfigError, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented,
    RejectionCode, WaitingRoom,
};

const T0: i64 = 1_700_000_000_000;
const OLD: [u8; 32] = [7; 32];
const NEW: [u8; 32] = [8; 32];
/// The room secret the host keeps across rotations.
const ROOM: [u8; 32] = [9; 32];

type Room = WaitingRoom<ManualClock, Arc<MemoryReplayStore>, Arc<MemoryRoomState>>;

struct Shared {
    clock: ManualClock,
    replay: Arc<MemoryReplayStore>,
    state: Arc<MemoryRoomState>,
}

impl Shared {
    fn new() -> Self {
        Self {
            clock: ManualClock::new(T0),
            replay: Arc::new(MemoryReplayStore::new()),
            state: Arc::new(MemoryRoomState::new()),
        }
    }

    /// An instance with `ring`, paused (nobody admitted: places stay put).
    fn instance(&self, ring: KeyRing, policy: Policy) -> Room {
        let issuer = Issuer::new(
            Arc::new(ring),
            policy,
            self.clock.clone(),
            Arc::new(self.replay.clone()),
        )
        .unwrap();
        WaitingRoom::builder(issuer, self.state.clone())
            .admit_per_sec(0.0)
            .unwrap()
            .liveness(Duration::from_secs(70), Duration::from_secs(300))
            .unwrap()
            .build()
            .unwrap()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn now(&self) -> i64 {
        queuegate::Clock::now_ms(&self.clock)
    }
}

/// The rings of a rotation as SPEC.md describes it, all with the same room
/// secret: before; new key verify-only; new key signs, old verify-only;
/// old retired.
fn rotation() -> [KeyRing; 4] {
    let ring = |keys: &[(u8, &[u8; 32], bool)]| {
        let mut b = KeyRing::builder().room_secret(&ROOM).unwrap();
        for &(id, secret, signs) in keys {
            b = if signs {
                b.signing_key(id, secret).unwrap()
            } else {
                b.verify_only_key(id, secret).unwrap()
            };
        }
        b.build().unwrap()
    };
    [
        ring(&[(1, &OLD, true)]),
        ring(&[(1, &OLD, true), (2, &NEW, false)]),
        ring(&[(1, &OLD, false), (2, &NEW, true)]),
        ring(&[(2, &NEW, true)]),
    ]
}

fn policy() -> Policy {
    Policy::new("vaccine-53-54")
}

async fn join(room: &Room, who: &str, client_time: ClientTime) -> Result<RoomTicket, RoomError> {
    room.join(who.as_bytes(), client_time).await
}

async fn beat(
    room: &Room,
    who: &str,
    t: &RoomTicket,
    client_time: ClientTime,
) -> Result<RoomTicket, RoomError> {
    room.heartbeat(&Presented {
        ticket: Some(t.ticket.as_bytes()),
        binding: Some(who.as_bytes()),
        client_time,
    })
    .await
}

fn key_id(t: &RoomTicket) -> u8 {
    queuegate::ticket::decode(t.ticket.as_bytes())
        .unwrap()
        .claims()
        .unwrap()
        .key_id
}

fn code(e: &RoomError) -> Option<RejectionCode> {
    match e {
        RoomError::Rejected(r) => Some(r.code()),
        _ => None,
    }
}

#[tokio::test]
async fn a_rotation_done_as_the_spec_says_ejects_nobody() {
    let shared = Shared::new();
    let [before, added, switched, retired] = rotation();
    let people = ["ana", "bo", "cy"];

    let room = shared.instance(before, policy());
    let mut tickets = Vec::new();
    for who in people {
        tickets.push(join(&room, who, ClientTime::Absent).await.unwrap());
    }
    let places: Vec<u64> = tickets.iter().map(|t| t.position).collect();
    assert_eq!(places, [1, 2, 3]);

    // Each step of the rotation is deployed (a new instance over the same
    // state), then everyone heart-beats on it.
    for (step, ring) in [added, switched, retired].into_iter().enumerate() {
        let room = shared.instance(ring, policy());
        shared.advance(20);
        for (who, t) in people.iter().zip(tickets.iter_mut()) {
            let next = beat(&room, who, t, ClientTime::Absent).await;
            let next = next.unwrap_or_else(|e| panic!("step {step}: {who}: {e:?}"));
            assert_eq!(
                (next.ticket_id, next.position),
                (t.ticket_id, t.position),
                "step {step}: {who} keeps the chain and the place"
            );
            *t = next;
        }
        let stats = room.stats().await.unwrap();
        assert_eq!((stats.waiting, stats.entries), (3, 3), "step {step}");
    }
    assert!(
        tickets.iter().all(|t| key_id(t) == 2),
        "signed by the new key"
    );

    // Rejoining after the rotation finds the same places too.
    let room = shared.instance(rotation()[3].clone(), policy());
    for (who, t) in people.iter().zip(&tickets) {
        let again = join(&room, who, ClientTime::Absent).await.unwrap();
        assert_eq!((again.ticket_id, again.position), (t.ticket_id, t.position));
    }
    assert_eq!(room.stats().await.unwrap().waiting, 3);
}

#[tokio::test]
async fn during_a_rolling_rotation_a_session_holds_one_place() {
    let shared = Shared::new();
    let [_, _, switched, _] = rotation();
    // Half the instances still sign with the old key (its ring has the new
    // one verify-only), half with the new one.
    let signs_old = shared.instance(rotation()[1].clone(), policy());
    let signs_new = shared.instance(switched, policy());

    let _first = join(&signs_old, "ahead", ClientTime::Absent).await.unwrap();
    let joined = join(&signs_old, "ana", ClientTime::Absent).await.unwrap();
    assert_eq!(key_id(&joined), 1);
    // A reload lands on the other kind of instance: the same place.
    let again = join(&signs_new, "ana", ClientTime::Absent).await.unwrap();
    assert_eq!(key_id(&again), 2);
    assert_eq!(
        (again.ticket_id, again.position),
        (joined.ticket_id, joined.position)
    );
    // Heartbeats alternate between the two kinds: every one succeeds.
    let mut t = again;
    for i in 0..6 {
        shared.advance(10);
        let room = if i % 2 == 0 { &signs_old } else { &signs_new };
        t = beat(room, "ana", &t, ClientTime::Absent).await.unwrap();
        assert_eq!((t.ticket_id, t.position), (joined.ticket_id, 2));
        // And a rejoin on either kind is still the same place.
        let other = if i % 2 == 0 { &signs_new } else { &signs_old };
        let rejoined = join(other, "ana", ClientTime::Absent).await.unwrap();
        assert_eq!(
            (rejoined.ticket_id, rejoined.position),
            (joined.ticket_id, 2)
        );
        t = rejoined;
    }
    let stats = signs_new.stats().await.unwrap();
    assert_eq!(
        (stats.waiting, stats.entries),
        (2, 2),
        "one place per session"
    );
}

#[tokio::test]
async fn a_ring_of_several_keys_needs_a_room_secret() {
    let shared = Shared::new();
    let ring = KeyRing::builder()
        .verify_only_key(1, &OLD)
        .unwrap()
        .signing_key(2, &NEW)
        .unwrap()
        .build()
        .unwrap();
    let issuer = Issuer::new(
        Arc::new(ring),
        policy(),
        shared.clock.clone(),
        Arc::new(shared.replay.clone()),
    )
    .unwrap();
    let built = WaitingRoom::builder(issuer, shared.state.clone()).build();
    assert!(
        matches!(
            built,
            Err(ConfigError::Invalid {
                setting: "room_secret",
                ..
            })
        ),
        "{built:?}"
    );
    // A ring that never had a room secret starts a rotation by naming its
    // signing secret as the room secret: the places it made stay.
    let room = shared.instance(KeyRing::new(1, &OLD).unwrap(), policy());
    let joined = join(&room, "ana", ClientTime::Absent).await.unwrap();
    let ring = KeyRing::builder()
        .room_secret(&OLD)
        .unwrap()
        .signing_key(1, &OLD)
        .unwrap()
        .verify_only_key(2, &NEW)
        .unwrap()
        .build()
        .unwrap();
    let room = shared.instance(ring, policy());
    let again = join(&room, "ana", ClientTime::Absent).await.unwrap();
    assert_eq!(again.ticket_id, joined.ticket_id);
}

/// The demo's old jump tolerance: tight enough that an 8 s correction is a
/// `clock_jump`.
fn tight() -> Policy {
    policy().max_jump(Duration::from_secs(5))
}

#[tokio::test]
async fn a_corrected_clock_rejoins_and_keeps_its_place() {
    let shared = Shared::new();
    let room = shared.instance(KeyRing::new(1, &OLD).unwrap(), tight());
    let _ahead = join(&room, "ahead", ClientTime::Absent).await.unwrap();
    // The phone's clock is 8 s behind; NTP corrects it while waiting.
    let behind = |s: &Shared| ClientTime::Millis(s.now() - 8_000);
    let exact = |s: &Shared| ClientTime::Millis(s.now());
    let t = join(&room, "ana", behind(&shared)).await.unwrap();
    shared.advance(20);
    let t = beat(&room, "ana", &t, behind(&shared)).await.unwrap();
    shared.advance(20);
    let e = beat(&room, "ana", &t, exact(&shared)).await.unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::ClockJump));

    // The refused page rejoins: the same chain and place, a new baseline.
    let again = join(&room, "ana", exact(&shared)).await.unwrap();
    assert_eq!((again.ticket_id, again.position), (t.ticket_id, t.position));
    let mut t = again;
    for _ in 0..3 {
        shared.advance(20);
        t = beat(&room, "ana", &t, exact(&shared)).await.unwrap();
        assert_eq!(t.position, 2);
    }
    let stats = room.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.entries), (2, 2));
}

#[tokio::test]
async fn a_clock_far_off_is_refused_until_fixed_then_keeps_its_place() {
    let shared = Shared::new();
    let room = shared.instance(KeyRing::new(1, &OLD).unwrap(), policy());
    let _ahead = join(&room, "ahead", ClientTime::Absent).await.unwrap();
    let t = join(&room, "ana", ClientTime::Millis(shared.now()))
        .await
        .unwrap();
    shared.advance(20);
    // The clock is set an hour ahead: refused, and told to fix it.
    let far = ClientTime::Millis(shared.now() + 3_600_000);
    let e = beat(&room, "ana", &t, far).await.unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::ClockSkew));
    let e = join(&room, "ana", far).await.unwrap_err();
    assert_eq!(code(&e), Some(RejectionCode::ClockSkew));
    assert!(e.to_string().contains("clock"), "{e}");
    // Fixed: the rejoin keeps the place.
    shared.advance(20);
    let again = join(&room, "ana", ClientTime::Millis(shared.now()))
        .await
        .unwrap();
    assert_eq!((again.ticket_id, again.position), (t.ticket_id, 2));
    shared.advance(20);
    let next = beat(&room, "ana", &again, ClientTime::Millis(shared.now()))
        .await
        .unwrap();
    assert_eq!(next.position, 2);
    // The header stays optional: a rejoin without it keeps the place too.
    let bare = join(&room, "ana", ClientTime::Absent).await.unwrap();
    assert_eq!((bare.ticket_id, bare.position), (t.ticket_id, 2));
}

#[tokio::test]
async fn the_library_tolerates_an_eight_second_correction() {
    let shared = Shared::new();
    let room = shared.instance(KeyRing::new(1, &OLD).unwrap(), policy());
    let t = join(&room, "ana", ClientTime::Millis(shared.now() - 8_000))
        .await
        .unwrap();
    shared.advance(20);
    let t = beat(&room, "ana", &t, ClientTime::Millis(shared.now()))
        .await
        .expect("60 s of jump tolerance by default");
    assert_eq!(t.position, 1);
}

/// An instance with the library's default liveness, admitting `per_sec`.
fn default_room(shared: &Shared, per_sec: f64) -> Room {
    let issuer = Issuer::new(
        Arc::new(KeyRing::new(1, &OLD).unwrap()),
        policy(),
        shared.clock.clone(),
        Arc::new(shared.replay.clone()),
    )
    .unwrap();
    WaitingRoom::builder(issuer, shared.state.clone())
        .admit_per_sec(per_sec)
        .unwrap()
        .build()
        .unwrap()
}

/// Issue 12 item 6: a tab hidden for minutes in Chrome runs its timers at
/// most once a minute (intensive wake-up throttling), so a heartbeat due at
/// `retry_after_ms` fires at the next whole-minute wake-up. Such a person,
/// followed from far back to the front, through admission and onto the
/// booking form, must never lose the place under the library's defaults.
#[tokio::test]
async fn a_background_tab_throttled_to_a_wake_up_a_minute_keeps_its_place() {
    let shared = Shared::new();
    // One admission a minute, twelve people ahead who heart-beat on time.
    let room = default_room(&shared, 1.0 / 60.0);
    let mut ahead = Vec::new();
    for i in 0..12 {
        let who = format!("ahead-{i}");
        let t = join(&room, &who, ClientTime::Absent).await.unwrap();
        let due = shared.now() + t.retry_after_ms as i64;
        ahead.push((who, t, due));
    }
    let mut tab = join(&room, "tab", ClientTime::Absent).await.unwrap();
    let mut due = shared.now() + tab.retry_after_ms as i64;
    let (mut beats, mut admitted_at) = (0, None);
    // Twenty minutes, a second at a time.
    for second in 1..=1_200 {
        shared.advance(1);
        let now = shared.now();
        for (who, t, next) in ahead.iter_mut() {
            if *next <= now && !t.admitted {
                *t = beat(&room, who, t, ClientTime::Absent).await.unwrap();
                *next = now + t.retry_after_ms as i64;
            }
        }
        // The hidden tab wakes once a minute and runs what is due.
        if second % 60 == 0 && due <= now {
            tab = beat(&room, "tab", &tab, ClientTime::Absent)
                .await
                .unwrap_or_else(|e| panic!("at {second} s (position {}): {e:?}", tab.position));
            due = now + tab.retry_after_ms as i64;
            beats += 1;
            if tab.admitted && admitted_at.is_none() {
                admitted_at = Some(second);
            }
        }
    }
    let admitted_at = admitted_at.expect("the turn came");
    assert!(admitted_at < 1_000, "admitted at {admitted_at} s");
    assert!(beats >= 10, "{beats} heartbeats");
}

/// A phone user who switches apps near the front, or while admitted, for
/// 20 s keeps the place; one away for minutes does not.
#[tokio::test]
async fn an_app_switch_keeps_the_place_and_minutes_away_do_not() {
    let shared = Shared::new();
    let room = default_room(&shared, 1.0);
    let admitted = join(&room, "ana", ClientTime::Absent).await.unwrap();
    assert!(admitted.admitted);
    let near = join(&room, "bo", ClientTime::Absent).await.unwrap();
    assert_eq!((near.admitted, near.ahead), (false, 0));
    // Both look at a message for 20 s: no heartbeat.
    shared.advance(20);
    let admitted = beat(&room, "ana", &admitted, ClientTime::Absent)
        .await
        .expect("admitted, back after 20 s");
    let near = beat(&room, "bo", &near, ClientTime::Absent)
        .await
        .expect("next in line, back after 20 s");
    // Then both are away for six minutes.
    shared.advance(360);
    for (who, t) in [("ana", &admitted), ("bo", &near)] {
        let e = beat(&room, who, t, ClientTime::Absent).await.unwrap_err();
        assert_eq!(code(&e), Some(RejectionCode::OfflineResumed), "{who}");
    }
}

/// Many rejoins of one session at once (tabs reloading together, or a bot):
/// one chain, one place; each answer is that chain or `busy`, and a
/// re-minted ticket heart-beats afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rejoins_keep_one_chain_and_place() {
    let shared = Shared::new();
    let room = Arc::new(shared.instance(KeyRing::new(1, &OLD).unwrap(), policy()));
    let _ahead = join(&room, "ahead", ClientTime::Absent).await.unwrap();
    let first = join(&room, "ana", ClientTime::Absent).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            join(&room, "ana", ClientTime::Absent).await
        }));
    }
    let mut latest = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(t) => {
                assert_eq!((t.ticket_id, t.position), (first.ticket_id, 2));
                latest = Some(t);
            }
            Err(RoomError::Busy) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    let stats = room.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.entries), (2, 2));
    let again = join(&room, "ana", ClientTime::Absent).await.unwrap();
    assert_eq!(again.ticket_id, first.ticket_id);
    shared.advance(10);
    let next = beat(&room, "ana", &again, ClientTime::Absent)
        .await
        .unwrap();
    assert_eq!((next.ticket_id, next.position), (first.ticket_id, 2));
    assert!(latest.is_some(), "at least one rejoin answered");
}
