//! The issuer: mints a waiting ticket at join and renews the chain on each
//! heartbeat, for waiting and admitted tickets alike.
//!
//! A renewal verifies the current ticket with every rule of the verifier
//! (liveness, binding, client clock) except that waiting tickets are
//! accepted, then asks the replay store to advance the chain, then signs the
//! next ticket: same ticket id, sequence + 1, issued now, a new liveness
//! deadline, the same `expires_at` (a new one only at admission). The room
//! decides position, liveness and admission; the issuer enforces the chain.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{duration_to_ms, Clock, SystemClock};
use crate::error::ConfigError;
use crate::keys::KeyRing;
use crate::rejection::{Rejection, ReplayReason};
use crate::replay::{Advance, AdvanceRequest, MemoryReplayStore, ReplayMode, ReplayStore};
use crate::ticket::{
    encode_signed, mac_input, Binding, Claims, TicketId, TicketKind, DOMAIN_LABEL,
};
use crate::verify::{
    saturate_offset, ClientTime, ClockSample, Policy, Presented, Verified, Verifier,
};

/// A freshly signed ticket. `Debug` does not print the ticket text.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// The ticket text to hand to the client.
    pub ticket: String,
    /// Its claims.
    pub claims: Claims,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("ticket", &"REDACTED")
            .field("claims", &self.claims)
            .finish()
    }
}

/// What the room decided for a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinDecision {
    /// Place in the queue (1 = first).
    pub position: u32,
    /// How long until the first heartbeat is due at the latest.
    pub live_for: Duration,
    /// Estimated wait until admission (a hint for `Retry-After`).
    pub estimated_wait: Duration,
    /// Whether the client is admitted at once (the queue is short).
    pub admit: bool,
}

/// What the room decided for a renewal.
pub type RenewDecision = JoinDecision;

/// What a chain's latest ticket says that minting the chain's next ticket
/// without it needs ([`Issuer::rejoin`]). A room keeps these instead of
/// the ticket text (a third of the size, and a rejoin can then re-mint
/// with a new client-clock baseline).
///
/// Build it with [`ChainFacts::of`]. (The `epoch` field came with issue
/// 11: a struct literal written for an earlier version must now set it,
/// to the ticket's `epoch` or `None`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFacts {
    /// The chain's id.
    pub ticket_id: TicketId,
    /// The highest sequence issued in the chain (the latest ticket's).
    pub sequence: u32,
    /// When the client joined.
    pub joined_at_ms: i64,
    /// The latest ticket's expiry: the waiting cap fixed at join, or once
    /// admitted the admitted cap fixed at admission.
    pub expires_at_ms: i64,
    /// Once an admitted ticket was issued: when admission took effect.
    pub admitted_from_ms: Option<i64>,
    /// The replay store's epoch the latest ticket was minted under (its
    /// shard's on a Cluster): the epoch under which the chain's replay
    /// records were written. A rejoin re-mints the chain only while the
    /// store still has that epoch; `None` (unknown: facts recorded by a
    /// build that did not keep it) is refused like a changed epoch.
    pub epoch: Option<u32>,
}

impl ChainFacts {
    /// The facts of a ticket's claims.
    pub fn of(claims: &Claims) -> Self {
        Self {
            ticket_id: claims.ticket_id,
            sequence: claims.sequence,
            joined_at_ms: claims.joined_at_ms,
            expires_at_ms: claims.expires_at_ms,
            admitted_from_ms: claims.is_admitted().then_some(claims.admitted_from_ms),
            epoch: Some(claims.epoch),
        }
    }
}

/// Mints and renews tickets for one queue.
pub struct Issuer<C = SystemClock, S = MemoryReplayStore> {
    verifier: Verifier<C, S>,
    waiting_ttl_ms: i64,
    admitted_ttl_ms: i64,
}

impl<C, S> fmt::Debug for Issuer<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("verifier", &self.verifier)
            .field("waiting_ttl_ms", &self.waiting_ttl_ms)
            .field("admitted_ttl_ms", &self.admitted_ttl_ms)
            .finish()
    }
}

impl<C: Clone, S> Clone for Issuer<C, S> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            waiting_ttl_ms: self.waiting_ttl_ms,
            admitted_ttl_ms: self.admitted_ttl_ms,
        }
    }
}

