//! The Redis room's shared settings and layout version (feature `redis`;
//! ignored: needs Redis on 127.0.0.1:6379, fails when it is absent).
#![cfg(feature = "redis")]

use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, RedisRoomState, RoomSettings,
    RoomState, SettingsError, REDIS_LAYOUT,
};
use queuegate::ticket::Binding;
use queuegate::TicketId;

const T: i64 = 1_700_000_000_000;

fn rule(now_ms: i64, per_sec: f64, opens_at_ms: i64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec,
        burst: 1.0,
        max_admitted: None,
        opens_at_ms,
        shuffle_seed: 1,
    }
}

async fn pair() -> (RedisRoomState, RedisRoomState, String) {
    let prefix = format!("qg-room-settings-{}", TicketId::random());
    let connect = || async {
        RedisRoomState::builder("redis://127.0.0.1:6379/")
            .prefix(&prefix)
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379")
    };
    (connect().await, connect().await, prefix)
}

async fn join(s: &RedisRoomState, q: &str, i: u8, r: &AdmissionRule) {
    let binding = Binding([i; 16]);
    let join = JoinRecord {
        binding,
        live_until_ms: T + 600_000,
        max_waiting: None,
    };
    s.join(q, &join, r).await.unwrap();
    let chain = ChainFacts {
        ticket_id: TicketId([i; 16]),
        sequence: 0,
        joined_at_ms: T,
        expires_at_ms: T + 3_600_000,
        admitted_from_ms: None,
        epoch: Some(11),
    };
    let issued = IssuedRecord {
        binding,
        chain,
        live_until_ms: T + 600_000,
    };
    s.record(q, &issued).await.unwrap();
}

