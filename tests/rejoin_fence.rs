//! Issue 11: a rejoin re-mints an admitted chain from the room's facts only
//! under the epoch the chain's replay records were written under (a
//! waiting chain, which has nothing to book, goes on under the new one and
//! keeps its place). A store that lost
//! them since (a restarted memory store, a Redis that came back empty, a
//! fenced Cluster shard) refuses the rejoin as it refuses a heartbeat of
//! the chain's ticket (`replayed`, `state_reset`), so a chain already
//! booked cannot be re-minted admitted and book again; the room starts a
//! new chain for the person instead.
//!
//! Only a store's refusal of the epoch is `state_reset`: an instance whose
//! view of a fenced shard's epoch lags (another instance learnt the new
//! one) labels a chain minted after the fence that lost a race with its
//! own renewal `stale_sequence`, as the store answered (`Advance::Stale`,
//! not `Advance::Reset`), and the room keeps that chain.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queuegate::replay::{Advance, AdvanceRequest, ReplayCheck, ReplayVerdict, SettleHold};
use queuegate::{
    ChainFacts, ClientTime, Clock, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore,
    MemoryRoomState, Minted, Policy, Presented, Rejection, RenewDecision, ReplayMode, ReplayReason,
    ReplayStore, RoomError, Settlement, StoreError, Verifier, WaitingRoom,
};

const QUEUE: &str = "fence-11";
const T0: i64 = 1_700_000_000_000;

fn keys() -> Arc<KeyRing> {
    Arc::new(KeyRing::new(1, &[7; 32]).unwrap())
}

const ADMIT: JoinDecision = JoinDecision {
    position: 1,
    live_for: Duration::from_secs(30),
    estimated_wait: Duration::from_secs(0),
    admit: true,
};

fn presented<'a>(ticket: &'a str, who: &'a [u8]) -> Presented<'a> {
    Presented {
        ticket: Some(ticket.as_bytes()),
        binding: Some(who),
        client_time: ClientTime::Absent,
    }
}

/// The booking route: single use, and the handler succeeds (commit).
async fn book<C: Clock, S: ReplayStore>(
    booking: &Verifier<C, S>,
    ticket: &str,
    who: &[u8],
) -> Result<(), Rejection> {
    let verified = booking.verify(&presented(ticket, who)).await?;
    booking
        .settle(&verified, Settlement::Commit)
        .expect("a single-use check takes a hold")
        .await
        .expect("the commit is stored");
    Ok(())
}

fn booking_route<C: Clock, S: ReplayStore>(clock: C, store: Arc<S>) -> Verifier<C, S> {
    Verifier::new(
        keys(),
        Policy::new(QUEUE)
            .scope("book")
            .replay(ReplayMode::SingleUse),
        clock,
        store,
    )
    .unwrap()
}

fn is_state_reset(r: &Result<Minted, Rejection>) -> bool {
    matches!(
        r,
        Err(Rejection::Replayed {
            reason: ReplayReason::StateReset,
            ..
        })
    )
}

/// A store with an epoch per shard, as the Redis Cluster store has, with
/// one shard: [`fence`](Self::fence) loses its records and starts a new
/// epoch (a failover to a replica that lacked them). It compares the
/// presented ticket's epoch itself (`checks_epoch`), as the Cluster's
/// scripts do.
struct FencedStore {
    records: Records,
    epoch: AtomicU32,
}

/// The records of a test store, which it can lose at once.
struct Records(Mutex<Arc<MemoryReplayStore>>);

impl Records {
    fn new() -> Self {
        Self(Mutex::new(Arc::new(MemoryReplayStore::new())))
    }

    /// Loses every record: a new, empty store from now on.
    fn lose(&self) {
        *self.0.lock().unwrap() = Arc::new(MemoryReplayStore::new());
    }

    fn now(&self) -> Arc<MemoryReplayStore> {
        self.0.lock().unwrap().clone()
    }
}

impl FencedStore {
    fn new() -> Self {
        Self {
            records: Records::new(),
            epoch: AtomicU32::new(1),
        }
    }

    fn fence(&self) {
        self.records.lose();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn records(&self) -> Arc<MemoryReplayStore> {
        self.records.now()
    }
}

impl ReplayStore for FencedStore {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;
    type SettleFuture = Ready<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn checks_epoch(&self) -> bool {
        true
    }

    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture {
        if check.epoch != self.epoch() {
            return ready(Ok(ReplayVerdict::Replayed(ReplayReason::StateReset)));
        }
        self.records().check(check)
    }

    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture {
        if request.epoch != self.epoch() {
            return ready(Ok(Advance::Reset));
        }
        self.records().advance(request)
    }