impl<C: Clock, S: ReplayStore> Issuer<C, S> {
    /// An issuer for `policy`'s queue and clock rules. The issuer always
    /// keeps replay state (it writes each chain's highest sequence), whatever
    /// the policy's replay mode. A waiting chain expires 12 hours after join
    /// and an admitted one 10 minutes after admission unless set otherwise.
    pub fn new(
        keys: Arc<KeyRing>,
        policy: Policy,
        clock: C,
        store: Arc<S>,
    ) -> Result<Self, ConfigError> {
        let policy = policy.replay(ReplayMode::Session);
        Ok(Self {
            verifier: Verifier::new(keys, policy, clock, store)?,
            waiting_ttl_ms: 12 * 3_600_000,
            admitted_ttl_ms: 600_000,
        })
    }

    /// The absolute cap on a waiting chain, from join.
    #[must_use]
    pub fn waiting_ttl(mut self, ttl: Duration) -> Self {
        self.waiting_ttl_ms = duration_to_ms(ttl);
        self
    }

    /// The absolute cap on an admitted chain, from admission (the time a
    /// person has to book).
    #[must_use]
    pub fn admitted_ttl(mut self, ttl: Duration) -> Self {
        self.admitted_ttl_ms = duration_to_ms(ttl);
        self
    }

    /// The verifier the issuer checks presented tickets with.
    pub fn verifier(&self) -> &Verifier<C, S> {
        &self.verifier
    }

    /// The server time as the issuer sees it (monotone).
    pub fn now_ms(&self) -> i64 {
        self.verifier.now_ms()
    }

    /// Mints the first ticket of a new chain (sequence 0), bound to
    /// `binding`. The client clock, if sent, is checked for skew and becomes
    /// the chain's baseline.
    pub fn join(
        &self,
        binding: &[u8],
        client_time: ClientTime,
        decision: &JoinDecision,
    ) -> Result<Minted, Rejection> {
        let now = self.now_ms();
        let offset = self.verifier.check_join_clock(client_time, now)?;
        let keys = self.verifier.keys();
        let queue = self.verifier.policy().queue_id();
        let key_id = keys.signing_key_id();
        let bound = keys
            .bind(key_id, queue, binding)
            .expect("the signing key is in the ring");
        let ticket_id = TicketId::random();
        let claims = self.next_claims(
            Claims {
                kind: TicketKind::Waiting,
                key_id,
                queue,
                ticket_id,
                epoch: self.verifier.store().epoch_of(&ticket_id),
                sequence: 0,
                position: 0,
                joined_at_ms: now,
                issued_at_ms: now,
                live_until_ms: now,
                admitted_from_ms: now,
                expires_at_ms: now.saturating_add(self.waiting_ttl_ms),
                clock_offset_ms: None,
                binding: bound,
            },
            0,
            now,
            offset,
            bound,
            decision,
        );
        Ok(self.sign(claims))
    }

