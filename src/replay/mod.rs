//! Replay state: the one small record per chain that makes clones, replays
//! and reuse of single-use tickets detectable.
//!
//! The issuer writes the highest sequence it issued for a chain (so an older
//! copy is caught even on a route that never saw the newer one); a `session`
//! scope refuses sequences older than that (past the renewal grace); a
//! `single_use` scope takes a *hold* on the whole chain before the host's
//! handler runs, and the handler's answer settles it: a success commits
//! (consumes the chain for the scope), a refusal the host declares free of
//! side effects releases it, anything else keeps it until it expires, after
//! which only the same client may try again. Every check-and-record is
//! atomic.

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_clock;
mod table;

use std::future::Future;
use std::sync::Arc;

#[cfg(feature = "redis")]
pub use self::redis::{BoxStoreFuture, RedisReplayStore, RedisReplayStoreBuilder};
pub use memory::{MemoryReplayStore, MemoryReplayStoreBuilder};

use crate::error::StoreError;
use crate::rejection::ReplayReason;
use crate::ticket::{ScopeId, TicketId, TicketKind};

/// What a protection scope remembers about the tickets it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayMode {
    /// No replay state: any valid ticket is accepted any number of times.
    Off,
    /// Repeats of the chain's current ticket are accepted, but never a
    /// sequence older than one already issued (past the renewal grace).
    #[default]
    Session,
    /// At most one request per chain (every sequence of it) succeeds in
    /// this scope: the first accepted request takes a hold on the chain, a
    /// concurrent one is `in_progress`, and once a handler succeeded every
    /// later one is `replayed`. See [`Hold`].
    SingleUse,
}

/// One check of a presented ticket against the replay state of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCheck {
    /// The protection scope.
    pub scope: ScopeId,
    /// The chain.
    pub ticket_id: TicketId,
    /// The presented ticket's sequence.
    pub sequence: u32,
    /// The presented ticket's kind (stores keep separate capacity per kind).
    pub kind: TicketKind,
    /// Whether the ticket's binding check passed in this request. Every
    /// ticket of a chain is bound to the material its client joined with,
    /// so a request that passed it is the chain's own client, whatever key
    /// its ticket was minted under (binding bytes minted under different
    /// keys differ, so stores never compare them). False only when the
    /// policy monitors `binding_mismatch` and let a mismatch through.
    pub same_client: bool,
    /// The presented ticket's liveness deadline. A chain's record is kept
    /// until the latest deadline issued in the chain (bounded by the
    /// expiry) plus the store's tolerance: after it, no ticket of the chain
    /// can pass.
    pub live_until_ms: i64,
    /// The ticket's expiry: a consumption record is kept until it plus the
    /// store's tolerance.
    pub expires_at_ms: i64,
    /// Server time of the check.
    pub now_ms: i64,
    /// How long after issuing sequence `n + 1` the sequence `n` is still
    /// accepted, if `n + 1` has not been seen (a lost response).
    pub grace_ms: i64,
    /// For a `single_use` scope: the hold to take on the chain.
    pub hold: Option<Hold>,
    /// The presented ticket's epoch. A store that compares epochs itself
    /// ([`ReplayStore::checks_epoch`]: the Redis store, on one Redis or a
    /// Cluster) compares it in the check's own script with the epoch it
    /// holds (on a Cluster, the chain's shard's), never with an
    /// instance's copy, which can lag or change in between; for the
    /// others the verifier compared it with [`ReplayStore::epoch`]. The
    /// memory store ignores it (its epoch never changes). Set it to the
    /// ticket's epoch, as the verifier does.
    pub epoch: u32,
}

impl ReplayCheck {
    /// When the chain's record may be dropped: the liveness deadline,
    /// bounded by the expiry, plus `tolerance_ms`.
    pub fn chain_retention_ms(&self, tolerance_ms: i64) -> i64 {
        retention_ms(self.live_until_ms, self.expires_at_ms, tolerance_ms)
    }
}

/// The retention rule of a chain record (SPEC §10): the latest liveness
/// deadline, bounded by the expiry, plus the tolerance.
pub fn retention_ms(live_until_ms: i64, expires_at_ms: i64, tolerance_ms: i64) -> i64 {
    live_until_ms
        .min(expires_at_ms)
        .saturating_add(tolerance_ms)
}

