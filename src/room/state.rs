//! The room's state behind a trait, so the in-memory state of one process
//! and a shared store (Redis) are interchangeable.
//!
//! Per queue a state holds: the next-position counter, the admission token
//! bucket, the pre-queue of people who joined before the opening, the live
//! chains (room binding → chain: position, status, liveness deadline and
//! the [`ChainFacts`] of its latest ticket), the waiting places in position
//! order and the admitted chains by deadline. Each method is one atomic
//! step; a shared store runs each as a single script or transaction.
//!
//! A chain is found by its **room binding**: the keyed hash of the client's
//! binding material under the ring's long-lived room key
//! ([`KeyRing::room_bind`](crate::KeyRing::room_bind)), which a rotation of
//! the signing key does not change. A heartbeat names the chain's ticket id
//! too, and matches only the chain of that id. The state keeps no ticket
//! text: a repeated join re-mints the chain's ticket from its facts, which
//! a state must keep whole, the epoch included (without it the re-mint is
//! refused: see [`ChainFacts::epoch`]).

use std::future::Future;

use super::control::{ControlError, ControlSnapshot, Setting};
use super::schedule::AdmissionRule;
use crate::error::StoreError;
pub use crate::issuer::ChainFacts;
use crate::ticket::{Binding, TicketId};

/// A request to join: the binding's live chain, or a new place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRecord {
    /// The room binding of the client (a session id under the room key).
    pub binding: Binding,
    /// A provisional liveness deadline for a new chain, until its first
    /// ticket is [recorded](RoomState::record).
    pub live_until_ms: i64,
    /// Refuse a new place when this many are waiting already (separate
    /// capacity for waiting people, so a join flood never crowds out
    /// admitted ones).
    pub max_waiting: Option<u64>,
}

/// A heartbeat: where the chain `ticket_id` of `binding` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatRecord {
    /// The room binding of the client.
    pub binding: Binding,
    /// The presented chain: only a chain with this id answers.
    pub ticket_id: TicketId,
}

/// A ticket just issued for a chain: what re-minting it needs, and its
/// liveness deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedRecord {
    /// The room binding of the client.
    pub binding: Binding,
    /// The facts of the ticket just issued.
    pub chain: ChainFacts,
    /// Its liveness deadline.
    pub live_until_ms: i64,
}

/// Where a chain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The facts of the chain's latest ticket, once its first ticket is
    /// recorded (`None` while it is being minted).
    pub chain: Option<ChainFacts>,
    /// Place in the queue (1 = first); `0` in the pre-queue before the
    /// opening (the place is drawn at the opening). 64 bits: a counter that
    /// never reaches its top, so a place is never handed out twice.
    pub position: u64,
    /// Live people waiting in front (0 when admitted or before opening).
    pub ahead: u64,
    /// Whether the turn has come.
    pub admitted: bool,
    /// The chain's current liveness deadline.
    pub live_until_ms: i64,
}

impl Place {
    /// The chain's id, once its first ticket is recorded.
    pub fn ticket_id(&self) -> Option<TicketId> {
        self.chain.map(|c| c.ticket_id)
    }
}

/// The answer to a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// A new chain was started at this place.
    New(Place),
    /// The binding already has a live chain: its place and facts
    /// ([`Place::chain`] is `None` while that chain's first ticket is still
    /// being minted).
    Existing(Place),
    /// The waiting capacity is used up.
    Full,
}

/// Counts for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomStats {
    /// People waiting (pre-queue included), dead places not yet swept
    /// included.
    pub waiting: u64,
    /// Admitted chains whose deadline has not passed.
    pub admitted_alive: u64,
    /// People admitted since the state began.
    pub admitted_total: u64,
    /// Chain records held.
    pub entries: u64,
    /// The last position handed out.
    pub last_position: u64,
    /// Whether the opening has happened.
    pub opened: bool,
}

/// Settings the engine writes to a state that keeps them for every
/// instance of the room (see [`RoomState::write_controls`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlWrite {
    /// Write only if the queue has no shared settings yet: an instance's
    /// configuration seeds them when the room is first used, and never
    /// overrides them afterwards.
    pub seed: bool,
    /// The settings to write; the others keep their shared values (all of
    /// them for a seed).
    pub changed: Vec<Setting>,
    /// The values (only those of `changed` are read).
    pub values: ControlSnapshot,
    /// The most admissions saved up while nobody waits, for the rate in
    /// `values`.
    pub burst: f64,
}

