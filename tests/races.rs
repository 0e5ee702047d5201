//! Races on the replay state (threat T7): many tasks presenting the same
//! single-use ticket at once give at most one successful handler
//! completion (the first takes a hold, the others are `in_progress`, and
//! once it commits they are `replayed`), whatever the handlers' outcomes
//! (success, a side-effect-free refusal that releases, a failure that
//! keeps the hold); a session chain presented with interleaved sequence
//! numbers never accepts an older ticket after a newer one.
//!
//! Every scenario is a generic function over [`ReplayStore`], instantiated
//! at the bottom of the file for memory, Redis (127.0.0.1:6379) and the
//! Redis Cluster of `.ci/redis-cluster start` (127.0.0.1:7000-7005); the
//! Redis ones are ignored unless `--include-ignored`, and fail when their
//! server is absent.

mod adversary;
#[cfg(feature = "redis")]
mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use queuegate::{
    Clock, ManualClock, MemoryReplayStore, Policy, RejectionCode, ReplayMode, ReplayReason,
    ReplayStore, Settlement, Verified, Verifier,
};
use tokio::sync::Barrier;

use adversary::*;

/// How many tasks present the same ticket at once.
const CONTENDERS: usize = 32;
/// How many tickets each race is repeated with.
const ROUNDS: usize = 20;

fn single_use() -> Policy {
    Policy::new(QUEUE)
        .scope("reserve")
        .replay(ReplayMode::SingleUse)
}

/// What a simulated handler does once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Succeeds: the layer commits.
    Success,
    /// Refuses without side effects: the layer releases.
    Refuse,
    /// Fails (5xx, panic, timeout, client gone): the hold is kept.
    Fail,
}

/// Runs a handler with `outcome` for an admitted request, as the layer
/// does: it completes before its hold expires (the layer's timeout ends it
/// earlier), then the hold is settled. Returns whether it succeeded.
async fn handle<S: ReplayStore>(
    verifier: &Verifier<ManualClock, S>,
    verified: &Verified,
    outcome: Outcome,
) -> bool {
    let hold = verified
        .hold
        .expect("a single_use admission holds the chain");
    assert!(verifier.now_ms() < hold.until_ms, "handled within the hold");
    let settlement = match outcome {
        Outcome::Success => Settlement::Commit,
        Outcome::Refuse => Settlement::Release,
        Outcome::Fail => return false,
    };
    verifier
        .settle(verified, settlement)
        .expect("a hold to settle")
        .await
        .expect("settled");
    outcome == Outcome::Success
}

/// Presents each ticket from `CONTENDERS` tasks released together; each
/// admitted one runs a handler with `outcome`. Returns how many handlers
/// succeeded and every rejection seen.
async fn race<S: ReplayStore>(
    verifier: &Verifier<ManualClock, S>,
    tickets: Vec<String>,
    binding: &'static [u8],
) -> (usize, Vec<queuegate::Rejection>) {
    race_with(verifier, tickets, binding, |_| Outcome::Success).await
}

async fn race_with<S: ReplayStore>(
    verifier: &Verifier<ManualClock, S>,
    tickets: Vec<String>,
    binding: &'static [u8],
    outcome: impl Fn(usize) -> Outcome,
) -> (usize, Vec<queuegate::Rejection>) {
    let barrier = Arc::new(Barrier::new(tickets.len()));
    let handles: Vec<_> = tickets
        .into_iter()
        .enumerate()
        .map(|(i, ticket)| {
            let verifier = verifier.clone();
            let barrier = barrier.clone();
            let outcome = outcome(i);
            tokio::spawn(async move {
                barrier.wait().await;
                match verifier.verify(&presented(&ticket, binding)).await {
                    Ok(v) if v.hold.is_some() => Ok(handle(&verifier, &v, outcome).await),
                    Ok(_) => Ok(true),
                    Err(r) => Err(r),
                }
            })
        })
        .collect();
    let mut succeeded = 0;
    let mut rejected = Vec::new();
    for h in handles {
        match h.await.expect("task") {
            Ok(true) => succeeded += 1,
            Ok(false) => {}
            Err(r) => rejected.push(r),
        }
    }
    (succeeded, rejected)
}

