//! Every verifier and issuer rule with an injected clock (SPEC.md §8, §9):
//! each rejection code, the boundaries, the heartbeat chain, the renewal
//! grace, the client-clock evidence, monitor mode and the per-boot epoch.

mod common;

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use queuegate::replay::{Advance, AdvanceRequest, ReplayCheck, ReplayVerdict};
use queuegate::{
    Claims, ClientTime, ClientTimeRule, Clock, ConfigError, Issuer, JoinDecision, KeyRing,
    ManualClock, MemoryReplayStore, Minted, Mode, Policy, Presented, Rejection, RejectionCode,
    ReplayMode, ReplayReason, ReplayStore, StoreError, TicketId, TicketKind, Verified, Verifier,
};

const T0: i64 = 1_626_087_600_000; // 2021-07-12T11:00:00Z
const SESSION: &[u8] = b"session-42";
const SECRET: [u8; 32] = [7; 32];
const SEC: Duration = Duration::from_secs(1);

struct Env<S: ReplayStore = MemoryReplayStore> {
    clock: ManualClock,
    keys: Arc<KeyRing>,
    store: Arc<S>,
    issuer: Issuer<ManualClock, S>,
    verifier: Verifier<ManualClock, S>,
}

fn env() -> Env {
    env_with(Policy::new("q"))
}

fn env_with(policy: Policy) -> Env {
    env_store(policy, Arc::new(MemoryReplayStore::new()))
}

fn env_store<S: ReplayStore>(policy: Policy, store: Arc<S>) -> Env<S> {
    let clock = ManualClock::new(T0);
    let keys = Arc::new(KeyRing::new(1, &SECRET).unwrap());
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let verifier = Verifier::new(keys.clone(), policy, clock.clone(), store.clone()).unwrap();
    Env {
        clock,
        keys,
        store,
        issuer,
        verifier,
    }
}

fn decision(admit: bool, live_for: Duration) -> JoinDecision {
    JoinDecision {
        position: if admit { 0 } else { 500 },
        live_for,
        estimated_wait: if admit {
            Duration::ZERO
        } else {
            Duration::from_secs(90)
        },
        admit,
    }
}

fn with(ticket: &str, client_time: ClientTime) -> Presented<'_> {
    Presented {
        ticket: Some(ticket.as_bytes()),
        binding: Some(SESSION),
        client_time,
    }
}

fn plain(ticket: &str) -> Presented<'_> {
    with(ticket, ClientTime::Absent)
}

impl<S: ReplayStore> Env<S> {
    /// The client's clock reading for a client `offset_ms` off the server.
    fn client(&self, offset_ms: i64) -> ClientTime {
        ClientTime::Millis(self.clock.now_ms() + offset_ms)
    }

    fn join(&self, admit: bool, live_for: Duration) -> Minted {
        self.issuer
            .join(SESSION, ClientTime::Absent, &decision(admit, live_for))
            .unwrap()
    }

    async fn heartbeat(
        &self,
        ticket: &str,
        client_time: ClientTime,
        d: &JoinDecision,
    ) -> Result<Minted, Rejection> {
        let current = self.issuer.check(&with(ticket, client_time))?;
        self.issuer.renew(&current, SESSION, d).await
    }

    async fn verify(&self, ticket: &str) -> Result<Verified, Rejection> {
        self.verifier.verify(&plain(ticket)).await
    }

    async fn verify_ct(&self, ticket: &str, ct: ClientTime) -> Result<Verified, Rejection> {
        self.verifier.verify(&with(ticket, ct)).await
    }