    /// Mints the next ticket of a live chain for a client that joins again
    /// without presenting it (a reloaded page, or a ticket refused for its
    /// client clock): same ticket id and join time, the next sequence (the
    /// older tickets of the chain become `replayed` once the renewal grace
    /// has passed), the same expiry (or the admitted one if `decision`
    /// admits), and the client clock measured now as the chain's **new
    /// baseline** (`None` if no client time was sent): a corrected clock
    /// starts afresh instead of failing every later heartbeat. The clock is
    /// still checked for skew first, so a clock far off stays refused.
    ///
    /// `chain` comes from the room's state, keyed by the client's binding,
    /// so `binding` is the material that chain was joined with. When the
    /// replay store's chain has moved past `chain.sequence` (a renewal not
    /// yet recorded), the answer is `replayed` and nothing is issued.
    ///
    /// An **admitted** chain goes on only under the epoch its latest ticket
    /// was minted under (`chain.epoch`), exactly as a heartbeat presenting
    /// that ticket would: if the store lost the chain's records since (a
    /// restarted memory store, a Redis that came back empty, a fenced
    /// Cluster shard), or the epoch is unknown (`None`), the answer is
    /// `replayed` with reason [`StateReset`](ReplayReason::StateReset) and
    /// nothing is issued. The room facts cannot stand in for the lost
    /// records (a consumed chain would book again): the person joins again
    /// with a new chain ([`WaitingRoom`](crate::room::WaitingRoom) does so
    /// by itself). A **waiting** chain has nothing to book, and every copy
    /// of its earlier tickets carries the old epoch: it is re-minted under
    /// the store's current epoch and keeps its place.
    pub async fn rejoin(
        &self,
        binding: &[u8],
        client_time: ClientTime,
        chain: &ChainFacts,
        decision: &JoinDecision,
    ) -> Result<Minted, Rejection> {
        let now = self.now_ms();
        let offset = self.verifier.check_join_clock(client_time, now)?;
        let store = self.verifier.store();
        let state_reset = Rejection::Replayed {
            reason: ReplayReason::StateReset,
            ticket_id: chain.ticket_id,
        };
        // The store that wrote the chain's records must still be the one
        // answering: else it would re-create them from the room's facts. A
        // store that does not compare epochs itself is compared here, as
        // the verifier compares a presented ticket; one that does (Redis)
        // compares in the advance, against the epoch it holds (this
        // instance may not know it yet).
        //
        // Only an admitted chain needs it. A waiting chain has nothing a
        // lost record could let through again (single use needs an
        // admitted ticket, and every copy of its old tickets carries the
        // old epoch, refused): it is re-minted under the store's current
        // epoch, so a failover or a store restart costs nobody in line
        // their place.
        let admitted = chain.admitted_from_ms.is_some();
        let epoch = if admitted {
            match chain.epoch {
                Some(e) if store.checks_epoch() || e == store.epoch() => e,
                _ => return Err(state_reset),
            }
        } else {
            store.epoch_of(&chain.ticket_id)
        };
        let admitting = !admitted && decision.admit;
        let request = AdvanceRequest {
            ticket_id: chain.ticket_id,
            sequence: chain.sequence,
            kind: if admitted || admitting {
                TicketKind::Admitted
            } else {
                TicketKind::Waiting
            },
            expires_at_ms: if admitting {
                now.saturating_add(self.admitted_ttl_ms)
            } else {
                chain.expires_at_ms
            },
            // As in `renew`: the successor's deadline bounds the record's
            // retention (merge of the replay and room trait changes).
            live_until_ms: now.saturating_add(duration_to_ms(decision.live_for)),
            now_ms: now,
            grace_ms: self.verifier.policy().renewal_grace_ms(),
            // No ticket is presented: the epoch its latest ticket was
            // minted under stands in for it, so a store with an epoch per
            // shard refuses the rejoin across a fence as it refuses that
            // ticket's heartbeat.
            epoch,
        };
        let (advanced, epoch) = match self.advance(&request).await {
            // A waiting chain on a shard fenced since this instance last
            // heard of it: the refusal taught it the new epoch; once more
            // under that.
            Err(Rejection::Replayed {
                reason: ReplayReason::StateReset,
                ..
            }) if !admitted && store.epoch_of(&chain.ticket_id) != request.epoch => {
                let again = AdvanceRequest {
                    epoch: store.epoch_of(&chain.ticket_id),
                    ..request
                };
                (self.advance(&again).await, again.epoch)
            }
            other => (other, epoch),
        };
        let (sequence, issued_at) = advanced?;
        let keys = self.verifier.keys();
        let key_id = keys.signing_key_id();
        let queue = self.verifier.policy().queue_id();
        let bound = keys
            .bind(key_id, queue, binding)
            .expect("the signing key is in the ring");
        let prev = Claims {
            kind: if admitted {
                TicketKind::Admitted
            } else {
                TicketKind::Waiting
            },
            key_id,
            queue,
            ticket_id: chain.ticket_id,
            epoch,
            sequence: chain.sequence,
            position: 0,
            joined_at_ms: chain.joined_at_ms,
            issued_at_ms: issued_at,
            live_until_ms: issued_at,
            admitted_from_ms: chain.admitted_from_ms.unwrap_or(issued_at),
            expires_at_ms: chain.expires_at_ms,
            clock_offset_ms: None,
            binding: bound,
        };
        let claims = self.next_claims(prev, sequence, issued_at, offset, bound, decision);
        Ok(self.sign(claims))
    }