/// A hold a `single_use` scope takes on a chain before the host's handler
/// runs: a lease with a random token, until `until_ms`.
///
/// While it is live, another use of the chain in the scope is
/// [`ReplayVerdict::InProgress`]. The handler's answer settles it with
/// [`ReplayStore::settle`]: [`Settlement::Commit`] consumes the chain (every
/// later use is `replayed`), [`Settlement::Release`] drops the hold at once
/// (the chain may be used again). A hold never settled (a server error, a
/// panic, a timeout, a client that went away) expires at `until_ms`; after
/// that only the same client ([`ReplayCheck::same_client`]) may take a new
/// one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// A random token naming this hold: only its holder's release counts.
    pub token: u64,
    /// When the hold expires (server time, ms).
    pub until_ms: i64,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("token", &"REDACTED")
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

impl Hold {
    /// A hold with a fresh random token, until `until_ms`.
    pub fn new(until_ms: i64) -> Self {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("the operating system's random source failed");
        // Zero is kept free so that stores can mark "no hold" with it.
        Self {
            token: u64::from_le_bytes(b).max(1),
            until_ms,
        }
    }
}

/// The answer to a [`ReplayCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not a replay; recorded (and, for a hold, the hold is taken).
    Fresh,
    /// A replay of the given kind; nothing was recorded.
    Replayed(ReplayReason),
    /// Another use of the chain in this scope holds it until `until_ms`;
    /// nothing was recorded.
    InProgress {
        /// When that hold expires (server time, ms).
        until_ms: i64,
    },
}

/// How a handler's answer settles a [`Hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The handler succeeded: the chain is consumed for the scope.
    Commit,
    /// The handler refused without side effects: the hold is dropped and
    /// the chain may be used again at once.
    Release,
}

/// A request to settle a [`Hold`] (see [`ReplayStore::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleHold {
    /// The protection scope.
    pub scope: ScopeId,
    /// The chain.
    pub ticket_id: TicketId,
    /// The kind of the ticket that took the hold.
    pub kind: TicketKind,
    /// The hold being settled.
    pub hold: Hold,
    /// Commit or release.
    pub settlement: Settlement,
    /// The ticket's expiry (the consumption record's retention).
    pub expires_at_ms: i64,
    /// Server time.
    pub now_ms: i64,
}

/// The issuer's request to advance a chain from the presented sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvanceRequest {
    /// The chain.
    pub ticket_id: TicketId,
    /// The presented (current) sequence.
    pub sequence: u32,
    /// The kind of the ticket about to be issued.
    pub kind: TicketKind,
    /// The liveness deadline of the ticket about to be issued (an upper
    /// bound): the chain's record is kept until the latest one, bounded by
    /// the expiry, plus the store's tolerance.
    pub live_until_ms: i64,
    /// The expiry of the ticket about to be issued.
    pub expires_at_ms: i64,
    /// Server time.
    pub now_ms: i64,
    /// The renewal grace (see [`ReplayCheck::grace_ms`]).
    pub grace_ms: i64,
    /// The presented ticket's epoch (for a chain re-minted from a room's
    /// facts, with no ticket presented: the epoch its latest ticket was
    /// minted under, [`ChainFacts::epoch`](crate::ChainFacts::epoch)). A
    /// store that compares epochs itself ([`ReplayStore::checks_epoch`]:
    /// the Redis store) refuses, in the advance's own script, the advance
    /// of a ticket minted under an epoch it no longer holds (lost data, a
    /// fenced shard: [`Advance::Reset`]), as its check does; for the
    /// others the verifier (or the issuer, for a re-minted chain)
    /// compared it with [`ReplayStore::epoch`]. The memory store ignores
    /// it.
    pub epoch: u32,
}

/// The answer to an [`AdvanceRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// Issue `sequence`, issued at `issued_at_ms` (now).
    Next {
        /// The new highest sequence.
        sequence: u32,
        /// Its issue time.
        issued_at_ms: i64,
    },
    /// The presented ticket was renewed a moment ago and its successor has
    /// not been used: issue the same successor again (same sequence, same
    /// issue time), so a retried heartbeat costs the client nothing.
    Retry {
        /// The successor's sequence.
        sequence: u32,
        /// The successor's original issue time.
        issued_at_ms: i64,
    },
    /// The chain has moved on past the presented sequence (or that
    /// sequence cannot be advanced at all: the last one, or a successor
    /// whose record would already be past its retention by the store's
    /// clock): the presented ticket is `replayed`, reason
    /// [`StaleSequence`](ReplayReason::StaleSequence). A store that does
    /// not compare epochs itself ([`ReplayStore::checks_epoch`] false) may
    /// answer this for a chain whose records it lost too; the issuer then
    /// tells the two apart by [`ReplayStore::epoch_of`].
    Stale,
    /// The presented ticket's epoch ([`AdvanceRequest::epoch`]) is not the
    /// store's (for a store with an epoch per shard, the chain's shard's):
    /// the store lost the chain's records, or its shard was fenced, since
    /// the ticket was minted. Nothing was written; the presented ticket is
    /// `replayed`, reason [`StateReset`](ReplayReason::StateReset). Only the
    /// store knows this for sure: an instance's own view of a shard's epoch
    /// ([`ReplayStore::epoch_of`]) can lag a fence another instance learnt
    /// of, so a store that compares epochs must answer this, never
    /// [`Stale`](Self::Stale), for an epoch it refused.
    ///
    /// This variant came after the others, and `Advance` is not
    /// `#[non_exhaustive]` (every answer of a store must be handled, and
    /// fail closed): an exhaustive `match` on it outside the crate needs an
    /// arm for it. The crate is pre-1.0; the README notes the change.
    Reset,
}