/// Where a waiting room keeps its state, keyed by queue name.
///
/// Methods return `Send` futures so a networked store fits; the in-memory
/// [`MemoryRoomState`](super::MemoryRoomState) returns ready ones.
///
/// Every operation taking an [`AdmissionRule`] first runs the opening if it
/// is due (placing the live pre-queue in an order shuffled with
/// `rule.shuffle_seed`, before any later joiner) and then admission: refill
/// the token bucket from elapsed time, then, while a token is available and
/// the admitted cap allows, take the front waiting place: a place whose
/// deadline has passed is dropped without using a token (dead places do not
/// eat the admission rate); a live one becomes admitted.
pub trait RoomState: Send + Sync + 'static {
    /// Joins `queue`: the binding's live chain if it has one (never a
    /// second place), else a new place at the back (or in the pre-queue
    /// before the opening). A dead chain of the binding is dropped first.
    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send;

    /// A heartbeat: the chain's place, or `None` if the binding has no live
    /// chain with this id (dropped, swept, or replaced by a newer join).
    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send;

    /// Records a ticket just issued for a chain (ignored if the binding's
    /// chain is gone or has another id): extends its liveness deadline (never
    /// shortens it) and keeps its facts, unless facts of a later sequence
    /// are recorded already.
    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the binding's chain (the person booked and left), freeing its
    /// admitted slot at once.
    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops every chain whose deadline passed before `now_ms`; returns how
    /// many. Not needed for correctness (operations skip dead places), only
    /// to bound memory.
    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts for operators.
    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send;

    /// Makes the state consult `amnesty` before it treats a place as dead
    /// (called once by [`WaitingRoomBuilder::build`](super::WaitingRoomBuilder::build)).
    /// The default ignores it: such a state drops forgiven places as usual,
    /// and the room's amnesty covers only the verifier's `offline_resumed`.
    fn share_amnesty(&self, amnesty: std::sync::Arc<crate::amnesty::Amnesty>) {
        let _ = amnesty;
    }

    /// Writes the operator's settings for every instance of the room, if
    /// this state keeps them (Redis); returns the values in force
    /// afterwards, or `None` (the default) when settings are per instance.
    /// Once a queue's settings were written this way, the state takes
    /// nothing from the operations' rules but what they must decide
    /// (the engine owns the settings). Moving the opening time once it has
    /// passed is [`ControlError::OpeningPassed`], and nothing changes.
    fn write_controls(
        &self,
        queue: &str,
        now_ms: i64,
        write: &ControlWrite,
    ) -> impl Future<Output = Result<Option<ControlSnapshot>, ControlError>> + Send {
        let _ = (queue, now_ms, write);
        std::future::ready(Ok(None))
    }

    /// The shared settings as this instance last read them (at most about
    /// a second old while the room has traffic) with a number that grows
    /// whenever they change, if that number is not `seen` and the state
    /// keeps settings for every instance; `None` otherwise (the default).
    /// Cheap: no call to the store.
    fn shared_controls(&self, queue: &str, seen: u64) -> Option<(u64, ControlSnapshot)> {
        let _ = (queue, seen);
        None
    }

    /// Reads the shared settings again if this instance's view is older
    /// than about a second (a state that shares settings does so on its
    /// admission tick; the default does nothing). For an instance without
    /// traffic, and before a refusal that an amnesty declared elsewhere
    /// could have prevented.
    fn refresh_controls(
        &self,
        queue: &str,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (queue, rule);
        std::future::ready(Ok(()))
    }
}

impl<T: RoomState> RoomState for std::sync::Arc<T> {
    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        (**self).join(queue, join, rule)
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        (**self).beat(queue, beat, rule)
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).record(queue, issued)
    }

    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).leave(queue, binding)
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).sweep(queue, now_ms)
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        (**self).stats(queue, now_ms)
    }

    fn share_amnesty(&self, amnesty: std::sync::Arc<crate::amnesty::Amnesty>) {
        (**self).share_amnesty(amnesty)
    }

    fn write_controls(
        &self,
        queue: &str,
        now_ms: i64,
        write: &ControlWrite,
    ) -> impl Future<Output = Result<Option<ControlSnapshot>, ControlError>> + Send {
        (**self).write_controls(queue, now_ms, write)
    }

    fn shared_controls(&self, queue: &str, seen: u64) -> Option<(u64, ControlSnapshot)> {
        (**self).shared_controls(queue, seen)
    }

    fn refresh_controls(
        &self,
        queue: &str,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).refresh_controls(queue, rule)
    }
}