async fn admitted(s: &RedisRoomState, q: &str, i: u8, r: &AdmissionRule) -> bool {
    let beat = BeatRecord {
        binding: Binding([i; 16]),
        ticket_id: TicketId([i; 16]),
    };
    s.beat(q, &beat, r).await.unwrap().expect("alive").admitted
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn flags_only_seed_and_a_change_through_one_instance_rules_all() {
    let (a, b, _) = pair().await;
    let q = "settings";
    // A comes first: its paused rule seeds the shared settings; the first
    // arrival takes the one admission a new bucket holds.
    join(&a, q, 1, &rule(T, 0.0, i64::MIN)).await;
    join(&a, q, 2, &rule(T, 0.0, i64::MIN)).await;
    // B's own flags say 100 a second: they do not override the shared 0.
    join(&b, q, 3, &rule(T, 100.0, i64::MIN)).await;
    let shared = a.settings(q).await.unwrap().expect("seeded");
    assert_eq!(shared.admit_per_sec, 0.0);
    assert!(!admitted(&a, q, 2, &rule(T + 5_000, 0.0, i64::MIN)).await);
    // Changed through B's library call: A's tick obeys it.
    let resumed = RoomSettings {
        admit_per_sec: 10.0,
        ..shared
    };
    b.set_settings(q, &resumed).await.unwrap();
    assert_eq!(b.settings(q).await.unwrap(), Some(resumed));
    assert!(admitted(&a, q, 2, &rule(T + 6_000, 0.0, i64::MIN)).await);
    // The opening has happened: it can no longer move, and nothing changes.
    let moved = RoomSettings {
        opens_at_ms: T + 60_000,
        admit_per_sec: 1.0,
        ..resumed
    };
    assert_eq!(
        a.set_settings(q, &moved).await,
        Err(SettingsError::OpeningPassed)
    );
    assert_eq!(a.settings(q).await.unwrap(), Some(resumed));
    a.clear(q).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn an_opening_still_ahead_may_move() {
    let (a, _, _) = pair().await;
    let q = "settings-opening";
    // The library call judges "passed" by the wall clock: an hour ahead.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let opens = wall + 3_600_000;
    join(&a, q, 1, &rule(wall, 1.0, opens)).await;
    let shared = a.settings(q).await.unwrap().expect("seeded");
    assert_eq!(shared.opens_at_ms, opens);
    let later = RoomSettings {
        opens_at_ms: opens + 60_000,
        ..shared
    };
    a.set_settings(q, &later).await.unwrap();
    assert_eq!(a.settings(q).await.unwrap(), Some(later));
    a.clear(q).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn a_queue_of_another_layout_is_refused_untouched() {
    let (a, _, prefix) = pair().await;
    let q = "layout";
    join(&a, q, 1, &rule(T, 0.0, i64::MIN)).await;
    let mut conn = redis::Client::open("redis://127.0.0.1:6379/")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queue_id = queuegate::ticket::QueueId::from_name(q);
    let layout_key = format!("{prefix}:room:{{{queue_id}}}:layout");
    let stored: String = redis::cmd("GET")
        .arg(&layout_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, REDIS_LAYOUT);
    let () = redis::cmd("SET")
        .arg(&layout_key)
        .arg("99")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A new instance (another build's layout in Redis) touches nothing.
    let fresh = RedisRoomState::builder("redis://127.0.0.1:6379/")
        .prefix(&prefix)
        .connect()
        .await
        .unwrap();
    let join = JoinRecord {
        binding: Binding([9; 16]),
        live_until_ms: T + 600_000,
        max_waiting: None,
    };
    let err = fresh
        .join(q, &join, &rule(T, 0.0, i64::MIN))
        .await
        .expect_err("another layout is refused");
    assert!(err.to_string().contains("layout version \"99\""), "{err}");
    let next: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:room:{{{queue_id}}}:meta"))
        .arg("next")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next.as_deref(), Some("1"), "no place was handed out");
    a.clear(q).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn a_queue_slot_that_lost_its_counter_never_hands_a_place_out_twice() {
    let (a, _, prefix) = pair().await;
    let q = "lost-counter";
    for i in 1..=3 {
        join(&a, q, i, &rule(T, 0.0, i64::MIN)).await;
    }
    // The queue's counter vanishes (a failover to a replica that missed
    // it): the instance still knows place 3 was handed out.
    let mut conn = redis::Client::open("redis://127.0.0.1:6379/")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queue_id = queuegate::ticket::QueueId::from_name(q);
    let () = redis::cmd("HDEL")
        .arg(format!("{prefix}:room:{{{queue_id}}}:meta"))
        .arg("next")
        .query_async(&mut conn)
        .await
        .unwrap();
    let join = JoinRecord {
        binding: Binding([4; 16]),
        live_until_ms: T + 600_000,
        max_waiting: None,
    };
    match a.join(q, &join, &rule(T, 0.0, i64::MIN)).await.unwrap() {
        queuegate::room::Joined::New(place) => assert_eq!(place.position, 4),
        other => panic!("{other:?}"),
    }
    a.clear(q).await.unwrap();
}

/// The state's half of the amnesty, shared: B writes a window (as the
/// engine does for the operator), A's tick and heartbeats keep the places
/// whose deadlines it forgives; without it, the same silence ends them.
async fn front_after_silence(amnesty: bool) -> Vec<bool> {
    use queuegate::room::{ControlSnapshot, ControlWrite, Setting};
    let (a, b, _) = pair().await;
    let q = if amnesty {
        "amnesty-shared"
    } else {
        "amnesty-none"
    };
    // Three people, deadlines at T + 600 s (the helper's), paused room.
    for i in 1..=3 {
        join(&a, q, i, &rule(T, 0.0, i64::MIN)).await;
    }
    let values = ControlSnapshot {
        admit_per_sec: 0.0,
        paused: true,
        max_admitted: None,
        max_waiting: None,
        opens_at_ms: None,
        closed: None,
        amnesty: amnesty.then_some((T + 500_000, T + 900_000)),
    };
    let write = ControlWrite {
        seed: false,
        changed: vec![Setting::Amnesty],
        values: values.clone(),
        burst: 1.0,
    };
    let shared = b
        .write_controls(q, T, &write)
        .await
        .unwrap()
        .expect("Redis shares the settings");
    assert_eq!(shared.amnesty, values.amnesty);
    // 700 s later: every deadline has passed. A's tick (its sweep checks
    // each waiting place) runs, then each person's heartbeat.
    let later = rule(T + 700_000, 0.0, i64::MIN);
    a.tick_now(q, &later).await.unwrap();
    a.tick_now(q, &later).await.unwrap();
    let mut alive = Vec::new();
    for i in 1..=3 {
        let beat = BeatRecord {
            binding: Binding([i; 16]),
            ticket_id: TicketId([i; 16]),
        };
        alive.push(a.beat(q, &beat, &later).await.unwrap().is_some());
    }
    // A sees the shared window too.
    let (_, seen) = a.shared_controls(q, 0).expect("read on the tick");
    assert_eq!(seen.amnesty, values.amnesty);
    a.clear(q).await.unwrap();
    alive
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn a_shared_amnesty_keeps_places_its_window_forgives() {
    assert_eq!(front_after_silence(true).await, [true; 3]);
    assert_eq!(front_after_silence(false).await, [false; 3]);
}
