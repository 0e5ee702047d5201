//! Issue 12 item 2: dead waiting chains must not hold capacity. A bounded
//! flood of abandoned chains (fresh sessions, one heartbeat each, then
//! silence) fills the replay store's waiting capacity; after their liveness
//! deadlines a newcomer joins and heart-beats. Before, a waiting chain's
//! record lived until its expiry (12 h by default) and newcomers got
//! `store_unavailable` for hours. On memory and on Redis (which now has
//! separate waiting and admitted capacities of its own).

mod adversary;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use queuegate::{Clock, SystemClock};
use queuegate::{ManualClock, MemoryReplayStore, Policy, RejectionCode, ReplayStore, TicketId};

use adversary::*;

/// Each abandoned chain's liveness window.
const LIVE: Duration = Duration::from_secs(1);

/// Joins with a fresh session and heart-beats once; returns the
/// heartbeat's refusal code, if any.
async fn one_beat<S: ReplayStore>(f: &Fixture<S>) -> Result<(), RejectionCode> {
    let session = TicketId::random().to_string();
    let first = f.join(session.as_bytes(), &wait(100, LIVE));
    f.renew(&first.ticket, session.as_bytes(), &wait(100, LIVE))
        .await
        .map(|_| ())
        .map_err(|r| r.code())
}

/// `pass(d)` lets `d` pass for the store and the fixture's clock.
async fn flood_then_newcomer<S, P, F>(store: Arc<S>, clock: ManualClock, max_flood: usize, pass: P)
where
    S: ReplayStore,
    P: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let f = Fixture::new(store, Policy::new(QUEUE), clock);
    // The flood, bounded: until the store refuses.
    let mut flooded = 0;
    let refused = loop {
        match one_beat(&f).await {
            Ok(()) => flooded += 1,
            Err(code) => break code,
        }
        assert!(flooded <= max_flood, "the waiting capacity never filled");
    };
    assert_eq!(refused, RejectionCode::StoreUnavailable);
    assert!(flooded > 0);
    // Silence. After the flood's deadlines, a newcomer gets in and keeps
    // heart-beating (capacity comes back within the stores' expiry
    // granularity: 8 s buckets in memory, 5 s in Redis).
    pass(LIVE).await;
    let mut waited = LIVE;
    loop {
        match one_beat(&f).await {
            Ok(()) => break,
            Err(code) => {
                assert_eq!(code, RejectionCode::StoreUnavailable);
                assert!(
                    waited < Duration::from_secs(12),
                    "the abandoned chains still hold the capacity after {waited:?}"
                );
                pass(Duration::from_millis(500)).await;
                waited += Duration::from_millis(500);
            }
        }
    }
    // The newcomer's chain lands in a capacity shard of its own drawing,
    // which may still hold an abandoned chain (or the probe's) for a bucket
    // more: it retries under the same bound, as a page retries on a 503.
    let session = b"newcomer";
    let mut t = loop {
        let first = f.join(session, &wait(1, Duration::from_secs(30)));
        match f
            .renew(&first.ticket, session, &wait(1, Duration::from_secs(30)))
            .await
        {
            Ok(next) => break next,
            Err(r) => {
                assert_eq!(r.code(), RejectionCode::StoreUnavailable);
                assert!(
                    waited < Duration::from_secs(14),
                    "the abandoned chains still hold the capacity after {waited:?}"
                );
                pass(Duration::from_millis(500)).await;
                waited += Duration::from_millis(500);
            }
        }
    };
    for _ in 0..3 {
        t = f
            .renew(&t.ticket, session, &wait(1, Duration::from_secs(30)))
            .await
            .expect("the newcomer heart-beats");
    }
    // A second flood is bounded the same way: the cap still holds.
    let mut again = 0;
    while one_beat(&f).await.is_ok() {
        again += 1;
        assert!(again <= max_flood, "no cap any more");
    }
}