    fn settle(&self, settle: &SettleHold) -> Self::SettleFuture {
        self.records().settle(settle)
    }
}

/// One instance's handle on a [`FencedStore`] shared by several, as each
/// instance of a Redis Cluster store keeps its own view of a shard's epoch:
/// it mints under the epoch it knows, and learns a new one only from a
/// refusal of an older one (the Cluster script's `{4, epoch}`), so after a
/// fence its view lags until such a refusal reaches it.
struct InstanceView {
    shard: Arc<FencedStore>,
    known: AtomicU32,
}

impl InstanceView {
    fn new(shard: &Arc<FencedStore>) -> Self {
        Self {
            shard: shard.clone(),
            known: AtomicU32::new(shard.epoch()),
        }
    }

    /// Learns the shard's epoch if `presented` is not it (the store just
    /// refused that epoch).
    fn learn_if_refused(&self, presented: u32) {
        if presented != self.shard.epoch() {
            self.known.store(self.shard.epoch(), Ordering::SeqCst);
        }
    }
}

impl ReplayStore for InstanceView {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;
    type SettleFuture = Ready<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.known.load(Ordering::SeqCst)
    }

    fn checks_epoch(&self) -> bool {
        true
    }

    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture {
        self.learn_if_refused(check.epoch);
        self.shard.check(check)
    }

    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture {
        self.learn_if_refused(request.epoch);
        self.shard.advance(request)
    }

    fn settle(&self, settle: &SettleHold) -> Self::SettleFuture {
        self.shard.settle(settle)
    }
}

fn is_stale_sequence(r: &Result<Minted, Rejection>) -> bool {
    matches!(
        r,
        Err(Rejection::Replayed {
            reason: ReplayReason::StaleSequence,
            ..
        })
    )
}

/// An instance that has not learnt a fenced shard's new epoch (another
/// instance has) asks to advance a chain minted after the fence from a
/// ticket its renewal has overtaken: the store, which compares the
/// presented epoch itself, says the chain moved on (`Advance::Stale`), and
/// the issuer takes its word over its own lagging view: `stale_sequence`,
/// not `state_reset`. A ticket minted before the fence is still
/// `state_reset` through either instance.
#[tokio::test]
async fn a_lagging_instance_labels_a_lost_race_stale_not_reset() {
    let clock = ManualClock::new(T0);
    let shard = Arc::new(FencedStore::new());
    let (lagging, learnt) = (
        Arc::new(InstanceView::new(&shard)),
        Arc::new(InstanceView::new(&shard)),
    );
    let issuer = |view: &Arc<InstanceView>| {
        Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), view.clone()).unwrap()
    };
    let (slow, fast) = (issuer(&lagging), issuer(&learnt));
    let before = fast.join(b"cy", ClientTime::Absent, &ADMIT).unwrap();
    let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
    let before = fast.renew(&checked, b"cy", &ADMIT).await.unwrap();

    shard.fence();
    clock.advance(Duration::from_secs(1));
    // `fast` learns the new epoch from the refusal of cy's heartbeat.
    let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
    assert!(is_state_reset(&fast.renew(&checked, b"cy", &ADMIT).await));
    assert_eq!(learnt.epoch(), shard.epoch());
    assert_ne!(lagging.epoch(), shard.epoch());

    // Ana's chain, minted after the fence, and renewed: the renewal's
    // successor is used (a protected route saw it).
    let first = fast.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
    assert_eq!(first.claims.epoch, shard.epoch());
    let checked = fast.check(&presented(&first.ticket, b"ana")).unwrap();
    let second = fast.renew(&checked, b"ana", &ADMIT).await.unwrap();
    let route = Verifier::new(keys(), Policy::new(QUEUE), clock.clone(), learnt.clone()).unwrap();
    route
        .verify(&presented(&second.ticket, b"ana"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));

    // Through the lagging instance: the first ticket's heartbeat, and a
    // rejoin from the facts of the first ticket (the room had not recorded
    // the renewal yet), lost the race: stale, not reset.
    let checked = slow.check(&presented(&first.ticket, b"ana")).unwrap();
    let beat = slow.renew(&checked, b"ana", &ADMIT).await;
    assert!(is_stale_sequence(&beat), "{beat:?}");
    let facts = ChainFacts::of(&first.claims);
    let rejoined = slow
        .rejoin(b"ana", ClientTime::Absent, &facts, &ADMIT)
        .await;
    assert!(is_stale_sequence(&rejoined), "{rejoined:?}");
    assert_ne!(
        lagging.epoch(),
        shard.epoch(),
        "nothing refused, nothing learnt"
    );
    // The chain goes on from its latest ticket, through either instance.
    let checked = slow.check(&presented(&second.ticket, b"ana")).unwrap();
    let third = slow.renew(&checked, b"ana", &ADMIT).await.unwrap();
    assert_eq!(third.claims.ticket_id, first.claims.ticket_id);
    assert_eq!(third.claims.epoch, shard.epoch());

    // The fenced chain is still `state_reset` through the lagging instance
    // (which learns the new epoch from it) and through the other.
    let facts = ChainFacts::of(&before.claims);
    for issuer in [&slow, &fast] {
        let rejoined = issuer
            .rejoin(b"cy", ClientTime::Absent, &facts, &ADMIT)
            .await;
        assert!(is_state_reset(&rejoined), "{rejoined:?}");
        let checked = issuer.check(&presented(&before.ticket, b"cy")).unwrap();
        let beat = issuer.renew(&checked, b"cy", &ADMIT).await;
        assert!(is_state_reset(&beat), "{beat:?}");
    }
    assert_eq!(lagging.epoch(), shard.epoch(), "learnt from the refusal");
}