    fn at(&self, ms: i64) {
        self.clock.set_ms(ms);
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, Rejection>) -> RejectionCode {
    r.unwrap_err().code()
}

// ---------------------------------------------------------------- each code

#[tokio::test]
async fn missing() {
    let e = env();
    let r = e.verifier.verify(&Presented::default()).await;
    assert_eq!(r.unwrap_err(), Rejection::Missing);
}

#[tokio::test]
async fn malformed_text() {
    let e = env();
    let t = e.join(true, 30 * SEC).ticket;
    for bad in [
        &b""[..],
        b"x",
        &t.as_bytes()[1..],
        &[b'A'; 176],
        &[b'!'; 176],
    ] {
        let r = e
            .verifier
            .verify(&plain(std::str::from_utf8(bad).unwrap()))
            .await;
        assert_eq!(code(r), RejectionCode::Malformed);
    }
}

#[tokio::test]
async fn bad_signature_from_another_secret() {
    let e = env();
    // Same key id and epoch, another secret.
    let forger = Arc::new(KeyRing::new(1, &[8; 32]).unwrap());
    let issuer = Issuer::new(forger, Policy::new("q"), e.clock.clone(), e.store.clone()).unwrap();
    let t = issuer
        .join(SESSION, ClientTime::Absent, &decision(true, 30 * SEC))
        .unwrap();
    assert_eq!(
        e.verify(&t.ticket).await.unwrap_err(),
        Rejection::BadSignature
    );
}

#[tokio::test]
async fn unknown_key() {
    let e = env();
    let other = Arc::new(KeyRing::new(2, &SECRET).unwrap());
    let issuer = Issuer::new(other, Policy::new("q"), e.clock.clone(), e.store.clone()).unwrap();
    let t = issuer
        .join(SESSION, ClientTime::Absent, &decision(true, 30 * SEC))
        .unwrap();
    assert_eq!(
        e.verify(&t.ticket).await.unwrap_err(),
        Rejection::UnknownKey { key_id: 2 }
    );
}

#[tokio::test]
async fn not_admitted_says_how_long_to_wait() {
    let e = env();
    let t = e.join(false, 200 * SEC);
    assert_eq!(t.claims.kind, TicketKind::Waiting);
    let r = e.verify(&t.ticket).await.unwrap_err();
    assert_eq!(
        r,
        Rejection::NotAdmitted {
            retry_after_ms: 90_000
        }
    );
    // Past the estimate, a waiting ticket is still not admitted (at least 1 s).
    e.at(T0 + 95_000);
    let r = e.verify(&t.ticket).await.unwrap_err();
    assert_eq!(
        r,
        Rejection::NotAdmitted {
            retry_after_ms: 1_000
        }
    );
    // The heartbeat that admits it turns the chain into an admitted one.
    let next = e
        .heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
        .await
        .unwrap();
    assert_eq!(next.claims.kind, TicketKind::Admitted);
    assert!(e.verify(&next.ticket).await.is_ok());
}

#[tokio::test]
async fn expiry_boundary() {
    let e = env();
    let issuer = Issuer::new(
        e.keys.clone(),
        Policy::new("q"),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap()
    .admitted_ttl(Duration::from_secs(60));
    let t = issuer
        .join(SESSION, ClientTime::Absent, &decision(true, 120 * SEC))
        .unwrap();
    assert_eq!(t.claims.expires_at_ms, T0 + 60_000);
    assert!(t.claims.live_until_ms > t.claims.expires_at_ms);
    e.at(T0 + 59_999);
    assert!(e.verify(&t.ticket).await.is_ok(), "1 ms before expiry");
    e.at(T0 + 60_000);
    assert_eq!(
        e.verify(&t.ticket).await.unwrap_err(),
        Rejection::Expired { expired_for_ms: 0 },
        "exactly at expiry"
    );
    // Renewal never extends expiry: the heartbeat is refused as well.
    assert_eq!(
        code(
            e.heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 120 * SEC))
                .await
        ),
        RejectionCode::Expired
    );
}

#[tokio::test]
async fn liveness_deadline_boundary() {
    let e = env();
    let t = e.join(true, 30 * SEC);
    e.at(T0 + 29_999);
    assert!(
        e.verify(&t.ticket).await.is_ok(),
        "1 ms before the deadline"
    );
    e.at(T0 + 30_000);
    assert_eq!(
        e.verify(&t.ticket).await.unwrap_err(),
        Rejection::OfflineResumed { late_by_ms: 0 }
    );
    // The heartbeat after the deadline cannot revive the chain either.
    assert_eq!(
        code(
            e.heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
                .await
        ),
        RejectionCode::OfflineResumed
    );
}

#[tokio::test]
async fn binding_mismatch_and_absent_binding() {
    let e = env();
    let t = e.join(true, 30 * SEC).ticket;
    let stolen = Presented {
        binding: Some(b"session-99"),
        ..plain(&t)
    };
    assert_eq!(
        code(e.verifier.verify(&stolen).await),
        RejectionCode::BindingMismatch
    );
    let none = Presented {
        binding: None,
        ..plain(&t)
    };
    assert_eq!(
        code(e.verifier.verify(&none).await),
        RejectionCode::BindingMismatch
    );
}

#[tokio::test]
async fn ticket_for_queue_a_never_passes_for_b() {
    let a = env_with(Policy::new("queue-a"));
    let b_verifier = Verifier::new(
        a.keys.clone(),
        Policy::new("queue-b"),
        a.clock.clone(),
        a.store.clone(),
    )
    .unwrap();
    let t = a.join(true, 30 * SEC).ticket;
    assert!(a.verify(&t).await.is_ok());
    assert_eq!(
        b_verifier.verify(&plain(&t)).await.unwrap_err(),
        Rejection::WrongQueue
    );
    // Nor can queue B's issuer renew it.
    let b_issuer = Issuer::new(
        a.keys.clone(),
        Policy::new("queue-b"),
        a.clock.clone(),
        a.store.clone(),
    )
    .unwrap();
    assert_eq!(
        b_issuer.check(&plain(&t)).unwrap_err(),
        Rejection::WrongQueue
    );
}