/// The same single-use ticket from many tasks at once: one success; the
/// others were in progress or find the chain consumed.
async fn same_ticket_admits_exactly_once<S: ReplayStore>(store: Arc<S>, start_ms: i64) {
    let f = Fixture::new(store, single_use(), ManualClock::new(start_ms));
    for _ in 0..ROUNDS {
        let minted = f.admitted(b"me");
        let (admitted, rejected) = race(&f.verifier, vec![minted.ticket; CONTENDERS], b"me").await;
        assert_eq!(admitted, 1, "exactly one of {CONTENDERS} succeeds");
        assert_eq!(rejected.len(), CONTENDERS - 1);
        for r in rejected {
            assert!(
                r.code() == RejectionCode::InProgress
                    || r == queuegate::Rejection::Replayed {
                        reason: ReplayReason::ConsumedBySameClient,
                        ticket_id: minted.claims.ticket_id,
                    },
                "{r:?}"
            );
        }
    }
}

/// Waves of contenders on one chain whose handlers succeed, refuse
/// (release) or fail (keep the hold) in a pseudo-random mix, with time
/// passing between waves so that kept holds expire: never more than one
/// success per chain, and a chain whose holders only refused or failed is
/// eventually booked.
async fn mixed_outcomes_never_succeed_twice<S: ReplayStore>(store: Arc<S>, start_ms: i64) {
    let f = Fixture::new(store, single_use(), ManualClock::new(start_ms));
    let hold_ms = single_use().hold_ms();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..ROUNDS / 2 {
        let minted = f.join(b"me", &admit_now(Duration::from_secs(3_600)));
        let mut successes = 0;
        for wave in 0..8 {
            let mix: Vec<Outcome> = (0..CONTENDERS / 4)
                .map(|_| match next() % 4 {
                    0 if wave >= 4 => Outcome::Success,
                    0 | 1 => Outcome::Refuse,
                    _ => Outcome::Fail,
                })
                .collect();
            let (won, rejected) = race_with(
                &f.verifier,
                vec![minted.ticket.clone(); mix.len()],
                b"me",
                |i| mix[i],
            )
            .await;
            successes += won;
            assert!(successes <= 1, "two successful bookings of one chain");
            for r in &rejected {
                assert!(
                    matches!(
                        r.code(),
                        RejectionCode::InProgress | RejectionCode::Replayed
                    ),
                    "{r:?}"
                );
            }
            // Sometimes within the hold, sometimes past it.
            f.clock
                .advance(Duration::from_millis(next() % (2 * hold_ms as u64)));
        }
        // Past every hold, a success-only wave books if nobody did.
        f.clock.advance(Duration::from_millis(hold_ms as u64));
        let (won, _) = race(&f.verifier, vec![minted.ticket.clone(); 8], b"me").await;
        assert_eq!(successes + won, 1, "booked exactly once in the end");
    }
}

/// Every ticket of one chain (the current one, and an older one still in
/// its renewal grace) raced together: consumption covers the whole chain.
async fn one_chain_admits_exactly_once<S: ReplayStore>(store: Arc<S>, start_ms: i64) {
    let f = Fixture::new(store, single_use(), ManualClock::new(start_ms));
    for _ in 0..ROUNDS {
        let first = f.admitted(b"me");
        let second = f
            .renew(&first.ticket, b"me", &admit_now(Duration::from_secs(60)))
            .await
            .expect("renew");
        assert_eq!(second.claims.sequence, 1);
        let tickets = (0..CONTENDERS)
            .map(|i| {
                if i % 2 == 0 {
                    first.ticket.clone()
                } else {
                    second.ticket.clone()
                }
            })
            .collect();
        let (admitted, rejected) = race(&f.verifier, tickets, b"me").await;
        assert_eq!(admitted, 1);
        assert!(rejected.iter().all(|r| matches!(
            r.code(),
            RejectionCode::Replayed | RejectionCode::InProgress
        )));
    }
}