/// A store with one epoch that does not compare the presented epoch itself
/// (`checks_epoch` false) and, finding its backend's state lost, answers
/// `Stale` and learns the backend's new epoch (as the single-Redis store
/// did before `Advance::Reset`): the issuer still labels that
/// `state_reset`, from its view of the epoch, which the answer just moved.
struct OneEpochStore {
    records: Records,
    backend_epoch: AtomicU32,
    known: AtomicU32,
}

impl OneEpochStore {
    fn new() -> Self {
        Self {
            records: Records::new(),
            backend_epoch: AtomicU32::new(1),
            known: AtomicU32::new(1),
        }
    }

    fn lose_state(&self) {
        self.records.lose();
        self.backend_epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn records(&self) -> Arc<MemoryReplayStore> {
        self.records.now()
    }
}

impl ReplayStore for OneEpochStore {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;
    type SettleFuture = Ready<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.known.load(Ordering::SeqCst)
    }

    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture {
        self.records().check(check)
    }

    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture {
        let backend = self.backend_epoch.load(Ordering::SeqCst);
        if self.known.swap(backend, Ordering::SeqCst) != backend {
            return ready(Ok(Advance::Stale));
        }
        self.records().advance(request)
    }

    fn settle(&self, settle: &SettleHold) -> Self::SettleFuture {
        self.records().settle(settle)
    }
}

/// The issuer's fallback for a store that does not compare epochs: a
/// `Stale` answer after which the store's epoch is no longer the request's
/// is `state_reset`; a plain one is `stale_sequence`.
#[tokio::test]
async fn a_store_without_epoch_checks_keeps_the_issuers_label() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(OneEpochStore::new());
    let issuer = Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), store.clone()).unwrap();
    let first = issuer.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
    let checked = issuer.check(&presented(&first.ticket, b"ana")).unwrap();
    let second = issuer.renew(&checked, b"ana", &ADMIT).await.unwrap();
    clock.advance(Duration::from_secs(6));
    let checked = issuer.check(&presented(&first.ticket, b"ana")).unwrap();
    let stale = issuer.renew(&checked, b"ana", &ADMIT).await;
    assert!(is_stale_sequence(&stale), "{stale:?}");
    // The backend loses its state between the check and the advance.
    let checked = issuer.check(&presented(&second.ticket, b"ana")).unwrap();
    store.lose_state();
    let lost = issuer.renew(&checked, b"ana", &ADMIT).await;
    assert!(is_state_reset(&lost), "{lost:?}");
}

/// The same race through the room: an admitted person whose join reaches
/// an instance that lags the fence, with the room's facts one renewal
/// behind the store, is told to try again (`busy`), and keeps the chain
/// and the turn; it is not ended and moved to the back. A person whose
/// chain the fence did cut is still given a new chain.
#[tokio::test]
async fn a_lagging_instance_does_not_end_an_admitted_chain_that_lost_a_race() {
    let clock = ManualClock::new(T0);
    let shard = Arc::new(FencedStore::new());
    let state = Arc::new(MemoryRoomState::new());
    let (lagging, learnt) = (
        Arc::new(InstanceView::new(&shard)),
        Arc::new(InstanceView::new(&shard)),
    );
    let room = |view: &Arc<InstanceView>| {
        let issuer = Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), view.clone()).unwrap();
        WaitingRoom::builder(issuer, state.clone())
            .admit_per_sec(50.0)
            .unwrap()
            .build()
            .unwrap()
    };
    let (slow, fast) = (room(&lagging), room(&learnt));
    let cy = fast.join(b"cy", ClientTime::Absent).await.unwrap();
    assert!(cy.admitted);

    shard.fence();
    clock.advance(Duration::from_secs(1));
    // `fast` learns the new epoch from the refusal of cy's heartbeat (the
    // room keeps cy's place: the client rejoins).
    let beat = fast.heartbeat(&presented(&cy.ticket, b"cy")).await;
    assert!(
        matches!(
            beat,
            Err(RoomError::Rejected(Rejection::Replayed {
                reason: ReplayReason::StateReset,
                ..
            }))
        ),
        "{beat:?}"
    );
    assert_eq!(learnt.epoch(), shard.epoch());
    assert_ne!(lagging.epoch(), shard.epoch());

    // Ana joins after the fence and is admitted. Her heartbeat's advance
    // reaches the store, but its record in the room does not (yet): the
    // room's facts are one renewal behind. Its successor is used.
    let ana = fast.join(b"ana", ClientTime::Absent).await.unwrap();
    assert!(ana.admitted);
    let checked = fast
        .issuer()
        .check(&presented(&ana.ticket, b"ana"))
        .unwrap();
    let decision = RenewDecision {
        position: 0,
        live_for: Duration::from_secs(30),
        estimated_wait: Duration::ZERO,
        admit: false,
    };
    let renewed = fast
        .issuer()
        .renew(&checked, b"ana", &decision)
        .await
        .unwrap();
    let route = Verifier::new(keys(), Policy::new(QUEUE), clock.clone(), learnt.clone()).unwrap();
    route
        .verify(&presented(&renewed.ticket, b"ana"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));

    // A reloaded page joins through the lagging instance: the rejoin from
    // the room's facts lost the race. Try again; the chain is not ended.
    let joined = slow.join(b"ana", ClientTime::Absent).await;
    assert!(matches!(joined, Err(RoomError::Busy)), "{joined:?}");
    // The renewed ticket's heartbeat (through the lagging instance, too)
    // finds the same chain, admitted, and records it.
    let beat = slow
        .heartbeat(&presented(&renewed.ticket, b"ana"))
        .await
        .unwrap();
    assert_eq!(beat.ticket_id, ana.ticket_id, "the chain was not ended");
    assert!(beat.admitted, "the turn was kept");
    // Now the room's facts are current: a join gets the same chain.
    let again = slow.join(b"ana", ClientTime::Absent).await.unwrap();
    assert_eq!(again.ticket_id, ana.ticket_id);
    assert!(again.admitted);

    // Cy's chain was cut by the fence: a join through the lagging
    // instance ends it and starts a new chain.
    let cy_again = slow.join(b"cy", ClientTime::Absent).await.unwrap();
    assert_ne!(
        cy_again.ticket_id, cy.ticket_id,
        "a fenced chain was revived"
    );
    assert_eq!(lagging.epoch(), shard.epoch(), "learnt from the refusal");
}