    /// Advances a chain in the replay store: the sequence and issue time to
    /// sign, `replayed` if the chain moved on (reason `stale_sequence`) or
    /// the presented epoch is no longer the store's (reason `state_reset`:
    /// its records were lost or its shard fenced), `store_unavailable` if
    /// the store failed (always fail closed: a chain must never fork).
    async fn advance(&self, request: &AdvanceRequest) -> Result<(u32, i64), Rejection> {
        let store = self.verifier.store();
        let reason = match store.advance(request).await {
            Ok(Advance::Next {
                sequence,
                issued_at_ms,
            })
            | Ok(Advance::Retry {
                sequence,
                issued_at_ms,
            }) => return Ok((sequence, issued_at_ms)),
            Ok(Advance::Reset) => ReplayReason::StateReset,
            // A store that compares the presented epoch itself answered
            // `Reset` if it refused it: this chain moved on. Its word is
            // taken over this instance's view of the shard's epoch, which
            // lags a fence another instance learnt of (a rejoin of a chain
            // minted after the fence that lost a race with its renewal
            // would be labelled `state_reset`, and the room would end it).
            Ok(Advance::Stale) if store.checks_epoch() => ReplayReason::StaleSequence,
            // A store that does not may say `Stale` for a chain whose
            // records it lost: its epoch for the chain is no longer the
            // request's (it learnt the new one from this answer, or knew it).
            Ok(Advance::Stale) if store.epoch_of(&request.ticket_id) != request.epoch => {
                ReplayReason::StateReset
            }
            Ok(Advance::Stale) => ReplayReason::StaleSequence,
            Err(_) => return Err(self.verifier.policy().store_unavailable()),
        };
        Err(Rejection::Replayed {
            reason,
            ticket_id: request.ticket_id,
        })
    }

    /// Checks a ticket presented to a heartbeat: every verifier rule except
    /// that waiting tickets pass. The room reads the result's claims
    /// (position, kind) to decide the [`RenewDecision`].
    pub fn check(&self, presented: &Presented<'_>) -> Result<Verified, Rejection> {
        self.verifier.check_at(presented, self.now_ms(), false)
    }

    /// [`check`](Self::check), also handing back the authenticated client
    /// clock offset (see `Verifier::check_at_sampled`).
    pub(crate) fn check_sampled(
        &self,
        presented: &Presented<'_>,
        sample: &mut Option<ClockSample>,
    ) -> Result<Verified, Rejection> {
        self.verifier
            .check_at_sampled(presented, self.now_ms(), false, sample)
    }

    /// Advances the chain of `current` (from [`check`](Self::check)) and
    /// signs its next ticket. `binding` is the same material the check saw.
    /// When the check found nothing and the ticket's key still signs, the
    /// successor keeps the binding the check verified (it is the keyed hash
    /// of that material), so no HMAC is spent recomputing it.
    ///
    /// A ticket renewed a moment ago whose successor is unused gets that
    /// successor again (same sequence and issue time); an older one is
    /// `replayed`. A store failure is `store_unavailable`: the issuer always
    /// fails closed, since a chain must never fork.
    pub async fn renew(
        &self,
        current: &Verified,
        binding: &[u8],
        decision: &RenewDecision,
    ) -> Result<Minted, Rejection> {
        let c = &current.claims;
        let admitting = c.kind == TicketKind::Waiting && decision.admit;
        let request = AdvanceRequest {
            ticket_id: c.ticket_id,
            sequence: c.sequence,
            kind: if admitting || c.is_admitted() {
                TicketKind::Admitted
            } else {
                TicketKind::Waiting
            },
            expires_at_ms: if admitting {
                current.now_ms.saturating_add(self.admitted_ttl_ms)
            } else {
                c.expires_at_ms
            },
            // The successor's deadline is at most this (a retry re-issues
            // one with an earlier issue time): the record's retention.
            live_until_ms: current
                .now_ms
                .saturating_add(duration_to_ms(decision.live_for)),
            now_ms: current.now_ms,
            grace_ms: self.verifier.policy().renewal_grace_ms(),
            // On a Cluster the store compares it with the shard's: a
            // ticket minted before a fence never renews after it.
            epoch: c.epoch,
        };
        let (sequence, issued_at) = self.advance(&request).await?;
        let baseline = match (c.clock_offset_ms, current.client_offset_ms) {
            (Some(b), Some(m)) => Some(i64::from(b).max(m)),
            (None, m) => m,
            (b, None) => b.map(i64::from),
        };
        // When the check found nothing, it has just verified that
        // `c.binding` is the keyed hash of `binding` under `c.key_id`; if
        // that key still signs, re-binding would compute the same 16 bytes
        // again, so they are kept (one HMAC less per heartbeat). Otherwise
        // (a monitored finding, a rotated signing key) the successor is
        // bound afresh.
        let keys = self.verifier.keys();
        let key_id = keys.signing_key_id();
        let bound = if current.monitored.is_none() && c.key_id == key_id {
            c.binding
        } else {
            keys.bind(key_id, c.queue, binding)
                .expect("the signing key is in the ring")
        };
        let claims = self.next_claims(*c, sequence, issued_at, baseline, bound, decision);
        Ok(self.sign(claims))
    }

