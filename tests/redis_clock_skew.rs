//! The Redis replay store on a Redis whose own clock is an hour off
//! (feature `redis`; ignored: needs `redis-server` and a C compiler `cc`
//! on PATH, and fails when either is missing).
//!
//! Issue 14: one wrong clock must not become an outage. Before the store
//! measured Redis's clock, a Redis an hour ahead refused every heartbeat
//! and booking (`replayed`, `StateReset`: every record's keep-until had
//! passed on Redis's clock) and one an hour behind kept every record an
//! hour too long. Now, with two instances on such a Redis: a chain of
//! heartbeats passes from one to the other, a stale copy of a heartbeat
//! ticket is still refused, a consumed single-use ticket is still refused,
//! and the records expire after their retention, not an hour off. And one
//! instance's reading alone is not followed: a store that sees another
//! live instance measuring Redis on time keeps today's behaviour.
//!
//! The skewed Redis is a separate `redis-server` on a free port whose wall
//! clock really is moved by a preloaded shim (`demo_support/skewed_clock.c`,
//! compiled here with `cc`; the same shim as the demo's clock tests).
#![cfg(feature = "redis")]

mod skewed_redis;

use skewed_redis::SkewedRedis;
use std::time::{SystemTime, UNIX_EPOCH};

use queuegate::rejection::ReplayReason;
use queuegate::replay::{
    Advance, AdvanceRequest, Hold, RedisReplayStore, ReplayCheck, ReplayStore, ReplayVerdict,
    SettleHold, Settlement,
};
use queuegate::ticket::{ScopeId, TicketId, TicketKind};

const HOUR_MS: i64 = 3_600_000;
/// The store's default tolerance.
const TOLERANCE_MS: i64 = 60_000;
/// A heartbeat ticket's liveness window and expiry in these tests.
const LIVE_MS: i64 = 30_000;
const EXPIRES_MS: i64 = 600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn store(url: &str, prefix: &str) -> RedisReplayStore {
    RedisReplayStore::builder(url)
        .prefix(prefix)
        .allow_evicting_policy(true)
        .connect()
        .await
        .expect("connect to the skewed redis-server")
}

fn beat(s: &RedisReplayStore, id: TicketId, sequence: u32) -> ReplayCheck {
    let now = now_ms();
    ReplayCheck {
        scope: ScopeId::from_name("beat"),
        ticket_id: id,
        sequence,
        kind: TicketKind::Waiting,
        same_client: true,
        live_until_ms: now + LIVE_MS,
        expires_at_ms: now + EXPIRES_MS,
        now_ms: now,
        grace_ms: 2_000,
        hold: None,
        epoch: s.epoch_of(&id),
    }
}

fn advance(s: &RedisReplayStore, id: TicketId, sequence: u32) -> AdvanceRequest {
    let now = now_ms();
    AdvanceRequest {
        ticket_id: id,
        sequence,
        kind: TicketKind::Waiting,
        live_until_ms: now + LIVE_MS,
        expires_at_ms: now + EXPIRES_MS,
        now_ms: now,
        grace_ms: 2_000,
        // The ticket's epoch: the store's one (the advance compares it).
        epoch: s.epoch_of(&id),
    }
}