/// A store with an epoch per shard: after the chain's shard is fenced, the
/// chain's heartbeat is refused, and so is a rejoin from the facts of its
/// latest ticket, which a room recorded before the fence; a chain joined
/// after the fence goes on.
#[tokio::test]
async fn a_fenced_chain_cannot_be_rejoined_and_book_again() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(FencedStore::new());
    let issuer = Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), store.clone()).unwrap();
    let booking = booking_route(clock.clone(), store.clone());

    let first = issuer.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
    assert!(first.claims.is_admitted());
    book(&booking, &first.ticket, b"ana").await.unwrap();
    // No fence: a rejoin re-mints the chain, whose booking is refused (the
    // consumption record is there).
    clock.advance(Duration::from_secs(1));
    let again = issuer
        .rejoin(
            b"ana",
            ClientTime::Absent,
            &ChainFacts::of(&first.claims),
            &ADMIT,
        )
        .await
        .unwrap();
    assert_eq!(again.claims.ticket_id, first.claims.ticket_id);
    assert!(matches!(
        book(&booking, &again.ticket, b"ana").await,
        Err(Rejection::Replayed {
            reason: ReplayReason::ConsumedBySameClient,
            ..
        })
    ));

    // The chain's shard fails over to a replica that lacks its records.
    store.fence();
    clock.advance(Duration::from_secs(1));
    let facts = ChainFacts::of(&again.claims);
    let rejoined = issuer
        .rejoin(b"ana", ClientTime::Absent, &facts, &ADMIT)
        .await;
    if let Ok(m) = &rejoined {
        panic!(
            "the consumed chain was re-minted across the fence, and booking it answers {:?}",
            book(&booking, &m.ticket, b"ana").await
        );
    }
    assert!(is_state_reset(&rejoined), "{rejoined:?}");
    // As its heartbeat is (same code and reason).
    let checked = issuer.check(&presented(&again.ticket, b"ana")).unwrap();
    let beat = issuer.renew(&checked, b"ana", &ADMIT).await;
    assert!(is_state_reset(&beat), "{beat:?}");
    // Nothing was re-created: still refused.
    let retried = issuer
        .rejoin(b"ana", ClientTime::Absent, &facts, &ADMIT)
        .await;
    assert!(is_state_reset(&retried), "{retried:?}");

    // A chain joined after the fence rejoins and books once.
    let fresh = issuer.join(b"bo", ClientTime::Absent, &ADMIT).unwrap();
    let fresh = issuer
        .rejoin(
            b"bo",
            ClientTime::Absent,
            &ChainFacts::of(&fresh.claims),
            &ADMIT,
        )
        .await
        .unwrap();
    book(&booking, &fresh.ticket, b"bo").await.unwrap();
}

const WAIT: JoinDecision = JoinDecision {
    position: 7,
    live_for: Duration::from_secs(30),
    estimated_wait: Duration::from_secs(60),
    admit: false,
};