    fn next_claims(
        &self,
        prev: Claims,
        sequence: u32,
        issued_at: i64,
        baseline: Option<i64>,
        binding: Binding,
        decision: &JoinDecision,
    ) -> Claims {
        let key_id = self.verifier.keys().signing_key_id();
        let admitting = prev.kind == TicketKind::Waiting && decision.admit;
        let (kind, admitted_from_ms, expires_at_ms) = if prev.is_admitted() {
            (
                TicketKind::Admitted,
                prev.admitted_from_ms,
                prev.expires_at_ms,
            )
        } else if admitting {
            (
                TicketKind::Admitted,
                issued_at,
                issued_at.saturating_add(self.admitted_ttl_ms),
            )
        } else {
            (
                TicketKind::Waiting,
                issued_at.saturating_add(duration_to_ms(decision.estimated_wait)),
                prev.expires_at_ms,
            )
        };
        Claims {
            kind,
            key_id,
            // Bound under the signing key, which may have rotated.
            binding,
            // `prev.epoch`: the epoch the store just advanced the chain
            // under (checked by the verifier or, per shard, by the store),
            // not this instance's view of it, which may lag a fence that
            // another instance already learnt.
            sequence,
            position: decision.position,
            issued_at_ms: issued_at,
            live_until_ms: issued_at.saturating_add(duration_to_ms(decision.live_for)),
            admitted_from_ms,
            expires_at_ms,
            clock_offset_ms: baseline.map(|o| saturate_offset(o) as i32),
            ..prev
        }
    }