/// Where replay records live. Implemented by [`MemoryReplayStore`] and, behind
/// the `redis` feature, by `RedisReplayStore`.
///
/// The futures are associated types so that a synchronous store (memory)
/// returns a ready future and the layer's response future needs no boxing.
pub trait ReplayStore: Send + Sync + 'static {
    /// The future of [`check`](Self::check).
    type CheckFuture: Future<Output = Result<ReplayVerdict, StoreError>> + Send + 'static;
    /// The future of [`advance`](Self::advance).
    type AdvanceFuture: Future<Output = Result<Advance, StoreError>> + Send + 'static;
    /// The future of [`settle`](Self::settle).
    type SettleFuture: Future<Output = Result<(), StoreError>> + Send + 'static;

    /// A random number chosen when this store's state began. Tickets carry
    /// the epoch they were minted under; a ticket from another epoch was
    /// minted before the state was lost (a restarted in-memory store) and
    /// is refused.
    fn epoch(&self) -> u32;

    /// The epoch a ticket of the chain `ticket_id` is minted under: the
    /// epoch of the chain's shard for a store with an epoch per shard
    /// (Redis Cluster), [`epoch`](Self::epoch) otherwise.
    fn epoch_of(&self, ticket_id: &TicketId) -> u32 {
        let _ = ticket_id;
        self.epoch()
    }

    /// Whether [`check`](Self::check) and [`advance`](Self::advance)
    /// compare the ticket's epoch ([`ReplayCheck::epoch`],
    /// [`AdvanceRequest::epoch`]) themselves, against the epoch of the
    /// chain's shard, so the verifier must not compare it with
    /// [`epoch`](Self::epoch). Such a store answers an advance whose epoch
    /// it refuses with [`Advance::Reset`], and the issuer reads its
    /// [`Advance::Stale`] as a stale sequence, whatever this instance
    /// knows of the shard's epoch. False by default (the memory store's
    /// epoch never changes while it runs); the Redis store, on one Redis or
    /// a Cluster, compares in its scripts, where the epoch it compares with
    /// is the one Redis holds, not the instance's view of it (which lags
    /// whenever another instance learnt a new one first).
    fn checks_epoch(&self) -> bool {
        false
    }

    /// Checks a presented ticket and records it, atomically.
    ///
    /// A store must never answer [`ReplayVerdict::Fresh`] for a ticket whose
    /// record it may have dropped: a record dropped at a later time than
    /// `check.now_ms` (by a clock that was ahead) would otherwise let a
    /// consumed ticket through again. Such a ticket is
    /// [`ReplayReason::StateReset`].
    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture;

    /// Advances a chain for the issuer, atomically.
    ///
    /// A store that compares the presented epoch itself
    /// ([`checks_epoch`](Self::checks_epoch)) answers [`Advance::Reset`]
    /// when it refuses that epoch and [`Advance::Stale`] only when the
    /// chain, in the current epoch, has moved on: the issuer takes its
    /// word for it. Any store that knows its state was lost since the
    /// ticket was minted (a single Redis that came back empty) may answer
    /// `Reset` as well.
    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture;

    /// Settles a hold taken by [`check`](Self::check), atomically.
    ///
    /// The work must start when this is called, not when the future is
    /// first polled, and must finish even if the future is dropped: the
    /// layer settles when the handler's response is known, and a client
    /// that goes away at that moment must not undo a commit.
    ///
    /// A commit always consumes the chain for the scope (a handler
    /// succeeded, whichever hold it had). A release drops the hold only if
    /// it is still the one named by `hold.token`.
    fn settle(&self, settle: &SettleHold) -> Self::SettleFuture;
}