/// A waiting chain has nothing to book: across a fence its rejoin goes on
/// under the shard's new epoch and keeps the chain (the room keeps its
/// place), while its tickets from before the fence stay refused. The
/// instance had not learnt the new epoch: the first advance teaches it.
#[tokio::test]
async fn a_waiting_chain_keeps_its_place_across_a_fence() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(FencedStore::new());
    let issuer = Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), store.clone()).unwrap();
    let first = issuer.join(b"cy", ClientTime::Absent, &WAIT).unwrap();
    assert!(!first.claims.is_admitted());
    let checked = issuer.check(&presented(&first.ticket, b"cy")).unwrap();
    let second = issuer.renew(&checked, b"cy", &WAIT).await.unwrap();

    store.fence();
    clock.advance(Duration::from_secs(1));
    let checked = issuer.check(&presented(&second.ticket, b"cy")).unwrap();
    let beat = issuer.renew(&checked, b"cy", &WAIT).await;
    assert!(is_state_reset(&beat), "{beat:?}");
    let rejoined = issuer
        .rejoin(
            b"cy",
            ClientTime::Absent,
            &ChainFacts::of(&second.claims),
            &WAIT,
        )
        .await
        .expect("a waiting chain is re-minted across the fence");
    assert_eq!(rejoined.claims.ticket_id, first.claims.ticket_id);
    assert_eq!(rejoined.claims.position, WAIT.position);
    assert_eq!(rejoined.claims.epoch, store.epoch());
    assert_ne!(rejoined.claims.epoch, second.claims.epoch);
    // Its tickets from before the fence stay refused; the new one goes on.
    for old in [&first.ticket, &second.ticket] {
        let renewed = match issuer.check(&presented(old, b"cy")) {
            Ok(checked) => issuer.renew(&checked, b"cy", &WAIT).await.is_ok(),
            Err(_) => false,
        };
        assert!(!renewed, "a ticket from before the fence was renewed");
    }
    let checked = issuer.check(&presented(&rejoined.ticket, b"cy")).unwrap();
    issuer.renew(&checked, b"cy", &WAIT).await.unwrap();
}

