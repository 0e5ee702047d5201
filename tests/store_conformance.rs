//! One conformance suite for every replay store: the same async test bodies
//! run against the in-memory store and (feature `redis`, ignored unless
//! `--include-ignored`) the Redis store on a single Redis (127.0.0.1:6379)
//! and on the Redis Cluster of `.ci/redis-cluster start`
//! (127.0.0.1:7000-7005). A missing server fails the test, never skips it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queuegate::replay::{
    Advance, AdvanceRequest, Hold, ReplayCheck, ReplayStore, ReplayVerdict, SettleHold, Settlement,
};
use queuegate::ticket::ScopeId;
use queuegate::{MemoryReplayStore, ReplayReason, StoreError, TicketId, TicketKind};

#[cfg(feature = "redis")]
mod cluster_support;

/// A store under test, with the time it should be told and a way to let
/// time pass (the memory store takes the caller's clock; Redis expires
/// records on its own clock, so its fixture really waits).
trait Fixture: Send + Sync + 'static {
    type Store: ReplayStore;
    fn store(&self) -> Arc<Self::Store>;
    fn now_ms(&self) -> i64;
    async fn pass(&self, d: Duration);
    async fn cleanup(self);
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

struct Memory {
    store: Arc<MemoryReplayStore>,
    now: AtomicI64,
}

impl Memory {
    fn new() -> Self {
        Self::with(MemoryReplayStore::builder().tolerance(Duration::ZERO))
    }

    fn with(builder: queuegate::replay::MemoryReplayStoreBuilder) -> Self {
        Self {
            store: Arc::new(builder.build().expect("valid settings")),
            now: AtomicI64::new(wall_ms()),
        }
    }
}