async fn pttl(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Two instances on a Redis `skew_ms` off: heartbeats, a stale copy, a
/// single use, and the records' lifetimes.
async fn works_with_redis_off_by(skew_ms: i64) {
    let redis = SkewedRedis::start(skew_ms);
    let measured = redis.skew_ms().await;
    assert!(
        (measured - skew_ms).abs() < 5_000,
        "the redis-server's TIME is {measured} ms off this machine's, not {skew_ms}"
    );
    let prefix = format!("qgt-skew-{}", TicketId::random());
    let a = store(&redis.url, &prefix).await;
    let b = store(&redis.url, &prefix).await;
    for s in [&a, &b] {
        assert!(
            (s.clock_shift_ms() - skew_ms).abs() <= 2_000,
            "the store measured Redis {} ms off, not {skew_ms}",
            s.clock_shift_ms()
        );
    }

    // A chain of heartbeats, each on the other instance.
    let id = TicketId::random();
    for seq in 0..6u32 {
        let (s, _) = if seq % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let v = s.check(&beat(s, id, seq)).await.unwrap();
        assert_eq!(
            v,
            ReplayVerdict::Fresh,
            "heartbeat {seq} of an honest chain, Redis {skew_ms} ms off"
        );
        let next = s.advance(&advance(s, id, seq)).await.unwrap();
        assert!(
            matches!(next, Advance::Next { sequence, .. } if sequence == seq + 1),
            "{next:?}"
        );
    }
    // A stale copy of an earlier heartbeat ticket: still refused.
    let v = a.check(&beat(&a, id, 6)).await.unwrap();
    assert_eq!(v, ReplayVerdict::Fresh);
    let v = b.check(&beat(&b, id, 2)).await.unwrap();
    assert_eq!(v, ReplayVerdict::Replayed(ReplayReason::StaleSequence));

    // The chain record lives for its retention (liveness window plus the
    // tolerance), not an hour more or less.
    let chain = format!("{prefix}:{{{id}}}:c");
    let left = pttl(&redis.url, &chain).await;
    let retention = LIVE_MS + TOLERANCE_MS;
    assert!(
        (retention - 5_000..=retention + 2_000).contains(&left),
        "the chain record expires in {left} ms, not about {retention}"
    );

    // Single use: booked through a, the same ticket is refused through b.
    let booker = TicketId::random();
    let now = now_ms();
    let book = ReplayCheck {
        scope: ScopeId::from_name("book"),
        kind: TicketKind::Admitted,
        hold: Some(Hold::new(now + 5_000)),
        ..beat(&a, booker, 0)
    };
    assert_eq!(a.check(&book).await.unwrap(), ReplayVerdict::Fresh);
    a.settle(&SettleHold {
        scope: book.scope,
        ticket_id: booker,
        kind: book.kind,
        hold: book.hold.unwrap(),
        settlement: Settlement::Commit,
        expires_at_ms: book.expires_at_ms,
        now_ms: book.now_ms,
    })
    .await
    .unwrap();
    let again = ReplayCheck {
        hold: Some(Hold::new(now_ms() + 5_000)),
        epoch: b.epoch_of(&booker),
        ..book
    };
    assert_eq!(
        b.check(&again).await.unwrap(),
        ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient)
    );
    let used = format!("{prefix}:{{{booker}}}:u:{}", ScopeId::from_name("book"));
    let left = pttl(&redis.url, &used).await;
    let retention = EXPIRES_MS + TOLERANCE_MS;
    assert!(
        (retention - 5_000..=retention + 2_000).contains(&left),
        "the consumption record expires in {left} ms, not about {retention}"
    );
    a.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis"]
async fn a_redis_an_hour_ahead_changes_nothing_for_honest_people() {
    works_with_redis_off_by(HOUR_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis"]
async fn a_redis_an_hour_behind_changes_nothing_for_honest_people() {
    works_with_redis_off_by(-HOUR_MS).await;
}

/// Another live instance measured Redis on time: this store, alone in
/// seeing it an hour ahead, keeps today's behaviour (no shift; a ticket
/// whose retention has passed on Redis's clock is refused, fail closed)
/// rather than trusting its own reading over the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis"]
async fn one_reading_alone_is_not_followed() {
    let redis = SkewedRedis::start(HOUR_MS);
    let prefix = format!("qgt-skew-{}", TicketId::random());
    {
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
        let redis_now = secs * 1_000 + micros / 1_000;
        // `<offset> <longest keep-until ahead> <seen on Redis's clock>`.
        let () = redis::cmd("HSET")
            .arg(format!("{prefix}:clock"))
            .arg("another-instance")
            .arg(format!("0 {} {redis_now}", LIVE_MS + TOLERANCE_MS))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let s = store(&redis.url, &prefix).await;
    assert_eq!(s.clock_shift_ms(), 0);
    let id = TicketId::random();
    assert_eq!(
        s.check(&beat(&s, id, 0)).await.unwrap(),
        ReplayVerdict::Replayed(ReplayReason::StateReset)
    );
    s.clear().await.unwrap();
}