#[tokio::test]
async fn a_waiting_ticket_never_passes_as_admitted() {
    let e = env();
    let mut t = e.join(false, 3_600 * SEC);
    for i in 0..20 {
        e.clock.advance(30 * SEC);
        assert_eq!(
            code(e.verify(&t.ticket).await),
            RejectionCode::NotAdmitted,
            "renewal {i}"
        );
        t = e
            .heartbeat(&t.ticket, ClientTime::Absent, &decision(false, 3_600 * SEC))
            .await
            .unwrap();
        assert_eq!(t.claims.kind, TicketKind::Waiting);
    }
    // Even with every claim check monitored, not_admitted stays enforced
    // unless it is itself monitored.
    let strict = Verifier::new(
        e.keys.clone(),
        Policy::new("q")
            .mode_all(Mode::Monitor)
            .mode_for(RejectionCode::NotAdmitted, Mode::Enforce),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap();
    assert_eq!(
        code(strict.verify(&plain(&t.ticket)).await),
        RejectionCode::NotAdmitted
    );
}

#[tokio::test]
async fn replayed_older_copy_after_the_newer_was_used() {
    let e = env();
    let t0 = e.join(true, 30 * SEC);
    e.clock.advance(10 * SEC);
    let t1 = e
        .heartbeat(&t0.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
        .await
        .unwrap();
    assert_eq!(t1.claims.sequence, t0.claims.sequence + 1);
    assert!(e.verify(&t1.ticket).await.is_ok());
    assert_eq!(
        e.verify(&t0.ticket).await.unwrap_err(),
        Rejection::Replayed {
            reason: ReplayReason::StaleSequence,
            ticket_id: t0.claims.ticket_id
        }
    );
}

#[tokio::test]
async fn replayed_single_use() {
    let e = env_with(
        Policy::new("q")
            .scope("reserve")
            .replay(ReplayMode::SingleUse)
            .mode_for(RejectionCode::BindingMismatch, Mode::Monitor),
    );
    let t = e.join(true, 30 * SEC);
    let first = e.verify(&t.ticket).await.unwrap();
    // While the first use holds the chain, a second is in progress...
    assert_eq!(code(e.verify(&t.ticket).await), RejectionCode::InProgress);
    // ...and once its handler succeeded (the layer commits), replayed.
    e.verifier
        .settle(&first, queuegate::Settlement::Commit)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        e.verify(&t.ticket).await.unwrap_err(),
        Rejection::Replayed {
            reason: ReplayReason::ConsumedBySameClient,
            ticket_id: t.claims.ticket_id
        }
    );
    // Consumption covers every sequence of the chain.
    e.clock.advance(10 * SEC);
    let t1 = e
        .heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
        .await
        .unwrap();
    assert_eq!(code(e.verify(&t1.ticket).await), RejectionCode::Replayed);
    // Someone else presenting it (binding only monitored here) is refused
    // too, as another client: the binding check failed in this request
    // (SPEC.md §10).
    let stolen = Presented {
        binding: Some(b"session-99"),
        ..plain(&t1.ticket)
    };
    assert_eq!(
        e.verifier.verify(&stolen).await.unwrap_err(),
        Rejection::Replayed {
            reason: ReplayReason::ConsumedByOtherClient,
            ticket_id: t.claims.ticket_id
        }
    );
}

/// A store that is down: every call fails.
struct DownStore;

impl ReplayStore for DownStore {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;
    type SettleFuture = Ready<Result<(), StoreError>>;
    fn epoch(&self) -> u32 {
        42
    }
    fn settle(&self, _: &queuegate::replay::SettleHold) -> Self::SettleFuture {
        ready(Err(StoreError::Timeout))
    }
    fn check(&self, _: &ReplayCheck) -> Self::CheckFuture {
        ready(Err(StoreError::Timeout))
    }
    fn advance(&self, _: &AdvanceRequest) -> Self::AdvanceFuture {
        ready(Err(StoreError::Timeout))
    }
}

/// The `Retry-After` of `store_unavailable` is the policy's, on the
/// verifier and on the issuer's heartbeat alike.
#[tokio::test]
async fn store_unavailable_suggests_the_policys_retry_after() {
    let policy = Policy::new("q").store_retry_after(Duration::from_millis(7_500));
    let e = env_store(policy, Arc::new(DownStore));
    let t = e.join(true, 30 * SEC);
    let r = e.verify(&t.ticket).await.unwrap_err();
    assert_eq!(r.retry_after_ms(), Some(7_500));
    let r = e
        .heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
        .await
        .unwrap_err();
    assert_eq!(r.code(), RejectionCode::StoreUnavailable);
    assert_eq!(r.retry_after_ms(), Some(7_500));
}

#[tokio::test]
async fn store_unavailable_fails_closed() {
    let e = env_store(Policy::new("q"), Arc::new(DownStore));
    let t = e.join(true, 30 * SEC);
    assert_eq!(t.claims.epoch, 42);
    let r = e.verify(&t.ticket).await.unwrap_err();
    assert_eq!(r.code(), RejectionCode::StoreUnavailable);
    assert!(r.retry_after_ms().is_some());
    // The issuer fails closed whatever the policy says.
    assert_eq!(
        code(
            e.heartbeat(&t.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
                .await
        ),
        RejectionCode::StoreUnavailable
    );
    // Fail-open is a choice for session scopes, refused for single-use ones.
    let open = Policy::new("q").mode_for(RejectionCode::StoreUnavailable, Mode::Monitor);
    let v = Verifier::new(
        e.keys.clone(),
        open.clone(),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap()
    .verify(&plain(&t.ticket))
    .await
    .unwrap();
    assert_eq!(
        v.monitored.map(|r| r.code()),
        Some(RejectionCode::StoreUnavailable)
    );
    assert_eq!(
        Verifier::new(
            e.keys.clone(),
            open.replay(ReplayMode::SingleUse),
            e.clock.clone(),
            e.store.clone()
        )
        .unwrap_err(),
        ConfigError::FailOpenSingleUse
    );
}

#[tokio::test]
async fn epoch_of_another_store_is_refused() {
    let e = env();
    let t = e.join(true, 30 * SEC);
    // The same keys and clock, but the store restarted: a new epoch.
    let restarted = env_store(Policy::new("q"), Arc::new(MemoryReplayStore::new()));
    let verifier = Verifier::new(
        e.keys.clone(),
        Policy::new("q"),
        e.clock.clone(),
        restarted.store.clone(),
    )
    .unwrap();
    assert_ne!(restarted.store.epoch(), e.store.epoch());
    assert_eq!(
        verifier.verify(&plain(&t.ticket)).await.unwrap_err(),
        Rejection::Replayed {
            reason: ReplayReason::StateReset,
            ticket_id: t.claims.ticket_id
        }
    );
    let issuer = Issuer::new(
        e.keys.clone(),
        Policy::new("q"),
        e.clock.clone(),
        restarted.store.clone(),
    )
    .unwrap();
    assert_eq!(
        code(issuer.check(&plain(&t.ticket))),
        RejectionCode::Replayed
    );
    // With no replay state the epoch is not consulted.
    let stateless = Verifier::new(
        e.keys.clone(),
        Policy::new("q").replay(ReplayMode::Off),
        e.clock.clone(),
        restarted.store.clone(),
    )
    .unwrap();
    assert!(stateless.verify(&plain(&t.ticket)).await.is_ok());
}

// ------------------------------------------------------------ client clock

#[tokio::test]
async fn skew_boundaries_are_asymmetric() {
    // Defaults: 300 s skew, 10 s delay bound on top backwards.
    let e = env();
    let t = e.join(true, 30 * SEC).ticket;
    let at = |offset| e.verify_ct(&t, e.client(offset));
    assert!(at(300_000).await.is_ok(), "exactly +max_skew");
    assert_eq!(
        at(300_001).await.unwrap_err(),
        Rejection::ClockSkew {
            offset_ms: 300_001,
            tolerance_ms: 300_000
        }
    );
    assert!(
        at(-310_000).await.is_ok(),
        "exactly -(max_skew + max_delay)"
    );
    assert_eq!(
        at(-310_001).await.unwrap_err(),
        Rejection::ClockSkew {
            offset_ms: -310_001,
            tolerance_ms: 310_000
        }
    );
    // The join checks skew too.
    assert_eq!(
        code(
            e.issuer
                .join(SESSION, e.client(300_001), &decision(true, 30 * SEC))
        ),
        RejectionCode::ClockSkew
    );
}

#[tokio::test]
async fn jump_boundaries_against_the_baseline() {
    let e = env();
    let t = e
        .issuer
        .join(SESSION, e.client(-100_000), &decision(true, 30 * SEC))
        .unwrap();
    assert_eq!(t.claims.clock_offset_ms, Some(-100_000));
    let at = |offset| e.verify_ct(&t.ticket, e.client(offset));
    assert!(
        at(-100_000 + 60_000).await.is_ok(),
        "forward exactly max_jump"
    );
    assert_eq!(
        at(-100_000 + 60_001).await.unwrap_err(),
        Rejection::ClockJump {
            moved_ms: 60_001,
            tolerance_ms: 60_000
        }
    );
    assert!(
        at(-100_000 - 70_000).await.is_ok(),
        "backward exactly max_jump + max_delay"
    );
    assert_eq!(
        at(-100_000 - 70_001).await.unwrap_err(),
        Rejection::ClockJump {
            moved_ms: -70_001,
            tolerance_ms: 70_000
        }
    );
}

#[tokio::test]
async fn forward_jump_on_heartbeat_is_refused_backward_delay_is_not() {
    let e = env();
    let t = e
        .issuer
        .join(SESSION, e.client(0), &decision(false, 30 * SEC))
        .unwrap();
    e.clock.advance(10 * SEC);
    // A slow response (8 s of delay) is not a jump.
    let t1 = e
        .heartbeat(&t.ticket, e.client(-8_000), &decision(false, 30 * SEC))
        .await
        .unwrap();
    assert_eq!(t1.claims.clock_offset_ms, Some(0), "baseline keeps the max");
    e.clock.advance(10 * SEC);
    // The clock moved 2 minutes ahead to get through sooner.
    assert_eq!(
        code(
            e.heartbeat(&t1.ticket, e.client(120_000), &decision(false, 30 * SEC))
                .await
        ),
        RejectionCode::ClockJump
    );
}

#[tokio::test]
async fn steady_wrong_clock_passes_across_many_renewals() {
    for true_offset in [-4 * 60_000i64, 4 * 60_000] {
        let e = env();
        let mut t = e
            .issuer
            .join(SESSION, e.client(true_offset), &decision(false, 30 * SEC))
            .unwrap();
        // Deterministic network delay between 0 and 3 s.
        let mut lcg: u64 = 12345;
        for i in 0..200 {
            e.clock.advance(20 * SEC);
            lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1);
            let delay = ((lcg >> 33) % 3_000) as i64;
            let admit = i == 190;
            t = e
                .heartbeat(
                    &t.ticket,
                    e.client(true_offset - delay),
                    &decision(admit || t.claims.is_admitted(), 30 * SEC),
                )
                .await
                .unwrap_or_else(|r| panic!("offset {true_offset}, renewal {i}: {r:?}"));
            let baseline = t.claims.clock_offset_ms.unwrap();
            assert!(i64::from(baseline) <= true_offset);
            assert!(i64::from(baseline) >= true_offset - 3_000);
        }
        assert!(t.claims.is_admitted());
        let v = e
            .verifier
            .verify(&with(&t.ticket, e.client(true_offset - 500)))
            .await
            .unwrap();
        assert_eq!(v.client_offset_ms, Some(true_offset - 500));
    }
}

#[tokio::test]
async fn clock_weeks_off_with_skew_monitored_is_not_a_jump() {
    // Offsets are kept as i32 milliseconds (±24.8 days); a clock further
    // off than that, steady, must not read as a jump when only clock_skew
    // is monitored.
    let e = env_with(Policy::new("q").mode_for(RejectionCode::ClockSkew, Mode::Monitor));
    let off = 30 * 24 * 3_600_000i64;
    let mut t = e
        .issuer
        .join(SESSION, e.client(off), &decision(true, 30 * SEC))
        .unwrap();
    assert_eq!(t.claims.clock_offset_ms, Some(i32::MAX));
    for i in 0..10 {
        e.clock.advance(10 * SEC);
        t = e
            .heartbeat(&t.ticket, e.client(off), &decision(true, 30 * SEC))
            .await
            .unwrap_or_else(|r| panic!("renewal {i}: {r:?}"));
    }
    let v = e
        .verifier
        .verify(&with(&t.ticket, e.client(off)))
        .await
        .unwrap();
    assert_eq!(
        v.monitored.map(|r| r.code()),
        Some(RejectionCode::ClockSkew)
    );
}

#[tokio::test]
async fn client_time_required_or_optional() {
    let e = env();
    // The chain's baseline says the client is 4 minutes ahead.
    let t = e
        .issuer
        .join(SESSION, e.client(240_000), &decision(true, 30 * SEC))
        .unwrap();
    // Optional: absence passes and is not read as an offset of 0 (which
    // would be a 4-minute backward jump).
    let v = e.verify(&t.ticket).await.unwrap();
    assert_eq!(v.client_offset_ms, None);
    assert_eq!(
        code(e.verifier.verify(&with(&t.ticket, e.client(0))).await),
        RejectionCode::ClockJump
    );
    // Unparseable client time is malformed.
    assert_eq!(
        e.verifier
            .verify(&with(&t.ticket, ClientTime::parse(b"12:00")))
            .await
            .unwrap_err(),
        Rejection::Malformed {
            reason: queuegate::MalformedReason::ClientTime
        }
    );
    // Required: absence is malformed.
    let required = Verifier::new(
        e.keys.clone(),
        Policy::new("q").client_time(ClientTimeRule::Required),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap();
    assert_eq!(
        required.verify(&plain(&t.ticket)).await.unwrap_err(),
        Rejection::Malformed {
            reason: queuegate::MalformedReason::ClientTimeMissing
        }
    );
    assert!(required
        .verify(&with(&t.ticket, e.client(240_000)))
        .await
        .is_ok());
    // A join without client time leaves the offset unmeasured, never 0.
    let unmeasured = e.join(true, 30 * SEC);
    assert_eq!(unmeasured.claims.clock_offset_ms, None);
}

// ------------------------------------------------------------------- chain

#[tokio::test]
async fn a_chain_renewed_many_times_stays_alive() {
    let e = env();
    let first = e.join(false, 30 * SEC);
    let mut t = first.clone();
    for i in 1..=300u32 {
        e.clock.advance(20 * SEC);
        let admit = i >= 280;
        t = e
            .heartbeat(&t.ticket, ClientTime::Absent, &decision(admit, 30 * SEC))
            .await
            .unwrap_or_else(|r| panic!("renewal {i}: {r:?}"));
        assert_eq!(t.claims.sequence, i);
        assert_eq!(t.claims.ticket_id, first.claims.ticket_id);
        assert_eq!(t.claims.joined_at_ms, T0);
        assert_eq!(t.claims.issued_at_ms, e.clock.now_ms());
        assert_eq!(t.claims.live_until_ms, e.clock.now_ms() + 30_000);
        if i < 280 {
            assert_eq!(t.claims.expires_at_ms, first.claims.expires_at_ms);
        }
    }
    // 6000 s later: far past the first deadline (30 s).
    assert!(e.clock.now_ms() > first.claims.live_until_ms + 5_000_000);
    assert!(t.claims.is_admitted());
    let admitted_at = T0 + 280 * 20_000;
    assert_eq!(t.claims.admitted_from_ms, admitted_at);
    assert_eq!(
        t.claims.expires_at_ms,
        admitted_at + 600_000,
        "fixed at admission"
    );
    assert!(e.verify(&t.ticket).await.is_ok());
    // The first ticket is long dead.
    assert_eq!(
        code(e.issuer.check(&plain(&first.ticket))),
        RejectionCode::OfflineResumed
    );
}

#[tokio::test]
async fn renewal_grace_retry_gets_the_same_next_ticket() {
    let e = env();
    let t0 = e.join(false, 60 * SEC);
    e.clock.advance(10 * SEC);
    let d = decision(false, 60 * SEC);
    let t1 = e
        .heartbeat(&t0.ticket, ClientTime::Absent, &d)
        .await
        .unwrap();
    // The response was lost; the client retries 4.999 s later.
    e.clock.advance(Duration::from_millis(4_999));
    let again = e
        .heartbeat(&t0.ticket, ClientTime::Absent, &d)
        .await
        .unwrap();
    assert_eq!(again.ticket, t1.ticket, "byte-identical");
    // The old ticket also still passes the session check within the grace.
    let admitted = env();
    let a0 = admitted.join(true, 60 * SEC);
    let a1 = admitted
        .heartbeat(&a0.ticket, ClientTime::Absent, &decision(true, 60 * SEC))
        .await
        .unwrap();
    assert!(admitted.verify(&a0.ticket).await.is_ok());
    // At the end of the grace (exclusive), the old ticket is replayed.
    e.at(t1.claims.issued_at_ms + 5_000);
    assert_eq!(
        code(e.heartbeat(&t0.ticket, ClientTime::Absent, &d).await),
        RejectionCode::Replayed
    );
    // The newer one still renews.
    assert!(e
        .heartbeat(&t1.ticket, ClientTime::Absent, &d)
        .await
        .is_ok());
    // Once the newer ticket was used, the older is replayed at once.
    assert!(admitted.verify(&a1.ticket).await.is_ok());
    assert_eq!(
        code(admitted.verify(&a0.ticket).await),
        RejectionCode::Replayed
    );
    assert_eq!(
        code(
            admitted
                .heartbeat(&a0.ticket, ClientTime::Absent, &decision(true, 60 * SEC))
                .await
        ),
        RejectionCode::Replayed
    );
}

#[tokio::test]
async fn renewal_grace_retry_with_the_same_clock_evidence_is_identical() {
    let e = env();
    let t0 = e
        .issuer
        .join(SESSION, e.client(-30_000), &decision(false, 60 * SEC))
        .unwrap();
    e.clock.advance(10 * SEC);
    let d = decision(false, 60 * SEC);
    let t1 = e
        .heartbeat(&t0.ticket, e.client(-20_000), &d)
        .await
        .unwrap();
    assert_eq!(t1.claims.clock_offset_ms, Some(-20_000));
    e.clock.advance(SEC);
    let again = e
        .heartbeat(&t0.ticket, e.client(-20_000), &d)
        .await
        .unwrap();
    assert_eq!(again.ticket, t1.ticket);
    // Renewed twice past the retried one: the grandparent is replayed.
    e.clock.advance(SEC);
    let _t2 = e
        .heartbeat(&t1.ticket, e.client(-20_000), &d)
        .await
        .unwrap();
    assert_eq!(
        code(e.heartbeat(&t0.ticket, e.client(-20_000), &d).await),
        RejectionCode::Replayed
    );
}

// ------------------------------------------------------------- monitor mode

/// Builds the situation for `code` under `policy` and verifies.
async fn trigger(code: RejectionCode, policy: Policy) -> Result<Verified, Rejection> {
    let e = env_with(policy.clone());
    let live = 30 * SEC;
    match code {
        RejectionCode::Malformed => {
            let t = e.join(true, live);
            e.verifier
                .verify(&with(&t.ticket, ClientTime::Invalid))
                .await
        }
        RejectionCode::NotAdmitted => e.verify(&e.join(false, live).ticket).await,
        RejectionCode::Expired => {
            let issuer = Issuer::new(e.keys.clone(), policy, e.clock.clone(), e.store.clone())
                .unwrap()
                .admitted_ttl(10 * SEC);
            let t = issuer
                .join(SESSION, ClientTime::Absent, &decision(true, live))
                .unwrap();
            e.clock.advance(10 * SEC);
            e.verify(&t.ticket).await
        }
        RejectionCode::OfflineResumed => {
            let t = e.join(true, live);
            e.clock.advance(live);
            e.verify(&t.ticket).await
        }
        RejectionCode::BindingMismatch => {
            let t = e.join(true, live);
            let p = Presented {
                binding: Some(b"other"),
                ..plain(&t.ticket)
            };
            e.verifier.verify(&p).await
        }
        RejectionCode::WrongQueue => {
            let other = Issuer::new(
                e.keys.clone(),
                Policy::new("other"),
                e.clock.clone(),
                e.store.clone(),
            )
            .unwrap();
            let t = other
                .join(SESSION, ClientTime::Absent, &decision(true, live))
                .unwrap();
            e.verify(&t.ticket).await
        }
        RejectionCode::ClockSkew => {
            let t = e.join(true, live);
            e.verifier.verify(&with(&t.ticket, e.client(600_000))).await
        }
        RejectionCode::ClockJump => {
            let t = e
                .issuer
                .join(SESSION, e.client(0), &decision(true, live))
                .unwrap();
            e.verifier.verify(&with(&t.ticket, e.client(120_000))).await
        }
        RejectionCode::Replayed => {
            let t0 = e.join(true, live);
            let t1 = e
                .heartbeat(&t0.ticket, ClientTime::Absent, &decision(true, live))
                .await
                .unwrap();
            e.verify(&t1.ticket).await.unwrap();
            e.verify(&t0.ticket).await
        }
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn each_claim_code_can_be_enforced_or_monitored() {
    for code in [
        RejectionCode::Malformed,
        RejectionCode::NotAdmitted,
        RejectionCode::Expired,
        RejectionCode::OfflineResumed,
        RejectionCode::BindingMismatch,
        RejectionCode::WrongQueue,
        RejectionCode::ClockSkew,
        RejectionCode::ClockJump,
        RejectionCode::Replayed,
    ] {
        let enforced = trigger(code, Policy::new("q")).await;
        assert_eq!(enforced.unwrap_err().code(), code, "enforced {code}");
        let monitored = trigger(code, Policy::new("q").mode_for(code, Mode::Monitor))
            .await
            .unwrap_or_else(|r| panic!("monitored {code}: refused with {r:?}"));
        assert_eq!(
            monitored.monitored.map(|r| r.code()),
            Some(code),
            "monitored {code}"
        );
    }
}

#[tokio::test]
async fn structural_failures_are_returned_whatever_the_mode() {
    let e = env_with(Policy::new("q").mode_all(Mode::Monitor));
    assert_eq!(
        code(e.verifier.verify(&Presented::default()).await),
        RejectionCode::Missing
    );
    assert_eq!(code(e.verify("garbage").await), RejectionCode::Malformed);
    let mut t = e.join(true, 30 * SEC).ticket.into_bytes();
    t[170] = if t[170] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        code(e.verify(std::str::from_utf8(&t).unwrap()).await),
        RejectionCode::BadSignature
    );
}

#[tokio::test]
async fn monitored_clock_skew_still_detects_replay() {
    let e = env_with(Policy::new("q").mode_for(RejectionCode::ClockSkew, Mode::Monitor));
    let t0 = e.join(true, 30 * SEC);
    let t1 = e
        .heartbeat(&t0.ticket, ClientTime::Absent, &decision(true, 30 * SEC))
        .await
        .unwrap();
    let skewed = e.client(3_600_000);
    let v = e.verify_ct(&t1.ticket, skewed).await.unwrap();
    assert_eq!(
        v.monitored.map(|r| r.code()),
        Some(RejectionCode::ClockSkew)
    );
    assert_eq!(
        e.verify_ct(&t0.ticket, skewed).await.unwrap_err().code(),
        RejectionCode::Replayed
    );
}

// ---------------------------------------------------------------- server time

#[tokio::test]
async fn a_clock_stepped_back_never_unexpires() {
    let e = env();
    let issuer = Issuer::new(
        e.keys.clone(),
        Policy::new("q"),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap()
    .admitted_ttl(60 * SEC);
    let t = issuer
        .join(SESSION, ClientTime::Absent, &decision(true, 30 * SEC))
        .unwrap();
    e.clock.advance(60 * SEC);
    assert_eq!(code(e.verify(&t.ticket).await), RejectionCode::Expired);
    assert_eq!(issuer.now_ms(), T0 + 60_000);
    // NTP steps the server clock back an hour.
    e.clock.rewind(3_600 * SEC);
    assert_eq!(code(e.verify(&t.ticket).await), RejectionCode::Expired);
    assert_eq!(e.verifier.now_ms(), T0 + 60_000);
    // The issuer's view is monotone too: the dead chain stays dead.
    assert_eq!(
        code(issuer.check(&plain(&t.ticket))),
        RejectionCode::Expired
    );
}

#[tokio::test]
async fn extreme_server_times_do_not_panic() {
    for now in [0, 1, -1, i64::MAX, i64::MAX - 1, i64::MIN, i64::MIN + 1] {
        let e = env();
        e.at(now);
        let t = e
            .issuer
            .join(SESSION, e.client(0), &decision(true, 30 * SEC))
            .unwrap();
        let _ = e.verify(&t.ticket).await;
        for ct in [
            ClientTime::Millis(i64::MAX),
            ClientTime::Millis(i64::MIN),
            ClientTime::Millis(0),
        ] {
            let _ = e.verifier.verify(&with(&t.ticket, ct)).await;
            let _ = e.heartbeat(&t.ticket, ct, &decision(true, 30 * SEC)).await;
        }
        e.clock.advance(Duration::MAX);
        let _ = e.verify(&t.ticket).await;
    }
    // At 0 a chain works normally.
    let e = env();
    e.at(0);
    let t = e.join(true, 30 * SEC);
    assert!(e.verify(&t.ticket).await.is_ok());
    // At i64::MAX every ticket is expired at once (expiry saturates).
    e.at(i64::MAX);
    let t = e.join(true, 30 * SEC);
    assert_eq!(t.claims.expires_at_ms, i64::MAX);
    assert_eq!(code(e.verify(&t.ticket).await), RejectionCode::Expired);
}

#[tokio::test]
async fn extreme_claims_signed_by_hand_do_not_panic() {
    let e = env_with(Policy::new("q").mode_all(Mode::Monitor));
    let mut c = e.join(true, 30 * SEC).claims;
    for (joined, live, from, exp, off) in [
        (0, i64::MAX, i64::MIN, i64::MAX, Some(i32::MIN)),
        (i64::MIN, i64::MIN, i64::MAX, i64::MIN, Some(i32::MAX)),
        (i64::MAX, 0, 0, 0, None),
    ] {
        c = Claims {
            joined_at_ms: joined,
            issued_at_ms: joined,
            live_until_ms: live,
            admitted_from_ms: from,
            expires_at_ms: exp,
            clock_offset_ms: off,
            ticket_id: TicketId([0x5a; 16]),
            ..c
        };
        let t = common::sign(&SECRET, &c);
        for now in [0, i64::MAX, i64::MIN] {
            e.at(now);
            for ct in [
                ClientTime::Millis(i64::MAX),
                ClientTime::Millis(i64::MIN),
                ClientTime::Absent,
            ] {
                let v = e.verifier.verify(&with(&t, ct)).await;
                if let Ok(v) = v {
                    assert_eq!(v.claims, c);
                }
            }
        }
    }
}

#[tokio::test]
async fn rejected_tickets_never_grow_state() {
    let e = env();
    let t = e.join(false, 30 * SEC);
    let before = e.store.len();
    let other_queue = Verifier::new(
        e.keys.clone(),
        Policy::new("other"),
        e.clock.clone(),
        e.store.clone(),
    )
    .unwrap();
    for i in 0..500u32 {
        let garbage = format!("{i:0>176}");
        let _ = e.verify(&garbage).await.unwrap_err();
        let _ = e.verify(&t.ticket).await.unwrap_err(); // not admitted
        let _ = other_queue.verify(&plain(&t.ticket)).await.unwrap_err();
    }
    assert_eq!(e.store.len(), before);
}

#[tokio::test]
async fn ticket_text_never_appears_in_debug_or_messages() {
    let e = env();
    let t = e.join(true, 30 * SEC);
    let secret_hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    let mut shown = vec![
        format!("{t:?}"),
        format!("{:?}", plain(&t.ticket)),
        format!("{:?}", e.verifier),
        format!("{:?}", e.issuer),
        format!("{:?}", e.keys),
    ];
    for code in [
        RejectionCode::Malformed,
        RejectionCode::NotAdmitted,
        RejectionCode::Expired,
        RejectionCode::OfflineResumed,
        RejectionCode::BindingMismatch,
        RejectionCode::WrongQueue,
        RejectionCode::ClockSkew,
        RejectionCode::ClockJump,
        RejectionCode::Replayed,
    ] {
        let r = trigger(code, Policy::new("q")).await.unwrap_err();
        shown.push(format!("{r:?} {r}"));
    }
    for s in &shown[..5] {
        assert!(!s.contains(&t.ticket[..24]), "ticket text in {s}");
    }
    // Every trigger uses the same secret and binding material.
    for s in shown {
        assert!(!s.contains(&secret_hex[..16]), "secret in {s}");
        assert!(!s.contains("session-42"), "binding material in {s}");
    }
}