impl<T: ReplayStore> ReplayStore for Arc<T> {
    type CheckFuture = T::CheckFuture;
    type AdvanceFuture = T::AdvanceFuture;
    type SettleFuture = T::SettleFuture;

    fn epoch(&self) -> u32 {
        (**self).epoch()
    }

    fn epoch_of(&self, ticket_id: &TicketId) -> u32 {
        (**self).epoch_of(ticket_id)
    }

    fn checks_epoch(&self) -> bool {
        (**self).checks_epoch()
    }

    fn check(&self, check: &ReplayCheck) -> Self::CheckFuture {
        (**self).check(check)
    }

    fn advance(&self, request: &AdvanceRequest) -> Self::AdvanceFuture {
        (**self).advance(request)
    }

    fn settle(&self, settle: &SettleHold) -> Self::SettleFuture {
        (**self).settle(settle)
    }
}

/// The sequence rule shared by every store, on one chain's record.
///
/// `highest` is the highest sequence issued, `issued_at_ms` when it was
/// issued, `seen` whether a ticket with that sequence has been presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    /// Highest sequence issued.
    pub highest: u32,
    /// When it was issued.
    pub issued_at_ms: i64,
    /// Whether it has been presented since.
    pub seen: bool,
}

impl ChainState {
    /// Applies a presentation of `sequence` at `now_ms`. Returns whether it
    /// is accepted, updating the state if so. A `None` state (no record)
    /// accepts and starts one.
    pub fn present(
        state: &mut Option<ChainState>,
        sequence: u32,
        now_ms: i64,
        grace_ms: i64,
    ) -> bool {
        match state {
            None => {
                *state = Some(ChainState {
                    highest: sequence,
                    issued_at_ms: now_ms,
                    seen: true,
                });
                true
            }
            Some(s) if sequence >= s.highest => {
                if sequence > s.highest {
                    // The record missed an issue (a lost write); catch up.
                    s.highest = sequence;
                    s.issued_at_ms = now_ms;
                }
                s.seen = true;
                true
            }
            Some(s) => s.in_grace(sequence, now_ms, grace_ms),
        }
    }

    /// Applies the issuer's advance from `sequence` at `now_ms`.
    pub fn advance(
        state: &mut Option<ChainState>,
        sequence: u32,
        now_ms: i64,
        grace_ms: i64,
    ) -> Advance {
        let Some(next) = sequence.checked_add(1) else {
            return Advance::Stale;
        };
        match state {
            Some(s) if sequence < s.highest => {
                if s.in_grace(sequence, now_ms, grace_ms) {
                    Advance::Retry {
                        sequence: s.highest,
                        issued_at_ms: s.issued_at_ms,
                    }
                } else {
                    Advance::Stale
                }
            }
            _ => {
                *state = Some(ChainState {
                    highest: next,
                    issued_at_ms: now_ms,
                    seen: false,
                });
                Advance::Next {
                    sequence: next,
                    issued_at_ms: now_ms,
                }
            }
        }
    }

    fn in_grace(&self, sequence: u32, now_ms: i64, grace_ms: i64) -> bool {
        sequence.checked_add(1) == Some(self.highest)
            && !self.seen
            && now_ms < self.issued_at_ms.saturating_add(grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_rule() {
        let mut s = None;
        assert!(ChainState::present(&mut s, 0, 0, 5));
        assert_eq!(
            ChainState::advance(&mut s, 0, 10, 5),
            Advance::Next {
                sequence: 1,
                issued_at_ms: 10
            }
        );
        // The old ticket within the grace, successor unseen: a retry.
        assert_eq!(
            ChainState::advance(&mut s, 0, 12, 5),
            Advance::Retry {
                sequence: 1,
                issued_at_ms: 10
            }
        );
        assert!(ChainState::present(&mut s, 0, 13, 5));
        // After the grace: stale.
        assert_eq!(ChainState::advance(&mut s, 0, 15, 5), Advance::Stale);
        assert!(!ChainState::present(&mut s, 0, 15, 5));
        // Once the successor was used, the old one is stale at once.
        let mut s = None;
        ChainState::advance(&mut s, 0, 10, 5);
        assert!(ChainState::present(&mut s, 1, 11, 5));
        assert!(!ChainState::present(&mut s, 0, 11, 5));
        assert_eq!(ChainState::advance(&mut s, 0, 11, 5), Advance::Stale);
        // Sequence at the end of its range cannot advance.
        assert_eq!(
            ChainState::advance(&mut None, u32::MAX, 0, 5),
            Advance::Stale
        );
    }
}
