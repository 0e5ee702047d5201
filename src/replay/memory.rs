use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Mutex;

use super::{Advance, AdvanceRequest, ChainState, ReplayCheck, ReplayStore, ReplayVerdict};
use crate::error::StoreError;
use crate::rejection::ReplayReason;
use crate::ticket::{Binding, ScopeId, TicketId};

const SHARDS: usize = 64;

#[derive(Debug)]
struct Record {
    chain: Option<ChainState>,
    keep_until_ms: i64,
    consumed: Vec<(ScopeId, Binding)>,
}

/// The in-process replay store: sharded maps behind mutexes, records kept
/// until the ticket's expiry plus a tolerance.
///
/// Its state dies with the process: a new store draws a new random
/// [epoch](ReplayStore::epoch), so tickets minted before a restart are
/// refused rather than trusted.
#[derive(Debug)]
pub struct MemoryReplayStore {
    shards: Box<[Mutex<HashMap<TicketId, Record>>]>,
    epoch: u32,
    tolerance_ms: i64,
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryReplayStore {
    /// An empty store with a fresh random epoch and a 60 s retention
    /// tolerance past each ticket's expiry.
    pub fn new() -> Self {
        let mut epoch = [0u8; 4];
        getrandom::getrandom(&mut epoch).expect("the operating system's random source failed");
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: u32::from_be_bytes(epoch),
            tolerance_ms: 60_000,
        }
    }

    /// How many records are held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every record whose retention ended before `now_ms`.
    pub fn purge(&self, now_ms: i64) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, r| r.keep_until_ms >= now_ms);
        }
    }

    fn with_record<T>(
        &self,
        id: &TicketId,
        expires_at_ms: i64,
        now_ms: i64,
        f: impl FnOnce(&mut Record) -> T,
    ) -> T {
        let shard = &self.shards[usize::from(id.0[0]) % SHARDS];
        let mut map = lock(shard);
        let keep_until_ms = expires_at_ms.saturating_add(self.tolerance_ms);
        let record = map.entry(*id).or_insert_with(|| Record {
            chain: None,
            keep_until_ms,
            consumed: Vec::new(),
        });
        if record.keep_until_ms < now_ms {
            // Past its retention: whatever it said no longer matters.
            record.chain = None;
            record.consumed.clear();
        }
        record.keep_until_ms = record.keep_until_ms.max(keep_until_ms);
        f(record)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a shard lock leaves a consistent map (every
    // update is a single assignment), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReplayStore for MemoryReplayStore {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;

    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        let verdict = self.with_record(&c.ticket_id, c.expires_at_ms, c.now_ms, |r| {
            let mut chain = r.chain;
            if !ChainState::present(&mut chain, c.sequence, c.now_ms, c.grace_ms) {
                return ReplayVerdict::Replayed(ReplayReason::StaleSequence);
            }
            if c.consume {
                if let Some((_, by)) = r.consumed.iter().find(|(s, _)| *s == c.scope) {
                    return ReplayVerdict::Replayed(if *by == c.binding {
                        ReplayReason::ConsumedBySameClient
                    } else {
                        ReplayReason::ConsumedByOtherClient
                    });
                }
                r.consumed.push((c.scope, c.binding));
            }
            r.chain = chain;
            ReplayVerdict::Fresh
        });
        ready(Ok(verdict))
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        let advance = self.with_record(&a.ticket_id, a.expires_at_ms, a.now_ms, |r| {
            ChainState::advance(&mut r.chain, a.sequence, a.now_ms, a.grace_ms)
        });
        ready(Ok(advance))
    }
}