#[tokio::test]
async fn memory_abandoned_chains_free_the_waiting_capacity() {
    let store = Arc::new(
        MemoryReplayStore::builder()
            .waiting_capacity(40)
            .tolerance(Duration::ZERO)
            .build()
            .unwrap(),
    );
    let clock = ManualClock::new(NOW_MS);
    let c = clock.clone();
    flood_then_newcomer(store, clock, 40, move |d| {
        c.advance(d);
        std::future::ready(())
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_abandoned_chains_free_the_waiting_capacity() {
    use queuegate::replay::RedisReplayStore;
    let prefix = format!("qg-flood-{}", TicketId::random());
    let store = Arc::new(
        RedisReplayStore::builder("redis://127.0.0.1:6379/")
            .prefix(&prefix)
            .waiting_capacity(32)
            .tolerance(Duration::ZERO)
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379"),
    );
    // Redis expires records on its own clock: real time passes, and the
    // fixture's clock follows it.
    let clock = ManualClock::new(SystemClock.now_ms());
    let c = clock.clone();
    flood_then_newcomer(store.clone(), clock, 32 * 16, move |d| {
        let c = c.clone();
        async move {
            tokio::time::sleep(d).await;
            c.set_ms(SystemClock.now_ms());
        }
    })
    .await;
    store.clear().await.expect("delete the test's keys");
}

/// The Redis store's admitted capacity is apart from the waiting one: a
/// join flood that fills the waiting capacity leaves admitted people able
/// to book.
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_admitted_capacity_is_apart_from_waiting() {
    use queuegate::replay::RedisReplayStore;
    use queuegate::{ReplayMode, Settlement};
    let prefix = format!("qg-caps-{}", TicketId::random());
    let store = Arc::new(
        RedisReplayStore::builder("redis://127.0.0.1:6379/")
            .prefix(&prefix)
            .waiting_capacity(16)
            // 16 shards of 16: the 8 bookings below (a chain record and a
            // hold each) fit even if every one lands in the same shard; with
            // 64 (4 a shard), three bookings drawn into one shard made the
            // test fail by chance.
            .admitted_capacity(256)
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379"),
    );
    let f = Fixture::new(
        store.clone(),
        Policy::new(QUEUE),
        ManualClock::new(SystemClock.now_ms()),
    );
    let mut n = 0;
    while one_beat(&f).await.is_ok() {
        n += 1;
        assert!(n <= 16 * 16);
    }
    let booking = queuegate::Verifier::new(
        keys(),
        Policy::new(QUEUE)
            .scope("reserve")
            .replay(ReplayMode::SingleUse),
        f.clock.clone(),
        store.clone(),
    )
    .unwrap();
    for i in 0..8u8 {
        let who = [b'a', i];
        let t = f.admitted(&who);
        let v = booking
            .verify(&presented(&t.ticket, &who))
            .await
            .expect("admitted people still book");
        booking
            .settle(&v, Settlement::Commit)
            .unwrap()
            .await
            .unwrap();
    }
    store.clear().await.expect("delete the test's keys");
}

/// On an evicting `maxmemory-policy` the store refuses to start unless the
/// host opts in. Runs its own `redis-server` on a free port (the shared one
/// must not be reconfigured).
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_refuses_an_evicting_policy_unless_allowed() {
    use queuegate::replay::RedisReplayStore;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("this test needs redis-server on the PATH");
    let url = format!("redis://127.0.0.1:{port}/");
    let mut refused = None;
    for _ in 0..50 {
        match RedisReplayStore::builder(&url).connect().await {
            Err(e) if e.to_string().contains("maxmemory-policy") => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let allowed = RedisReplayStore::builder(&url)
        .allow_evicting_policy(true)
        .connect()
        .await;
    let _ = server.kill();
    let _ = server.wait();
    let refused = refused.expect("an evicting policy is refused");
    assert!(refused.to_string().contains("noeviction"), "{refused}");
    assert!(allowed.is_ok(), "the host may opt in");
}