/// A room whose state outlived its replay store (a memory replay store
/// restarted under a room kept elsewhere): the person's join on the
/// restarted instance does not re-mint the booked chain from the room's
/// facts; it starts a new chain.
#[tokio::test]
async fn a_restarted_memory_store_does_not_revive_a_booked_chain() {
    let clock = ManualClock::new(T0);
    let state = Arc::new(MemoryRoomState::new());
    let instance = |store: &Arc<MemoryReplayStore>| {
        let issuer = Issuer::new(keys(), Policy::new(QUEUE), clock.clone(), store.clone()).unwrap();
        WaitingRoom::builder(issuer, state.clone())
            .admit_per_sec(50.0)
            .unwrap()
            .build()
            .unwrap()
    };
    let before = Arc::new(MemoryReplayStore::new());
    let room = instance(&before);
    let first = room.join(b"ana", ClientTime::Absent).await.unwrap();
    assert!(first.admitted);
    book(
        &booking_route(clock.clone(), before.clone()),
        &first.ticket,
        b"ana",
    )
    .await
    .unwrap();

    // The replay store restarts (a new epoch, no records); the room's
    // state, with the chain's facts, is still there.
    let after = Arc::new(MemoryReplayStore::new());
    assert_ne!(after.epoch(), before.epoch());
    let room = instance(&after);
    let booking = booking_route(clock.clone(), after.clone());
    clock.advance(Duration::from_secs(1));
    let first_claims = queuegate::ticket::decode(first.ticket.as_bytes())
        .unwrap()
        .claims()
        .unwrap();
    let direct = room
        .issuer()
        .rejoin(
            b"ana",
            ClientTime::Absent,
            &ChainFacts::of(&first_claims),
            &ADMIT,
        )
        .await;
    if let Ok(m) = &direct {
        panic!(
            "the booked chain was re-minted from the room's facts, and booking it answers {:?}",
            book(&booking, &m.ticket, b"ana").await
        );
    }
    assert!(is_state_reset(&direct), "{direct:?}");

    let second = room.join(b"ana", ClientTime::Absent).await.unwrap();
    if second.ticket_id == first.ticket_id {
        panic!(
            "the booked chain was re-minted (admitted: {}), and booking it answers {:?}",
            second.admitted,
            book(&booking, &second.ticket, b"ana").await
        );
    }
    // The old ticket stays refused too.
    assert!(matches!(
        book(&booking, &first.ticket, b"ana").await,
        Err(Rejection::Replayed {
            reason: ReplayReason::StateReset,
            ..
        })
    ));
    // The new chain is the person's only place: joining again keeps it.
    let third = room.join(b"ana", ClientTime::Absent).await.unwrap();
    assert_eq!(third.ticket_id, second.ticket_id);
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use queuegate::replay::RedisReplayStore;
    use queuegate::room::RedisRoomState;
    use queuegate::{SystemClock, TicketId};

    const URL: &str = "redis://127.0.0.1:6379/";

    /// Rejoins `ana` from `facts` three times in a row (the first may teach
    /// the store the new epoch): none may re-mint the booked chain (if one
    /// did, what booking it answers is shown), each is `state_reset`.
    async fn three_rejoins_refused<C: Clock, S: ReplayStore, C2: Clock, S2: ReplayStore>(
        issuer: &Issuer<C, S>,
        facts: &ChainFacts,
        booking: &Verifier<C2, S2>,
    ) {
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(
                issuer
                    .rejoin(b"ana", ClientTime::Absent, facts, &ADMIT)
                    .await,
            );
        }
        for (attempt, r) in answers.iter().enumerate() {
            if let Ok(m) = r {
                panic!(
                    "attempt {attempt}: the booked chain was re-minted across the fence, and booking it answers {:?}",
                    book(booking, &m.ticket, b"ana").await
                );
            }
        }
        for (attempt, r) in answers.iter().enumerate() {
            assert!(is_state_reset(r), "attempt {attempt}: {r:?}");
        }
    }

    /// A single Redis whose replay data is lost (its epoch key and
    /// records, as after a restart without persistence) while the room's
    /// records, with the chain's facts, survive (kept under another
    /// prefix): the booked chain is not re-minted from the facts, whatever
    /// the number of attempts, and cannot book again; the person's join
    /// starts a new chain.
    #[tokio::test]
    #[ignore = "needs Redis"]
    async fn a_lost_redis_does_not_revive_a_booked_chain() {
        let tag = TicketId::random();
        let replay = RedisReplayStore::builder(URL)
            .prefix(&format!("qg-fence11-replay-{tag}"))
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379");
        let state = RedisRoomState::builder(URL)
            .prefix(&format!("qg-fence11-room-{tag}"))
            .connect()
            .await
            .expect("this test needs Redis on 127.0.0.1:6379");
        let store = Arc::new(replay.clone());
        let issuer = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, store.clone()).unwrap();
        let room = WaitingRoom::builder(issuer, state.clone())
            .admit_per_sec(50.0)
            .unwrap()
            .build()
            .unwrap();
        let booking = booking_route(SystemClock, store.clone());

        let first = room.join(b"ana", ClientTime::Absent).await.unwrap();
        assert!(first.admitted);
        book(&booking, &first.ticket, b"ana").await.unwrap();
        let before = replay.epoch();

        // Redis loses the replay data.
        replay.clear().await.unwrap();

        let first_claims = queuegate::ticket::decode(first.ticket.as_bytes())
            .unwrap()
            .claims()
            .unwrap();
        let facts = ChainFacts::of(&first_claims);
        // The first attempt finds the epoch key gone (the store learns the
        // new epoch); a retry knows it. Both refused, nothing re-created.
        three_rejoins_refused(room.issuer(), &facts, &booking).await;
        assert_ne!(replay.epoch(), before, "the store learnt the new epoch");

        // Through the room (which reads the facts it recorded): a new chain.
        let second = room.join(b"ana", ClientTime::Absent).await.unwrap();
        if second.ticket_id == first.ticket_id {
            panic!(
                "the booked chain was re-minted from the room's facts, and booking it answers {:?}",
                book(&booking, &second.ticket, b"ana").await
            );
        }
        assert!(matches!(
            book(&booking, &first.ticket, b"ana").await,
            Err(Rejection::Replayed {
                reason: ReplayReason::StateReset,
                ..
            })
        ));
        let third = room.join(b"ana", ClientTime::Absent).await.unwrap();
        assert_eq!(third.ticket_id, second.ticket_id, "one place per person");

        state.clear(QUEUE).await.unwrap();
        replay.clear().await.unwrap();
    }

    /// Two instances on one Redis that came back empty: the one that has
    /// not learnt the new epoch yet (no script of its own was refused)
    /// still serves the tickets the other minted under it: a heartbeat, a
    /// booking, and a rejoin that lost a race with its renewal is a stale
    /// sequence (`busy`), not `state_reset` (which would end an admitted
    /// person's chain). The store compares epochs in its scripts, against
    /// the one Redis holds, not the instance's view. A ticket from before
    /// the loss is still `state_reset` through it, and teaches it the new
    /// epoch.
    #[tokio::test]
    #[ignore = "needs Redis"]
    async fn a_lagging_instance_on_one_redis_serves_the_new_epochs_tickets() {
        let prefix = format!("qg-fence11-lag1-{}", TicketId::random());
        let connect = || async {
            RedisReplayStore::builder(URL)
                .prefix(&prefix)
                .connect()
                .await
                .expect("this test needs Redis on 127.0.0.1:6379")
        };
        let (learnt, lagging) = (Arc::new(connect().await), Arc::new(connect().await));
        let fast = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, learnt.clone()).unwrap();
        let slow = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, lagging.clone()).unwrap();
        let before = fast.join(b"cy", ClientTime::Absent, &ADMIT).unwrap();
        let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
        let before = fast.renew(&checked, b"cy", &ADMIT).await.unwrap();
        let old_epoch = learnt.epoch();
        assert_eq!(lagging.epoch(), old_epoch);

        // Redis loses its data; `fast` learns the new epoch from the
        // refusal of cy's heartbeat.
        learnt.clear().await.unwrap();
        let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
        let beat = fast.renew(&checked, b"cy", &ADMIT).await;
        assert!(is_state_reset(&beat), "{beat:?}");
        let new_epoch = learnt.epoch();
        assert_ne!(new_epoch, old_epoch);

        // Ana joins through `fast` under the new epoch and renews once.
        let first = fast.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
        assert_eq!(first.claims.epoch, new_epoch);
        let checked = fast.check(&presented(&first.ticket, b"ana")).unwrap();
        let second = fast.renew(&checked, b"ana", &ADMIT).await.unwrap();
        // The successor is used (else a rejoin from the first ticket's
        // facts is a retry within the grace and gets it again).
        let route = Verifier::new(keys(), Policy::new(QUEUE), SystemClock, learnt.clone()).unwrap();
        route
            .verify(&presented(&second.ticket, b"ana"))
            .await
            .unwrap();

        // Through `slow`: a rejoin from the first ticket's facts lost the
        // race with the renewal: stale, not reset.
        let rejoined = slow
            .rejoin(
                b"ana",
                ClientTime::Absent,
                &ChainFacts::of(&first.claims),
                &ADMIT,
            )
            .await;
        assert!(is_stale_sequence(&rejoined), "{rejoined:?}");
        // Her heartbeat and her booking are served.
        let checked = slow
            .check(&presented(&second.ticket, b"ana"))
            .expect("a new-epoch ticket passes the lagging instance's checks");
        let third = slow.renew(&checked, b"ana", &ADMIT).await.unwrap();
        assert_eq!(third.claims.epoch, new_epoch);
        let booking = booking_route(SystemClock, lagging.clone());
        book(&booking, &third.ticket, b"ana").await.unwrap();
        assert_eq!(lagging.epoch(), old_epoch, "nothing refused: not learnt");
        // The booked ticket is single use through either instance.
        let again = book(
            &booking_route(SystemClock, learnt.clone()),
            &third.ticket,
            b"ana",
        )
        .await;
        assert!(
            matches!(again, Err(Rejection::Replayed { .. })),
            "{again:?}"
        );

        // A ticket from before the loss is refused through `slow`, which
        // learns the new epoch from it.
        let old = book(&booking, &before.ticket, b"cy").await;
        assert!(
            matches!(
                old,
                Err(Rejection::Replayed {
                    reason: ReplayReason::StateReset,
                    ..
                })
            ),
            "{old:?}"
        );
        assert_eq!(lagging.epoch(), new_epoch, "learnt from the refusal");
        learnt.clear().await.unwrap();
    }

    const SEEDS: [&str; 3] = [
        "redis://127.0.0.1:7000",
        "redis://127.0.0.1:7001",
        "redis://127.0.0.1:7002",
    ];

    /// Fences the shard of the chain record `record` as a failover would:
    /// its primary is no longer the shard's owner, so the next script
    /// there starts a new epoch.
    async fn fence_shard(record: &str) {
        let owner = format!("{}:owner", record.rsplitn(3, ':').nth(2).unwrap());
        let cluster = redis::cluster::ClusterClient::new(SEEDS.to_vec()).unwrap();
        let mut c = cluster.get_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(&owner)
            .arg("another-node")
            .query_async(&mut c)
            .await
            .unwrap();
    }

    /// The keys of a chain's records on the Cluster (its chain record,
    /// ending in `:c`, and its holds or consumptions), found by its ticket
    /// id on any node.
    async fn cluster_chain_keys(id: TicketId) -> Vec<String> {
        let mut found = Vec::new();
        for port in 7000..=7005u16 {
            let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                continue;
            };
            let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("*}}:{id}:*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                found.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        // Replicas list them too.
        found.sort();
        found.dedup();
        found
    }

    /// On a Redis Cluster: the booked chain's shard is fenced (its primary
    /// is no longer the owner and lacks the chain's records, as after a
    /// failover to a replica that had not received them); a rejoin from the
    /// facts of its latest ticket is refused, again once the instance knows
    /// the shard's new epoch, and the chain cannot book again.
    #[tokio::test]
    #[ignore = "needs Redis Cluster"]
    async fn a_fenced_cluster_shard_does_not_revive_a_booked_chain() {
        let replay = RedisReplayStore::cluster_builder(&SEEDS)
            .prefix(&format!("qg-fence11-cluster-{}", TicketId::random()))
            .connect()
            .await
            .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`");
        let store = Arc::new(replay.clone());
        let issuer = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, store.clone()).unwrap();
        let booking = booking_route(SystemClock, store.clone());
        let first = issuer.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
        // A heartbeat writes the chain's record (a join writes none).
        let checked = issuer.check(&presented(&first.ticket, b"ana")).unwrap();
        let latest = issuer.renew(&checked, b"ana", &ADMIT).await.unwrap();
        book(&booking, &latest.ticket, b"ana").await.unwrap();
        let before = replay.epoch_of(&first.claims.ticket_id);

        // The shard fails over to a replica that lacks the chain's records
        // (deleted on purpose) and that is not the shard's owner: the next
        // script there fences it.
        let keys = cluster_chain_keys(first.claims.ticket_id).await;
        let record = keys.iter().find(|k| k.ends_with(":c")).expect("a record");
        assert!(
            keys.len() >= 2,
            "the chain record and its consumption: {keys:?}"
        );
        let cluster = redis::cluster::ClusterClient::new(SEEDS.to_vec()).unwrap();
        let mut c = cluster.get_async_connection().await.unwrap();
        for key in &keys {
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        fence_shard(record).await;

        let facts = ChainFacts::of(&latest.claims);
        three_rejoins_refused(&issuer, &facts, &booking).await;
        assert_ne!(
            replay.epoch_of(&first.claims.ticket_id),
            before,
            "the store learnt the shard's new epoch"
        );
        assert!(matches!(
            book(&booking, &latest.ticket, b"ana").await,
            Err(Rejection::Replayed {
                reason: ReplayReason::StateReset,
                ..
            })
        ));
        replay.clear().await.unwrap();
    }

    /// On a Redis Cluster, through two instances of the store: one learnt a
    /// fenced shard's new epoch, the other has not. A chain minted after the
    /// fence on that shard, whose renewal overtook the facts a rejoin
    /// presents, is `stale_sequence` through the lagging instance (the
    /// script answered a stale sequence, not a refused epoch); a ticket
    /// minted before the fence is `state_reset` through it.
    #[tokio::test]
    #[ignore = "needs Redis Cluster"]
    async fn a_lagging_cluster_instance_labels_a_lost_race_stale() {
        let prefix = format!("qg-fence11-lag-{}", TicketId::random());
        let connect = || async {
            RedisReplayStore::cluster_builder(&SEEDS)
                .prefix(&prefix)
                .connect()
                .await
                .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
        };
        let (learnt, lagging) = (Arc::new(connect().await), Arc::new(connect().await));
        let fast = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, learnt.clone()).unwrap();
        let slow = Issuer::new(keys(), Policy::new(QUEUE), SystemClock, lagging.clone()).unwrap();
        let before = fast.join(b"cy", ClientTime::Absent, &ADMIT).unwrap();
        let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
        let before = fast.renew(&checked, b"cy", &ADMIT).await.unwrap();
        let id = before.claims.ticket_id;
        let old_epoch = learnt.epoch_of(&id);

        // The shard fails over (its owner is another node); `fast` learns
        // the new epoch from the refusal of cy's heartbeat.
        let records = cluster_chain_keys(id).await;
        let record = records
            .iter()
            .find(|k| k.ends_with(":c"))
            .expect("a record");
        fence_shard(record).await;
        let checked = fast.check(&presented(&before.ticket, b"cy")).unwrap();
        let beat = fast.renew(&checked, b"cy", &ADMIT).await;
        assert!(is_state_reset(&beat), "{beat:?}");
        let new_epoch = learnt.epoch_of(&id);
        assert_ne!(new_epoch, old_epoch);
        assert_eq!(lagging.epoch_of(&id), old_epoch, "not learnt yet");

        // Ana's chain on the same shard (the shard is the ticket id's first
        // byte: joins are drawn until it is cy's), minted after the fence
        // by `fast`, renewed, and the successor used.
        let first = loop {
            let m = fast.join(b"ana", ClientTime::Absent, &ADMIT).unwrap();
            if m.claims.ticket_id.0[0] == id.0[0] {
                break m;
            }
        };
        assert_eq!(first.claims.epoch, new_epoch);
        let checked = fast.check(&presented(&first.ticket, b"ana")).unwrap();
        let second = fast.renew(&checked, b"ana", &ADMIT).await.unwrap();
        let route = Verifier::new(keys(), Policy::new(QUEUE), SystemClock, learnt.clone()).unwrap();
        route
            .verify(&presented(&second.ticket, b"ana"))
            .await
            .unwrap();

        let rejoined = slow
            .rejoin(
                b"ana",
                ClientTime::Absent,
                &ChainFacts::of(&first.claims),
                &ADMIT,
            )
            .await;
        assert!(is_stale_sequence(&rejoined), "{rejoined:?}");
        assert_eq!(lagging.epoch_of(&id), old_epoch, "nothing refused");

        let rejoined = slow
            .rejoin(
                b"cy",
                ClientTime::Absent,
                &ChainFacts::of(&before.claims),
                &ADMIT,
            )
            .await;
        assert!(is_state_reset(&rejoined), "{rejoined:?}");
        assert_eq!(lagging.epoch_of(&id), new_epoch, "learnt from the refusal");
        learnt.clear().await.unwrap();
    }
}
