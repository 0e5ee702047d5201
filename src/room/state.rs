//! The room's state behind a trait, so the in-memory state of one process
//! and a shared store (Redis) are interchangeable.
//!
//! Per queue a state holds: the next-position counter, the admission token
//! bucket, the pre-queue of people who joined before the opening, the live
//! chains (binding → chain: position, status, liveness deadline, latest
//! ticket), the waiting places in position order and the admitted chains by
//! deadline. Each method is one atomic step; a shared store runs each as a
//! single script or transaction.

use std::fmt;
use std::future::Future;

use super::schedule::AdmissionRule;
use crate::error::StoreError;
use crate::ticket::{Binding, TicketId};

/// A request to join: the binding's live chain, or a new place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRecord {
    /// The keyed hash of the client's binding (a session id).
    pub binding: Binding,
    /// A provisional liveness deadline for a new chain, until its first
    /// ticket is [recorded](RoomState::record).
    pub live_until_ms: i64,
    /// Refuse a new place when this many are waiting already (separate
    /// capacity for waiting people, so a join flood never crowds out
    /// admitted ones).
    pub max_waiting: Option<u64>,
}

/// A heartbeat: where the chain `ticket_id` bound to `binding` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatRecord {
    /// The keyed hash of the client's binding.
    pub binding: Binding,
    /// The presented chain.
    pub ticket_id: TicketId,
}

/// The ticket just issued for a chain: its new liveness deadline, and the
/// ticket to hand back if the same client joins again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IssuedRecord<'a> {
    /// The keyed hash of the client's binding.
    pub binding: Binding,
    /// The chain.
    pub ticket_id: TicketId,
    /// The ticket text.
    pub ticket: &'a str,
    /// Its liveness deadline.
    pub live_until_ms: i64,
}

impl fmt::Debug for IssuedRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedRecord")
            .field("binding", &self.binding)
            .field("ticket_id", &self.ticket_id)
            .field("ticket", &"REDACTED")
            .field("live_until_ms", &self.live_until_ms)
            .finish()
    }
}

/// Where a chain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The chain's id, once its first ticket is recorded.
    pub ticket_id: Option<TicketId>,
    /// Place in the queue (1 = first); `0` in the pre-queue before the
    /// opening (the place is drawn at the opening).
    pub position: u32,
    /// Live people waiting in front (0 when admitted or before opening).
    pub ahead: u64,
    /// Whether the turn has come.
    pub admitted: bool,
    /// The chain's current liveness deadline.
    pub live_until_ms: i64,
}

/// The answer to a join. `Debug` does not print the ticket.
#[derive(Clone, PartialEq, Eq)]
pub enum Joined {
    /// A new chain was started at this place.
    New(Place),
    /// The binding already has a live chain: its place and latest ticket
    /// (`None` while that chain's first ticket is still being minted).
    Existing {
        /// Where the chain stands.
        place: Place,
        /// Its latest ticket.
        ticket: Option<String>,
    },
    /// The waiting capacity is used up.
    Full,
}

impl fmt::Debug for Joined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New(place) => f.debug_tuple("New").field(place).finish(),
            Self::Existing { place, ticket } => f
                .debug_struct("Existing")
                .field("place", place)
                .field("ticket", &ticket.as_ref().map(|_| "REDACTED"))
                .finish(),
            Self::Full => f.write_str("Full"),
        }
    }
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
    pub last_position: u32,
    /// Whether the opening has happened.
    pub opened: bool,
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

    /// Records a ticket just issued for a chain (ignored if the chain is
    /// gone): sets its liveness deadline and its latest ticket.
    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord<'_>,
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
        issued: &IssuedRecord<'_>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_ticket() {
        let place = Place {
            ticket_id: Some(TicketId([1; 16])),
            position: 3,
            ahead: 2,
            admitted: false,
            live_until_ms: 10,
        };
        let joined = Joined::Existing {
            place,
            ticket: Some("AQEAAXNlY3JldC10aWNrZXQtdGV4dA".to_owned()),
        };
        let shown = format!("{joined:?}");
        assert!(!shown.contains("AQEAAXNl"), "{shown}");
        assert!(
            shown.contains("REDACTED") && shown.contains("position: 3"),
            "{shown}"
        );
        let record = IssuedRecord {
            binding: Binding([2; 16]),
            ticket_id: TicketId([1; 16]),
            ticket: "AQEAAXNlY3JldC10aWNrZXQtdGV4dA",
            live_until_ms: 10,
        };
        assert!(!format!("{record:?}").contains("AQEAAXNl"));
    }
}