    fn sign(&self, claims: Claims) -> Minted {
        // The claim bytes are laid out once, for the MAC and the text.
        let keys = self.verifier.keys();
        debug_assert_eq!(claims.key_id, keys.signing_key_id());
        let input = mac_input(&claims);
        let tag = keys.sign_mac_input(claims.kind, &input);
        let claim_bytes = input[DOMAIN_LABEL.len()..]
            .try_into()
            .expect("the MAC input is the label then the claims");
        Minted {
            ticket: encode_signed(claim_bytes, &tag),
            claims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::rejection::RejectionCode;
    use crate::verify::Mode;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    const DECISION: JoinDecision = JoinDecision {
        position: 3,
        live_for: Duration::from_secs(30),
        estimated_wait: Duration::from_secs(60),
        admit: false,
    };

    fn presented<'a>(ticket: &'a str, binding: &'a [u8]) -> Presented<'a> {
        Presented {
            ticket: Some(ticket.as_bytes()),
            binding: Some(binding),
            client_time: ClientTime::Absent,
        }
    }

    /// A renewal binds the successor to the material the check verified;
    /// when the check only monitored a mismatch, to the material presented.
    #[test]
    fn renewal_binding_follows_the_verified_material() {
        let keys = Arc::new(KeyRing::new(1, &[7; 32]).unwrap());
        let store = Arc::new(MemoryReplayStore::new());
        let clock = ManualClock::new(1_700_000_000_000);
        let policy = Policy::new("q").mode_for(RejectionCode::BindingMismatch, Mode::Monitor);
        let issuer = Issuer::new(keys.clone(), policy, clock, store).unwrap();
        let queue = issuer.verifier().policy().queue_id();
        let first = issuer
            .join(b"alice", ClientTime::Absent, &DECISION)
            .unwrap();

        let checked = issuer.check(&presented(&first.ticket, b"alice")).unwrap();
        assert_eq!(checked.monitored, None);
        let next = block_on(issuer.renew(&checked, b"alice", &DECISION)).unwrap();
        assert_eq!(next.claims.binding, keys.bind(1, queue, b"alice").unwrap());
        assert_eq!(next.claims.binding, first.claims.binding);

        let checked = issuer.check(&presented(&next.ticket, b"bob")).unwrap();
        assert_eq!(checked.monitored, Some(Rejection::BindingMismatch));
        let third = block_on(issuer.renew(&checked, b"bob", &DECISION)).unwrap();
        assert_eq!(third.claims.binding, keys.bind(1, queue, b"bob").unwrap());
        assert_ne!(third.claims.binding, first.claims.binding);
    }

    /// An admitted chain's facts without an epoch (recorded by a build that
    /// did not keep it) or with another one are not trusted to re-mint the
    /// chain: refused like a changed epoch, nothing written (a lost
    /// consumption record would let it book again). A waiting chain has
    /// nothing to book: it goes on under the store's epoch, keeping its
    /// place.
    #[test]
    fn a_rejoin_needs_the_epoch_of_the_facts() {
        let keys = Arc::new(KeyRing::new(1, &[7; 32]).unwrap());
        let store = Arc::new(MemoryReplayStore::new());
        let clock = ManualClock::new(1_700_000_000_000);
        let issuer = Issuer::new(keys, Policy::new("q"), clock, store.clone()).unwrap();
        let first = issuer
            .join(b"alice", ClientTime::Absent, &DECISION)
            .unwrap();
        let facts = ChainFacts::of(&first.claims);
        assert_eq!(facts.epoch, Some(store.epoch()));
        let admitted = ChainFacts {
            admitted_from_ms: Some(first.claims.issued_at_ms),
            ..facts
        };
        for chain in [
            ChainFacts {
                epoch: None,
                ..admitted
            },
            ChainFacts {
                epoch: Some(store.epoch() ^ 1),
                ..admitted
            },
        ] {
            let refused = block_on(issuer.rejoin(b"alice", ClientTime::Absent, &chain, &DECISION));
            assert!(
                matches!(
                    refused,
                    Err(Rejection::Replayed {
                        reason: ReplayReason::StateReset,
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
        let waiting = ChainFacts {
            epoch: Some(store.epoch() ^ 1),
            ..facts
        };
        let next =
            block_on(issuer.rejoin(b"alice", ClientTime::Absent, &waiting, &DECISION)).unwrap();
        assert_eq!(next.claims.sequence, 1, "the refusals wrote nothing");
        assert_eq!(next.claims.epoch, store.epoch());
        assert_eq!(next.claims.ticket_id, first.claims.ticket_id);
    }

    /// After a key rotation the successor is bound under the new signing
    /// key, not copied from the old ticket.
    #[test]
    fn renewal_rebinds_under_a_rotated_key() {
        let old = Arc::new(KeyRing::new(1, &[7; 32]).unwrap());
        let rotated = Arc::new(
            KeyRing::builder()
                .verify_only_key(1, &[7; 32])
                .unwrap()
                .signing_key(2, &[8; 32])
                .unwrap()
                .build()
                .unwrap(),
        );
        let store = Arc::new(MemoryReplayStore::new());
        let clock = ManualClock::new(1_700_000_000_000);
        let before = Issuer::new(old, Policy::new("q"), clock.clone(), store.clone()).unwrap();
        let after = Issuer::new(rotated.clone(), Policy::new("q"), clock, store).unwrap();
        let queue = after.verifier().policy().queue_id();
        let first = before
            .join(b"alice", ClientTime::Absent, &DECISION)
            .unwrap();
        let checked = after.check(&presented(&first.ticket, b"alice")).unwrap();
        assert_eq!(checked.monitored, None);
        let next = block_on(after.renew(&checked, b"alice", &DECISION)).unwrap();
        assert_eq!(next.claims.key_id, 2);
        assert_eq!(
            next.claims.binding,
            rotated.bind(2, queue, b"alice").unwrap()
        );
        assert_ne!(next.claims.binding, first.claims.binding);
        after
            .check(&presented(&next.ticket, b"alice"))
            .expect("the successor verifies under the rotated ring");
    }
}