/// Two scopes consume independently, each exactly once, even raced
/// together on one store.
async fn each_scope_admits_exactly_once<S: ReplayStore>(store: Arc<S>, start_ms: i64) {
    let clock = ManualClock::new(start_ms);
    let f = Fixture::new(store.clone(), single_use(), clock.clone());
    let other = Verifier::new(keys(), single_use().scope("pay"), clock, store).unwrap();
    for _ in 0..ROUNDS {
        let minted = f.admitted(b"me");
        let a = race(
            &f.verifier,
            vec![minted.ticket.clone(); CONTENDERS / 2],
            b"me",
        );
        let b = race(&other, vec![minted.ticket.clone(); CONTENDERS / 2], b"me");
        let ((admitted_a, _), (admitted_b, _)) = tokio::join!(a, b);
        assert_eq!((admitted_a, admitted_b), (1, 1));
    }
}

/// With no renewal grace, only the newest ticket of a session chain is
/// accepted, however the presentations interleave.
async fn session_accepts_only_the_newest<S: ReplayStore>(store: Arc<S>, start_ms: i64) {
    let policy = Policy::new(QUEUE).renewal_grace(Duration::ZERO);
    let f = Fixture::new(store, policy, ManualClock::new(start_ms));
    for _ in 0..ROUNDS / 4 {
        let mut chain = vec![f.admitted(b"me")];
        for _ in 0..5 {
            let next = f
                .renew(
                    &chain.last().unwrap().ticket,
                    b"me",
                    &admit_now(Duration::from_secs(60)),
                )
                .await
                .expect("renew");
            chain.push(next);
        }
        let newest = chain.last().unwrap().claims.sequence;
        let tickets: Vec<_> = (0..CONTENDERS)
            .map(|i| chain[i % chain.len()].ticket.clone())
            .collect();
        let sequences: Vec<u32> = (0..CONTENDERS)
            .map(|i| chain[i % chain.len()].claims.sequence)
            .collect();
        let newest_count = sequences.iter().filter(|s| **s == newest).count();
        let (admitted, rejected) = race(&f.verifier, tickets, b"me").await;
        assert_eq!(admitted, newest_count, "only sequence {newest} is accepted");
        for r in &rejected {
            assert_eq!(
                r,
                &queuegate::Rejection::Replayed {
                    reason: ReplayReason::StaleSequence,
                    ticket_id: chain[0].claims.ticket_id,
                }
            );
        }
    }
}

/// A server whose clock is behind the store's by more than a ticket's
/// remaining life (a clock stepped back, an instance that lags, a process
/// restarted after a step back): a consumed single-use ticket is never
/// admitted a second time. `behind_ms` is how far the server's clock is
/// behind the store's; `start_ms` the store's time.
async fn a_lagging_clock_never_admits_twice<S: ReplayStore>(
    store: Arc<S>,
    start_ms: i64,
    behind_ms: i64,
) {
    let f = Fixture::new(store, single_use(), ManualClock::new(start_ms - behind_ms));
    let t = f.admitted(b"me");
    let first = f.verifier.verify(&presented(&t.ticket, b"me")).await;
    if let Ok(v) = &first {
        assert!(handle(&f.verifier, v, Outcome::Success).await);
    }
    let second = f.verifier.verify(&presented(&t.ticket, b"me")).await;
    // The first may be refused too (fail closed: the store cannot vouch
    // for it), but never both admitted.
    assert!(
        !(first.is_ok() && second.is_ok()),
        "a single-use ticket was admitted twice with the clock {behind_ms} ms behind"
    );
    assert_eq!(second.unwrap_err().code(), RejectionCode::Replayed);
}

#[derive(Debug, Clone)]
enum Op {
    /// Heart-beat the newest ticket the client holds.
    Renew,
    /// Heart-beat the k-th newest ticket issued (a clone or a retry).
    RenewOld(usize),
    /// Present the k-th newest ticket issued on the protected route.
    Present(usize),
    /// Let time pass (ms).
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Renew),
        1 => (0usize..4).prop_map(Op::RenewOld),
        4 => (0usize..4).prop_map(Op::Present),
        2 => (0u16..4_000).prop_map(Op::Tick),
    ]
}