impl Fixture for Memory {
    type Store = MemoryReplayStore;
    fn store(&self) -> Arc<MemoryReplayStore> {
        self.store.clone()
    }
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
    async fn pass(&self, d: Duration) {
        self.now.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    async fn cleanup(self) {}
}

fn scope(name: &str) -> ScopeId {
    ScopeId::from_name(name)
}

fn check<S: ReplayStore>(s: &S, id: TicketId, sequence: u32, now_ms: i64) -> ReplayCheck {
    ReplayCheck {
        scope: scope("reserve"),
        ticket_id: id,
        sequence,
        kind: TicketKind::Admitted,
        same_client: true,
        live_until_ms: now_ms + 60_000,
        expires_at_ms: now_ms + 60_000,
        now_ms,
        grace_ms: 5_000,
        hold: None,
        // As minted: the epoch of the chain's shard (per shard on a
        // Cluster, whose scripts compare it; the store's own otherwise).
        epoch: s.epoch_of(&id),
    }
}

/// A single-use check that takes a 1-second hold.
fn hold<S: ReplayStore>(s: &S, id: TicketId, sequence: u32, now_ms: i64) -> ReplayCheck {
    ReplayCheck {
        hold: Some(Hold::new(now_ms + 1_000)),
        ..check(s, id, sequence, now_ms)
    }
}

fn settle(c: &ReplayCheck, settlement: Settlement, now_ms: i64) -> SettleHold {
    SettleHold {
        scope: c.scope,
        ticket_id: c.ticket_id,
        kind: c.kind,
        hold: c.hold.expect("a hold"),
        settlement,
        expires_at_ms: c.expires_at_ms,
        now_ms,
    }
}

/// Takes a hold and commits it at once: the old `consume`.
async fn consume<S: ReplayStore>(s: &S, c: ReplayCheck) -> Result<ReplayVerdict, StoreError> {
    let verdict = s.check(&c).await;
    if verdict == FRESH {
        s.settle(&settle(&c, Settlement::Commit, c.now_ms))
            .await
            .expect("commit");
    }
    verdict
}

/// An advance of ticket `id`, with the epoch its chain was minted under
/// (per shard on a Cluster, whose advance compares it).
fn advance<S: ReplayStore>(s: &S, id: TicketId, sequence: u32, now_ms: i64) -> AdvanceRequest {
    AdvanceRequest {
        epoch: s.epoch_of(&id),
        ticket_id: id,
        sequence,
        kind: TicketKind::Waiting,
        live_until_ms: now_ms + 60_000,
        expires_at_ms: now_ms + 60_000,
        now_ms,
        grace_ms: 5_000,
    }
}

const FRESH: Result<ReplayVerdict, StoreError> = Ok(ReplayVerdict::Fresh);

fn replayed(reason: ReplayReason) -> Result<ReplayVerdict, StoreError> {
    Ok(ReplayVerdict::Replayed(reason))
}

async fn single_use<F: Fixture>(f: F) {
    let s = f.store();
    let s = &*s;
    let now = f.now_ms();
    let id = TicketId::random();
    assert_eq!(consume(s, hold(s, id, 3, now)).await, FRESH);
    // Again by the same client, and by someone else: both refused, told apart.
    assert_eq!(
        consume(s, hold(s, id, 3, now + 1)).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    let other = ReplayCheck {
        same_client: false,
        ..hold(s, id, 3, now + 2)
    };
    assert_eq!(
        s.check(&other).await,
        replayed(ReplayReason::ConsumedByOtherClient)
    );
    // Consumption covers every sequence of the chain.
    assert_eq!(
        consume(s, hold(s, id, 4, now + 3)).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    // It is per scope: another single-use scope may consume the chain once.
    let elsewhere = ReplayCheck {
        scope: scope("pay"),
        ..hold(s, id, 4, now + 4)
    };
    assert_eq!(consume(s, elsewhere).await, FRESH);
    assert_eq!(
        consume(s, elsewhere).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    // A session check of the consumed chain is still fine.
    assert_eq!(s.check(&check(s, id, 4, now + 5)).await, FRESH);
    // A stale sequence is refused without taking the chain, so a clone
    // holder cannot burn a chain for its rightful owner.
    let id2 = TicketId::random();
    assert!(matches!(
        s.advance(&advance(s, id2, 0, now)).await,
        Ok(Advance::Next { sequence: 1, .. })
    ));
    assert_eq!(s.check(&check(s, id2, 1, now + 1)).await, FRESH);
    assert_eq!(
        consume(s, hold(s, id2, 0, now + 2)).await,
        replayed(ReplayReason::StaleSequence)
    );
    assert_eq!(consume(s, hold(s, id2, 1, now + 3)).await, FRESH);
    f.cleanup().await;
}

/// A hold: a concurrent use is in progress; a release frees the chain at
/// once; an unsettled hold blocks it until it expires, then lets only the
/// same client in; a stale release changes nothing; a commit always
/// consumes.
async fn holds<F: Fixture>(f: F) {
    let s = f.store();
    let s = &*s;
    let now = f.now_ms();
    let id = TicketId::random();
    let first = hold(s, id, 0, now);
    assert_eq!(s.check(&first).await, FRESH);
    let until = first.hold.unwrap().until_ms;
    // Concurrent uses of the chain while it is held.
    assert_eq!(
        s.check(&hold(s, id, 0, now + 1)).await,
        Ok(ReplayVerdict::InProgress { until_ms: until })
    );
    assert_eq!(
        s.check(&ReplayCheck {
            same_client: false,
            ..hold(s, id, 0, now + 1)
        })
        .await,
        replayed(ReplayReason::ConsumedByOtherClient)
    );
    // A side-effect-free refusal releases: the retry takes a hold at once.
    s.settle(&settle(&first, Settlement::Release, now + 2))
        .await
        .unwrap();
    let second = hold(s, id, 0, now + 3);
    assert_eq!(s.check(&second).await, FRESH);
    // A late release of the first hold does not free the second.
    s.settle(&settle(&first, Settlement::Release, now + 4))
        .await
        .unwrap();
    assert!(matches!(
        s.check(&hold(s, id, 0, now + 5)).await,
        Ok(ReplayVerdict::InProgress { .. })
    ));
    // The second is never settled (a 5xx, a client gone): after its hold
    // expires, only the same client gets a new one.
    f.pass(Duration::from_millis(1_100)).await;
    let later = f.now_ms();
    assert_eq!(
        s.check(&ReplayCheck {
            same_client: false,
            ..hold(s, id, 0, later)
        })
        .await,
        replayed(ReplayReason::ConsumedByOtherClient)
    );
    let third = hold(s, id, 0, later + 1);
    assert_eq!(s.check(&third).await, FRESH);
    // The second's own release is stale now (the third holds).
    s.settle(&settle(&second, Settlement::Release, later + 2))
        .await
        .unwrap();
    assert!(matches!(
        s.check(&hold(s, id, 0, later + 3)).await,
        Ok(ReplayVerdict::InProgress { .. })
    ));
    // A commit consumes, even one by a hold that was superseded.
    s.settle(&settle(&second, Settlement::Commit, later + 4))
        .await
        .unwrap();
    assert_eq!(
        s.check(&hold(s, id, 0, later + 5)).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    // A commit whose record is gone still consumes.
    let id3 = TicketId::random();
    let lone = hold(s, id3, 0, later);
    s.settle(&settle(&lone, Settlement::Commit, later))
        .await
        .unwrap();
    assert_eq!(
        s.check(&hold(s, id3, 0, later + 1)).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    f.cleanup().await;
}

async fn sequence_order_and_grace<F: Fixture>(f: F) {
    let s = f.store();
    let t = f.now_ms();
    let id = TicketId::random();
    // A first presentation starts the record; repeats of the current
    // ticket are fine.
    assert_eq!(s.check(&check(&*s, id, 0, t)).await, FRESH);
    assert_eq!(s.check(&check(&*s, id, 0, t + 10)).await, FRESH);
    // The issuer renews 0 -> 1.
    assert_eq!(
        s.advance(&advance(&*s, id, 0, t + 100)).await,
        Ok(Advance::Next {
            sequence: 1,
            issued_at_ms: t + 100
        })
    );
    // The response was lost: a retry with 0 inside the grace gets the same
    // successor, and 0 is still accepted.
    assert_eq!(
        s.advance(&advance(&*s, id, 0, t + 2_000)).await,
        Ok(Advance::Retry {
            sequence: 1,
            issued_at_ms: t + 100
        })
    );
    assert_eq!(s.check(&check(&*s, id, 0, t + 2_100)).await, FRESH);
    // Past the grace, 0 is stale.
    assert_eq!(
        s.check(&check(&*s, id, 0, t + 5_100)).await,
        replayed(ReplayReason::StaleSequence)
    );
    assert_eq!(
        s.advance(&advance(&*s, id, 0, t + 5_100)).await,
        Ok(Advance::Stale)
    );
    // Once 1 is seen, 0 is stale at once, even inside a new grace.
    assert!(matches!(
        s.advance(&advance(&*s, id, 1, t + 6_000)).await,
        Ok(Advance::Next { sequence: 2, .. })
    ));
    assert_eq!(s.check(&check(&*s, id, 2, t + 6_001)).await, FRESH);
    assert_eq!(
        s.check(&check(&*s, id, 1, t + 6_002)).await,
        replayed(ReplayReason::StaleSequence)
    );
    assert_eq!(
        s.advance(&advance(&*s, id, 1, t + 6_003)).await,
        Ok(Advance::Stale)
    );
    // A newer sequence than the record knows (a lost issue write) is
    // accepted and becomes the highest.
    assert_eq!(s.check(&check(&*s, id, 9, t + 7_000)).await, FRESH);
    assert_eq!(
        s.check(&check(&*s, id, 2, t + 7_001)).await,
        replayed(ReplayReason::StaleSequence)
    );
    // The end of the sequence range cannot advance.
    assert_eq!(
        s.advance(&advance(&*s, TicketId::random(), u32::MAX, t))
            .await,
        Ok(Advance::Stale)
    );
    // Chains do not interfere.
    let other = TicketId::random();
    assert_eq!(s.check(&check(&*s, other, 0, t + 7_002)).await, FRESH);
    f.cleanup().await;
}

async fn expiry<F: Fixture>(f: F) {
    let s = f.store();
    let t = f.now_ms();
    let id = TicketId::random();
    let short = |c: ReplayCheck| ReplayCheck {
        expires_at_ms: t + 200,
        ..c
    };
    assert_eq!(consume(&*s, short(hold(&*s, id, 5, t))).await, FRESH);
    assert_eq!(
        consume(&*s, short(hold(&*s, id, 5, t + 1))).await,
        replayed(ReplayReason::ConsumedBySameClient)
    );
    assert_eq!(
        s.check(&short(check(&*s, id, 4, t + 2))).await,
        replayed(ReplayReason::StaleSequence)
    );
    // Well past the ticket's expiry (plus the fixture's zero tolerance,
    // rounded up to the store's granularity), the records are gone: the
    // verifier refuses the expired ticket itself, the store forgets it.
    f.pass(Duration::from_millis(2_500)).await;
    let later = f.now_ms();
    assert_eq!(
        consume(
            &*s,
            ReplayCheck {
                expires_at_ms: later + 60_000,
                ..hold(&*s, id, 4, later)
            }
        )
        .await,
        FRESH
    );
    f.cleanup().await;
}

/// N tasks present the same single-use ticket at once: exactly one wins.
async fn concurrency<F: Fixture>(f: F) {
    const N: usize = 32;
    let s = f.store();
    let now = f.now_ms();
    for round in 0..4 {
        let id = TicketId::random();
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for i in 0..N {
            let s = s.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let c = ReplayCheck {
                    same_client: i % 2 == 0,
                    ..hold(&*s, id, round, now + i as i64)
                };
                barrier.wait().await;
                s.check(&c).await
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(ReplayVerdict::Fresh) => fresh += 1,
                Ok(
                    ReplayVerdict::Replayed(ReplayReason::ConsumedByOtherClient)
                    | ReplayVerdict::InProgress { .. },
                ) => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "round {round}");
    }
    f.cleanup().await;
}

macro_rules! conformance {
    ($name:ident, $fixture:expr $(, #[$attr:meta])*) => {
        mod $name {
            use super::*;

            #[tokio::test]
            $(#[$attr])*
            async fn single_use() {
                super::single_use($fixture).await
            }

            #[tokio::test]
            $(#[$attr])*
            async fn holds() {
                super::holds($fixture).await
            }

            #[tokio::test]
            $(#[$attr])*
            async fn sequence_order_and_grace() {
                super::sequence_order_and_grace($fixture).await
            }

            #[tokio::test]
            $(#[$attr])*
            async fn expiry() {
                super::expiry($fixture).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$attr])*
            async fn concurrency() {
                super::concurrency($fixture).await
            }
        }
    };
}

conformance!(memory, Memory::new());

#[cfg(feature = "redis")]
mod redis_fixture {
    use super::*;
    use queuegate::replay::RedisReplayStore;

    /// A Redis store on 127.0.0.1:6379 under a random prefix of its own,
    /// deleted afterwards. Panics (fails the test) when Redis is absent.
    pub struct RedisFixture {
        store: Arc<RedisReplayStore>,
        _turn: Option<cluster_support::Turn>,
    }

    impl RedisFixture {
        pub async fn new() -> Self {
            let prefix = format!("qg-test-{}", TicketId::random());
            let store = RedisReplayStore::builder("redis://127.0.0.1:6379/")
                .prefix(&prefix)
                .tolerance(Duration::ZERO)
                .connect()
                .await
                .expect("this test needs Redis on 127.0.0.1:6379");
            Self {
                store: Arc::new(store),
                _turn: None,
            }
        }

        /// The same on the Redis Cluster of `.ci/redis-cluster start`
        /// (127.0.0.1:7000-7005): the shards' epochs and fences, and a
        /// replica's `WAIT` on every hold. Panics when it is absent.
        pub async fn cluster() -> Self {
            // Held for the test: no failover test runs meanwhile.
            let turn = cluster_support::shared_turn();
            cluster_support::wait_whole(Duration::from_secs(20));
            let prefix = format!("qg-test-{}", TicketId::random());
            let store = RedisReplayStore::cluster_builder(&cluster_support::SEEDS)
                .prefix(&prefix)
                .tolerance(Duration::ZERO)
                .connect()
                .await
                .expect(cluster_support::NEEDED);
            assert!(store.is_cluster());
            Self {
                store: Arc::new(store),
                _turn: Some(turn),
            }
        }
    }

    impl Fixture for RedisFixture {
        type Store = RedisReplayStore;
        fn store(&self) -> Arc<RedisReplayStore> {
            self.store.clone()
        }
        fn now_ms(&self) -> i64 {
            wall_ms()
        }
        async fn pass(&self, d: Duration) {
            // Redis expires records on its own clock: really wait.
            tokio::time::sleep(d).await;
        }
        async fn cleanup(self) {
            self.store.clear().await.expect("delete the test's keys");
        }
    }
}
#[cfg(feature = "redis")]
use redis_fixture::RedisFixture;

#[cfg(feature = "redis")]
conformance!(redis, RedisFixture::new().await, #[ignore = "needs Redis"]);

#[cfg(feature = "redis")]
conformance!(
    redis_cluster,
    RedisFixture::cluster().await,
    #[ignore = "needs Redis Cluster"]
);

// Capacity is the memory store's (Redis's bound is its `maxmemory`, with
// the `noeviction` policy turning a full Redis into errors: fail closed).
mod memory_capacity {
    use super::*;

    #[tokio::test]
    async fn waiting_and_admitted_capacities_are_apart_and_fail_closed() {
        let f = Memory::with(
            MemoryReplayStore::builder()
                .waiting_capacity(3)
                .admitted_capacity(2)
                .tolerance(Duration::ZERO),
        );
        let s = f.store();
        let now = f.now_ms();
        // A join flood fills the waiting capacity...
        let waiting: Vec<_> = (0..3).map(|_| TicketId::random()).collect();
        for id in &waiting {
            assert!(matches!(
                s.advance(&advance(&*s, *id, 0, now)).await,
                Ok(Advance::Next { .. })
            ));
        }
        assert_eq!(
            s.advance(&advance(&*s, TicketId::random(), 0, now)).await,
            Err(StoreError::Capacity)
        );
        // ...and existing waiting chains still renew (no new record)...
        assert!(matches!(
            s.advance(&advance(&*s, waiting[0], 1, now + 1)).await,
            Ok(Advance::Next { sequence: 2, .. })
        ));
        // ...while admitted people can still book.
        let admitted = TicketId::random();
        assert_eq!(consume(&*s, hold(&*s, admitted, 0, now)).await, FRESH);
        assert_eq!(s.len_of(TicketKind::Admitted), 2); // chain + consumption
        assert_eq!(
            s.check(&check(&*s, TicketId::random(), 0, now)).await,
            Err(StoreError::Capacity)
        );
        // A refused write leaves nothing behind; a refused replay neither.
        assert_eq!(
            consume(&*s, hold(&*s, admitted, 0, now + 1)).await,
            replayed(ReplayReason::ConsumedBySameClient)
        );
        assert_eq!(s.len(), 5);
        // Admitting a waiting chain moves it to the admitted capacity, which
        // is full: refused, and the chain stays waiting.
        let admit = AdvanceRequest {
            kind: TicketKind::Admitted,
            ..advance(&*s, waiting[1], 1, now + 2)
        };
        assert_eq!(s.advance(&admit).await, Err(StoreError::Capacity));
        assert_eq!(s.len_of(TicketKind::Waiting), 3);
        // Past retention, capacity comes back without an explicit purge.
        f.pass(Duration::from_secs(120)).await;
        let later = f.now_ms();
        for _ in 0..3 {
            assert!(matches!(
                s.advance(&advance(&*s, TicketId::random(), 0, later)).await,
                Ok(Advance::Next { .. })
            ));
        }
        assert_eq!(
            s.check(&check(&*s, TicketId::random(), 0, later)).await,
            FRESH
        );
        s.purge(later);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn zero_capacity_is_a_config_error() {
        assert!(MemoryReplayStore::builder()
            .waiting_capacity(0)
            .build()
            .is_err());
    }

    #[tokio::test]
    async fn many_chains_expire_in_o_expired_and_leave_nothing() {
        let f = Memory::new();
        let s = f.store();
        let t = f.now_ms();
        for i in 0..20_000i64 {
            let c = ReplayCheck {
                expires_at_ms: t + (i % 600) * 1_000,
                ..check(&*s, TicketId::random(), 0, t)
            };
            assert_eq!(s.check(&c).await, FRESH);
        }
        assert_eq!(s.len(), 20_000);
        // Traffic after everything expired drains the old records as it
        // goes (a few per call), with no purge.
        f.pass(Duration::from_secs(700)).await;
        let later = f.now_ms();
        for _ in 0..2_000 {
            assert_eq!(
                s.check(&check(&*s, TicketId::random(), 0, later)).await,
                FRESH
            );
        }
        assert!(s.len() < 12_000, "len {}", s.len());
        s.purge(later);
        assert_eq!(s.len(), 2_000);
    }
}

/// The Redis fixtures fail (never skip) without Redis: connecting to a port
/// with nothing behind it is an error within the timeout, and settings that
/// cannot work are refused before connecting.
#[cfg(feature = "redis")]
mod redis_absent {
    use super::*;
    use queuegate::replay::RedisReplayStore;

    #[tokio::test]
    async fn connecting_to_nothing_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: nothing listens on `port` any more.
        let r = RedisReplayStore::builder(&format!("redis://127.0.0.1:{port}/"))
            .timeout(Duration::from_millis(200))
            .connect()
            .await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn a_prefix_with_braces_is_refused() {
        let r = RedisReplayStore::builder("redis://127.0.0.1:1/")
            .prefix("a{b}")
            .connect()
            .await;
        let err = r.unwrap_err().to_string();
        assert!(err.contains("prefix"), "{err}");
    }
}