/// Any interleaving of renewals, presentations of old and new tickets and
/// time passing: once a sequence was accepted on the protected route, no
/// older one ever is; once the grace has passed, only the newest is.
async fn interleaved_sequences_never_go_back<S: ReplayStore>(
    store: Arc<S>,
    start_ms: i64,
    ops: Vec<Op>,
) {
    let grace_ms: i64 = 5_000;
    let policy = Policy::new(QUEUE).renewal_grace(Duration::from_millis(grace_ms as u64));
    let f = Fixture::new(store, policy, ManualClock::new(start_ms));
    let live = admit_now(Duration::from_secs(3_600));
    let mut issued = vec![f.join(b"me", &live)];
    let mut held = 0usize; // the index the client's newest ticket is at
    let mut accepted_max: Option<u32> = None;
    let mut last_issue_ms = start_ms;
    for op in ops {
        match op {
            Op::Renew | Op::RenewOld(_) => {
                let k = match op {
                    Op::RenewOld(k) => k.min(issued.len() - 1),
                    _ => 0,
                };
                let from = if k == 0 { held } else { issued.len() - 1 - k };
                if let Ok(next) = f.renew(&issued[from].ticket, b"me", &live).await {
                    if next.claims.sequence as usize == issued.len() {
                        last_issue_ms = f.clock.now_ms();
                        issued.push(next);
                    }
                    held = issued.len() - 1;
                }
            }
            Op::Present(k) => {
                let i = issued.len() - 1 - k.min(issued.len() - 1);
                let seq = issued[i].claims.sequence;
                let r = f
                    .verifier
                    .verify(&presented(&issued[i].ticket, b"me"))
                    .await;
                if let Err(e) = r {
                    assert_eq!(e.code(), RejectionCode::Replayed);
                } else {
                    if let Some(max) = accepted_max {
                        assert!(seq >= max, "sequence {seq} accepted after {max}");
                    }
                    accepted_max = Some(accepted_max.map_or(seq, |m| m.max(seq)));
                    let newest = issued.len() as u32 - 1;
                    let past_grace = f.clock.now_ms() >= last_issue_ms + grace_ms;
                    assert!(
                        seq == newest || !past_grace,
                        "sequence {seq} accepted past the grace of {newest}"
                    );
                    assert!(seq + 1 >= newest, "only the newest or the one before");
                }
            }
            Op::Tick(ms) => f.clock.advance(Duration::from_millis(u64::from(ms))),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()
        .unwrap()
}

/// The scenarios against the in-memory store.
mod memory {
    use super::*;

    fn store() -> Arc<MemoryReplayStore> {
        Arc::new(MemoryReplayStore::new())
    }

    #[test]
    fn same_ticket_admits_exactly_once() {
        runtime().block_on(super::same_ticket_admits_exactly_once(store(), NOW_MS));
    }

    #[test]
    fn one_chain_admits_exactly_once() {
        runtime().block_on(super::one_chain_admits_exactly_once(store(), NOW_MS));
    }

    #[test]
    fn mixed_outcomes_never_succeed_twice() {
        runtime().block_on(super::mixed_outcomes_never_succeed_twice(store(), NOW_MS));
    }

    #[test]
    fn each_scope_admits_exactly_once() {
        runtime().block_on(super::each_scope_admits_exactly_once(store(), NOW_MS));
    }

    #[test]
    fn session_accepts_only_the_newest() {
        runtime().block_on(super::session_accepts_only_the_newest(store(), NOW_MS));
    }

    #[test]
    fn a_lagging_clock_never_admits_twice() {
        // The memory store keeps time by its callers' clocks: a lagging
        // clock is the store's clock.
        runtime().block_on(super::a_lagging_clock_never_admits_twice(
            store(),
            NOW_MS,
            0,
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn interleaved_sequences_never_go_back(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(super::interleaved_sequences_never_go_back(store(), NOW_MS, ops));
        }
    }
}

/// The scenarios against a Redis store (feature `redis`), once per
/// deployment: `$turn` is held while a test runs, `$store` connects (and
/// panics, failing the test, when the server is absent). Redis expires
/// records on its own clock, so these start at the wall-clock time.
#[cfg(feature = "redis")]
macro_rules! redis_scenarios {
    ($name:ident, $turn:expr, $store:expr, $ignore:literal) => {
        mod $name {
            use super::*;
            use queuegate::replay::RedisReplayStore;
            use queuegate::{Clock, SystemClock};

            fn run<F: std::future::Future<Output = ()>>(
                scenario: impl FnOnce(Arc<RedisReplayStore>, i64) -> F,
            ) {
                let _turn = $turn;
                runtime().block_on(async {
                    let store = Arc::new($store.await);
                    scenario(store.clone(), SystemClock.now_ms()).await;
                    store.clear().await.expect("delete the test's keys");
                });
            }

            #[test]
            #[ignore = $ignore]
            fn same_ticket_admits_exactly_once() {
                run(super::same_ticket_admits_exactly_once);
            }

            #[test]
            #[ignore = $ignore]
            fn one_chain_admits_exactly_once() {
                run(super::one_chain_admits_exactly_once);
            }

            #[test]
            #[ignore = $ignore]
            fn mixed_outcomes_never_succeed_twice() {
                run(super::mixed_outcomes_never_succeed_twice);
            }

            #[test]
            #[ignore = $ignore]
            fn each_scope_admits_exactly_once() {
                run(super::each_scope_admits_exactly_once);
            }

            #[test]
            #[ignore = $ignore]
            fn session_accepts_only_the_newest() {
                run(super::session_accepts_only_the_newest);
            }

            /// Regression: Redis expires records on its own clock, so a
            /// server more than a ticket's life behind it found no record
            /// of a consumed ticket and admitted it again.
            #[test]
            #[ignore = $ignore]
            fn a_lagging_clock_never_admits_twice() {
                for behind_ms in [0, 30_000, 3 * 3_600_000, 48 * 3_600_000] {
                    run(|store, start| {
                        super::a_lagging_clock_never_admits_twice(store, start, behind_ms)
                    });
                }
            }

            #[test]
            #[ignore = $ignore]
            fn interleaved_sequences_never_go_back() {
                // A fixed sample of interleavings (each case is a round
                // trip per step, so fewer than against memory).
                let mut runner =
                    proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
                runner
                    .run(&proptest::collection::vec(op(), 1..40), |ops| {
                        run(|store, start| {
                            super::interleaved_sequences_never_go_back(store, start, ops)
                        });
                        Ok(())
                    })
                    .unwrap();
            }
        }
    };
}

// Redis on 127.0.0.1:6379, under a prefix of each test's own.
#[cfg(feature = "redis")]
redis_scenarios!(
    redis,
    (),
    async {
        queuegate::replay::RedisReplayStore::builder("redis://127.0.0.1:6379/")
            .prefix(&format!("qg-races-{}", queuegate::TicketId::random()))
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379")
    },
    "needs Redis"
);

// The Redis Cluster of `.ci/redis-cluster start` (127.0.0.1:7000-7005):
// per-shard epochs, and every hold confirmed by a replica (`WAIT 1`). Each
// test holds the shared turn, so no failover test runs meanwhile.
#[cfg(feature = "redis")]
redis_scenarios!(
    redis_cluster,
    {
        let turn = cluster_support::shared_turn();
        cluster_support::wait_whole(Duration::from_secs(20));
        turn
    },
    async {
        queuegate::replay::RedisReplayStore::cluster_builder(&cluster_support::SEEDS)
            .prefix(&format!("qg-races-{}", queuegate::TicketId::random()))
            .connect()
            .await
            .expect(cluster_support::NEEDED)
    },
    "needs Redis Cluster"
);
