use std::fmt;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::table::{hi32, mix, Slot, Table, Times, KEEP_MASK};
use super::{
    retention_ms, Advance, AdvanceRequest, ChainState, ReplayCheck, ReplayStore, ReplayVerdict,
    SettleHold, Settlement,
};
use crate::clock::duration_to_ms;
use crate::error::{ConfigError, StoreError};
use crate::rejection::ReplayReason;
use crate::ticket::{TicketId, TicketKind};

/// Number of shards (a power of two): locks are per shard.
const SHARDS: usize = 64;

/// Wheel entries drained per store call, so expiry keeps pace with inserts
/// without a long pause under a shard lock.
const DRAIN_PER_CALL: usize = 16;

/// The retention code's free top bit: the record counts against the
/// admitted capacity.
const ADMITTED: u32 = 1 << 31;
/// In a chain slot's `issued` word: the highest sequence has been presented.
const SEEN: u64 = 1 << 48;

/// One chain's record: 32 bytes.
#[derive(Clone, Copy)]
#[repr(C)]
struct ChainSlot {
    id: [u8; 16],
    highest: u32,
    /// Retention code | [`ADMITTED`].
    keep: u32,
    /// Issue time of `highest` (48-bit ms code) | [`SEEN`].
    issued: u64,
}

/// In a use slot's `hold` word: the hold is live (not yet committed).
const HELD: u64 = 1 << 63;

/// One hold on, or consumption of, a chain by a single-use scope: 40
/// bytes. No binding is kept: whether a later request is the same client
/// is decided by that request's own binding check (see
/// [`ReplayCheck::same_client`]).
#[derive(Clone, Copy)]
#[repr(C)]
struct UseSlot {
    id: [u8; 16],
    scope: [u8; 8],
    /// Retention code | [`ADMITTED`].
    keep: u32,
    /// The low 32 bits of the hold's token (only a release compares it).
    token: u32,
    /// [`HELD`] | the hold's end (48-bit ms code), or 0 once committed.
    hold: u64,
}

impl UseSlot {
    /// The end of a live hold, or `None` once committed.
    fn held_until(&self, times: Times) -> Option<i64> {
        (self.hold & HELD != 0).then(|| times.issued_ms(self.hold))
    }
}

fn id_hash(id: &[u8; 16]) -> u64 {
    let (a, b) = id.split_at(8);
    mix(
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    )
}

fn use_hash(id: &[u8; 16], scope: &[u8; 8]) -> u64 {
    mix(id_hash(id), u64::from_le_bytes(*scope))
}

impl Slot for ChainSlot {
    const EMPTY: Self = Self {
        id: [0; 16],
        highest: 0,
        keep: 0,
        issued: 0,
    };
    fn hash(&self) -> u64 {
        id_hash(&self.id)
    }
    fn keep_code(&self) -> u32 {
        self.keep
    }
}

impl Slot for UseSlot {
    const EMPTY: Self = Self {
        id: [0; 16],
        scope: [0; 8],
        keep: 0,
        token: 0,
        hold: 0,
    };
    fn hash(&self) -> u64 {
        use_hash(&self.id, &self.scope)
    }
    fn keep_code(&self) -> u32 {
        self.keep
    }
}

impl ChainSlot {
    fn state(&self, times: Times) -> ChainState {
        ChainState {
            highest: self.highest,
            issued_at_ms: times.issued_ms(self.issued),
            seen: self.issued & SEEN != 0,
        }
    }
}

fn kind_index(admitted: bool) -> usize {
    usize::from(admitted)
}

fn keep_kind(keep: u32) -> usize {
    kind_index(keep & ADMITTED != 0)
}

struct Shard {
    chains: Table<ChainSlot>,
    uses: Table<UseSlot>,
}

/// The in-process replay store, the default: bounded, sharded, expiring.
///
/// - **Records.** One 32-byte record per chain (ticket id, highest sequence
///   issued, its issue time, whether it was presented, retention end), in a
///   flat open-addressing table per shard, plus one 40-byte record per
///   single-use hold or consumption (scope, ticket id, hold token and end). Times are offsets from the first time the store
///   sees. Resident memory measured by `cargo bench --bench store`: about
///   47 bytes per live chain record at 1 million records and 43 at 10
///   million (tables 80–90 % full, plus 4 bytes of expiry wheel per
///   record).
/// - **Expiry.** A chain's record is kept until the latest liveness
///   deadline issued in the chain (bounded by its expiry) plus the
///   [tolerance](MemoryReplayStoreBuilder::tolerance), rounded up to the
///   second: after that no ticket of the chain can pass, so an abandoned
///   waiting chain stops holding capacity one liveness window after its
///   last heartbeat. A hold or consumption is kept until the ticket's
///   expiry plus the tolerance. Expired records are removed in O(expired) work: each call
///   drains a few entries of its shard's expiry wheel (8-second buckets),
///   and a lookup that meets an expired record drops it. No call scans a
///   table; at a cap, every shard's due buckets are drained (one lock at a
///   time) before the store refuses, so capacity comes back at most one
///   bucket (8 s) after records expire. [`purge`](Self::purge) removes
///   every expired record at once.
/// - **Capacity.** Waiting and admitted records have separate hard caps,
///   so a flood of joins can never lock admitted people out of booking.
///   A chain counts as admitted once a ticket of it was admitted;
///   consumptions count against the kind of the ticket that consumed. At a
///   cap the store refuses with [`StoreError::Capacity`] (the verifier's
///   `store_unavailable`, failing closed): it never evicts a record that
///   has not expired, since that would let a replay through. Expired records
///   count until drained.
/// - **Restarts.** State dies with the process. A new store draws a new
///   random [epoch](ReplayStore::epoch); tickets carry the epoch they were
///   minted under, and the verifier refuses any other epoch (`replayed`,
///   reason `StateReset`). Such a ticket would otherwise matter until its
///   liveness deadline (its next heartbeat, at most one liveness window
///   away); a client whose ticket is refused rejoins.
///
/// Every call takes one shard lock and answers with a ready future.
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    epoch: u32,
    tolerance_ms: i64,
    base_ms: AtomicI64,
    /// The latest `now` of any call: records whose retention ended before
    /// it may have been dropped (see [`MemoryReplayStore::may_be_dropped`]).
    latest_ms: AtomicI64,
    capacity: [usize; 2],
    live: [AtomicUsize; 2],
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("epoch", &self.epoch)
            .field("tolerance_ms", &self.tolerance_ms)
            .field("waiting", &self.len_of(TicketKind::Waiting))
            .field("admitted", &self.len_of(TicketKind::Admitted))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings of a [`MemoryReplayStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryReplayStoreBuilder {
    waiting_capacity: usize,
    admitted_capacity: usize,
    tolerance: Duration,
}

impl Default for MemoryReplayStoreBuilder {
    fn default() -> Self {
        Self {
            waiting_capacity: 8_000_000,
            admitted_capacity: 1_000_000,
            tolerance: Duration::from_secs(60),
        }
    }
}

impl MemoryReplayStoreBuilder {
    /// The most waiting-chain records held at once (default 8 million,
    /// about 370 MB at full use).
    pub fn waiting_capacity(mut self, records: usize) -> Self {
        self.waiting_capacity = records;
        self
    }

    /// The most admitted-chain and consumption records held at once
    /// (default 1 million).
    pub fn admitted_capacity(mut self, records: usize) -> Self {
        self.admitted_capacity = records;
        self
    }

    /// How long a record outlives its ticket's expiry (default 60 s). It
    /// covers clock differences between the instances that share tickets.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Builds the store with a fresh random epoch.
    pub fn build(self) -> Result<MemoryReplayStore, ConfigError> {
        if self.waiting_capacity == 0 || self.admitted_capacity == 0 {
            return Err(ConfigError::Invalid {
                setting: "capacity",
                reason: "a capacity of zero refuses every ticket",
            });
        }
        let tolerance_ms = duration_to_ms(self.tolerance);
        if tolerance_ms > 86_400_000 {
            return Err(ConfigError::Invalid {
                setting: "tolerance",
                reason: "more than a day of tolerance keeps records needlessly",
            });
        }
        let mut epoch = [0u8; 4];
        getrandom::getrandom(&mut epoch).expect("the operating system's random source failed");
        Ok(MemoryReplayStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        chains: Table::new(),
                        uses: Table::new(),
                    })
                })
                .collect(),
            epoch: u32::from_be_bytes(epoch),
            tolerance_ms,
            base_ms: AtomicI64::new(i64::MIN),
            latest_ms: AtomicI64::new(i64::MIN),
            capacity: [self.waiting_capacity, self.admitted_capacity],
            live: [AtomicUsize::new(0), AtomicUsize::new(0)],
        })
    }
}

impl MemoryReplayStore {
    /// An empty store with default settings (see
    /// [`MemoryReplayStoreBuilder`]) and a fresh random epoch.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// Settings for a store.
    pub fn builder() -> MemoryReplayStoreBuilder {
        MemoryReplayStoreBuilder::default()
    }

    /// How many records are held (chains and consumptions, expired ones
    /// included until drained).
    pub fn len(&self) -> usize {
        self.len_of(TicketKind::Waiting) + self.len_of(TicketKind::Admitted)
    }

    /// How many records count against the capacity of `kind`.
    pub fn len_of(&self, kind: TicketKind) -> usize {
        self.live[kind_index(kind == TicketKind::Admitted)].load(Ordering::Relaxed)
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every record whose retention ended before `now_ms`, in
    /// O(expired) work per shard (one shard locked at a time).
    pub fn purge(&self, now_ms: i64) {
        self.latest_ms.fetch_max(now_ms, Ordering::AcqRel);
        let times = self.times(now_ms);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let Shard { chains, uses } = &mut *shard;
            chains.purge(times, now_ms, |s| self.release(s.keep));
            uses.purge(times, now_ms, |s| self.release(s.keep));
        }
    }

    /// Heap bytes held by the tables and expiry wheels (allocated capacity,
    /// not resident pages): a cross-check for the benchmark's RSS figure.
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.chains.heap_bytes() + s.uses.heap_bytes()
            })
            .sum()
    }

    fn times(&self, now_ms: i64) -> Times {
        let base = self.base_ms.load(Ordering::Relaxed);
        if base != i64::MIN {
            return Times { base_ms: base };
        }
        // A day before the first time seen, so that slightly earlier clocks
        // (another instance's) still map above the base.
        let proposed = now_ms.saturating_sub(86_400_000).max(i64::MIN + 1);
        let base = match self.base_ms.compare_exchange(
            i64::MIN,
            proposed,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => proposed,
            Err(current) => current,
        };
        Times { base_ms: base }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[hash as usize & (SHARDS - 1)])
    }

    fn release(&self, keep: u32) {
        self.live[keep_kind(keep)].fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes `n` records of capacity of one kind, or fails closed.
    fn reserve(&self, admitted: bool, n: usize) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let i = kind_index(admitted);
        let before = self.live[i].fetch_add(n, Ordering::Relaxed);
        if before + n > self.capacity[i] {
            self.live[i].fetch_sub(n, Ordering::Relaxed);
            return Err(StoreError::Capacity);
        }
        Ok(())
    }

    /// Reserves what a write needs, all or nothing.
    fn reserve_all(&self, needs: &[(bool, usize)]) -> Result<(), StoreError> {
        for (i, &(admitted, n)) in needs.iter().enumerate() {
            if let Err(e) = self.reserve(admitted, n) {
                for &(admitted, n) in &needs[..i] {
                    self.live[kind_index(admitted)].fetch_sub(n, Ordering::Relaxed);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs `op`; at a cap, drains every shard's due expiry buckets (one
    /// lock at a time, none held by `op`) and runs it once more. Only whole
    /// due buckets: O(expired), so a flood of refused requests at a cap
    /// cannot make each one walk the records that are about to expire.
    fn at_cap_retry<T>(
        &self,
        now_ms: i64,
        op: impl Fn() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match op() {
            Err(StoreError::Capacity) => {
                let times = self.times(now_ms);
                for shard in self.shards.iter() {
                    let mut shard = lock(shard);
                    let Shard { chains, uses } = &mut *shard;
                    chains.drain(times, now_ms, usize::MAX, |s| self.release(s.keep));
                    uses.drain(times, now_ms, usize::MAX, |s| self.release(s.keep));
                }
                op()
            }
            other => other,
        }
    }

    /// Drains some due expiry work and finds the chain's live record,
    /// dropping it if expired.
    fn chain(&self, shard: &mut Shard, id: &TicketId, times: Times, now_ms: i64) -> Option<usize> {
        let Shard { chains, uses } = shard;
        chains.drain(times, now_ms, DRAIN_PER_CALL, |s| self.release(s.keep));
        uses.drain(times, now_ms, DRAIN_PER_CALL, |s| self.release(s.keep));
        let pos = chains.find(hi32(id_hash(&id.0)), |s| s.id == id.0)?;
        if times.expired(chains.get(pos).keep, now_ms) {
            let gone = chains.remove(pos);
            self.release(gone.keep);
            return None;
        }
        Some(pos)
    }

    /// Writes a chain's new state, creating or updating its record.
    #[allow(clippy::too_many_arguments)]
    fn write_chain(
        shard: &mut Shard,
        pos: Option<usize>,
        id: &TicketId,
        state: ChainState,
        admitted: bool,
        keep: u32,
        times: Times,
    ) {
        let mut slot = ChainSlot {
            id: id.0,
            highest: state.highest,
            keep: keep | if admitted { ADMITTED } else { 0 },
            issued: times.issued_code(state.issued_at_ms) | if state.seen { SEEN } else { 0 },
        };
        match pos {
            Some(pos) => {
                // Retention only ever grows: an older, longer-lived ticket of
                // the chain may still be presented and must meet the record.
                let old = shard.chains.get(pos).keep & KEEP_MASK;
                slot.keep = (slot.keep & !KEEP_MASK) | old.max(keep & KEEP_MASK);
                shard.chains.update(pos, slot);
            }
            None => shard.chains.insert(slot),
        }
    }

    /// Whether the record of a ticket retained until `retention_ms` may
    /// already have been dropped by a call whose clock read later than
    /// `now_ms` (a purge or a sweep driven by a clock that was ahead, or a
    /// caller's clock stepped back). Such a ticket cannot be proven fresh:
    /// without this, a consumed ticket would find no record and be admitted
    /// again. A caller within the tolerance of the latest clock is never
    /// affected, since its tickets are unexpired on its own clock.
    fn may_be_dropped(&self, retention_ms: i64, now_ms: i64) -> bool {
        let latest = self
            .latest_ms
            .fetch_max(now_ms, Ordering::AcqRel)
            .max(now_ms);
        retention_ms < latest
    }

    fn check_sync(&self, c: &ReplayCheck) -> Result<ReplayVerdict, StoreError> {
        let chain_keep_ms = c.chain_retention_ms(self.tolerance_ms);
        if self.may_be_dropped(chain_keep_ms, c.now_ms) {
            return Ok(ReplayVerdict::Replayed(ReplayReason::StateReset));
        }
        let times = self.times(c.now_ms);
        let hash = id_hash(&c.ticket_id.0);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let pos = self.chain(shard, &c.ticket_id, times, c.now_ms);
        let was_admitted = pos.is_some_and(|p| shard.chains.get(p).keep & ADMITTED != 0);
        let mut state = pos.map(|p| shard.chains.get(p).state(times));
        if !ChainState::present(&mut state, c.sequence, c.now_ms, c.grace_ms) {
            return Ok(ReplayVerdict::Replayed(ReplayReason::StaleSequence));
        }
        let state = state.expect("present() leaves a state when it accepts");
        let admitted = was_admitted || c.kind == TicketKind::Admitted;
        // A hold expired unsettled, retaken by the same client in place.
        let mut retake = None;
        if c.hold.is_some() {
            if let Some(p) = self.live_use(shard, c.ticket_id, c.scope.0, times, c.now_ms) {
                let u = *shard.uses.get(p);
                if !c.same_client {
                    return Ok(ReplayVerdict::Replayed(ReplayReason::ConsumedByOtherClient));
                }
                match u.held_until(times) {
                    None => return Ok(ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient)),
                    Some(until_ms) if c.now_ms < until_ms => {
                        return Ok(ReplayVerdict::InProgress { until_ms });
                    }
                    Some(_) => retake = Some(p),
                }
            }
        }
        let new_use = c.hold.is_some() && retake.is_none();
        let needs = [
            (true, usize::from(admitted && !was_admitted)),
            (false, usize::from(pos.is_none() && !admitted)),
            (c.kind == TicketKind::Admitted, usize::from(new_use)),
        ];
        self.reserve_all(&needs)?;
        if admitted && !was_admitted && pos.is_some() {
            // A waiting chain became admitted: it moves between capacities.
            self.live[kind_index(false)].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(hold) = c.hold {
            let keep = times.keep_code(c.expires_at_ms.saturating_add(self.tolerance_ms));
            let slot = UseSlot {
                id: c.ticket_id.0,
                scope: c.scope.0,
                keep: keep
                    | if c.kind == TicketKind::Admitted {
                        ADMITTED
                    } else {
                        0
                    },
                token: hold.token as u32,
                hold: HELD | times.issued_code(hold.until_ms),
            };
            match retake {
                Some(p) => {
                    let old = *shard.uses.get(p);
                    // Same record, same capacity and retention: only the
                    // hold changes.
                    shard.uses.update(
                        p,
                        UseSlot {
                            keep: old.keep,
                            ..slot
                        },
                    );
                }
                None => shard.uses.insert(slot),
            }
        }
        // A lookup may have moved records only in `uses`; `pos` is still
        // valid in `chains`.
        let keep = times.keep_code(chain_keep_ms);
        Self::write_chain(shard, pos, &c.ticket_id, state, admitted, keep, times);
        Ok(ReplayVerdict::Fresh)
    }

    /// The live use record of `(id, scope)`, dropping it if expired.
    fn live_use(
        &self,
        shard: &mut Shard,
        id: TicketId,
        scope: [u8; 8],
        times: Times,
        now_ms: i64,
    ) -> Option<usize> {
        let hi = hi32(use_hash(&id.0, &scope));
        let p = shard.uses.find(hi, |u| u.id == id.0 && u.scope == scope)?;
        let u = *shard.uses.get(p);
        if times.expired(u.keep, now_ms) {
            shard.uses.remove(p);
            self.release(u.keep);
            return None;
        }
        Some(p)
    }

    fn settle_sync(&self, s: &SettleHold) -> Result<(), StoreError> {
        self.latest_ms.fetch_max(s.now_ms, Ordering::AcqRel);
        let times = self.times(s.now_ms);
        let mut guard = self.shard(id_hash(&s.ticket_id.0));
        let shard = &mut *guard;
        let found = self.live_use(shard, s.ticket_id, s.scope.0, times, s.now_ms);
        match (s.settlement, found) {
            (Settlement::Commit, Some(p)) => {
                let u = *shard.uses.get(p);
                shard.uses.update(p, UseSlot { hold: 0, ..u });
            }
            (Settlement::Commit, None) => {
                // The hold's record is gone (expired with its ticket, or
                // released by a race): a handler still succeeded, so the
                // chain is consumed. Never refused for capacity: the
                // booking is made.
                let admitted = s.kind == TicketKind::Admitted;
                self.live[kind_index(admitted)].fetch_add(1, Ordering::Relaxed);
                let keep = times.keep_code(s.expires_at_ms.saturating_add(self.tolerance_ms));
                shard.uses.insert(UseSlot {
                    id: s.ticket_id.0,
                    scope: s.scope.0,
                    keep: keep | if admitted { ADMITTED } else { 0 },
                    token: 0,
                    hold: 0,
                });
            }
            (Settlement::Release, Some(p)) => {
                let u = *shard.uses.get(p);
                if u.hold & HELD != 0 && u.token == s.hold.token as u32 {
                    shard.uses.remove(p);
                    self.release(u.keep);
                }
            }
            (Settlement::Release, None) => {}
        }
        Ok(())
    }

    fn advance_sync(&self, a: &AdvanceRequest) -> Result<Advance, StoreError> {
        let keep_ms = retention_ms(a.live_until_ms, a.expires_at_ms, self.tolerance_ms);
        if self.may_be_dropped(keep_ms, a.now_ms) {
            return Ok(Advance::Stale);
        }
        let times = self.times(a.now_ms);
        let hash = id_hash(&a.ticket_id.0);
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let pos = self.chain(shard, &a.ticket_id, times, a.now_ms);
        let was_admitted = pos.is_some_and(|p| shard.chains.get(p).keep & ADMITTED != 0);
        let mut state = pos.map(|p| shard.chains.get(p).state(times));
        let advance = ChainState::advance(&mut state, a.sequence, a.now_ms, a.grace_ms);
        let Advance::Next { .. } = advance else {
            // Retry and Stale change nothing.
            return Ok(advance);
        };
        let state = state.expect("advance() leaves a state when it issues");
        let admitted = was_admitted || a.kind == TicketKind::Admitted;
        let needs = [
            (true, usize::from(admitted && !was_admitted)),
            (false, usize::from(pos.is_none() && !admitted)),
        ];
        self.reserve_all(&needs)?;
        if admitted && !was_admitted && pos.is_some() {
            self.live[kind_index(false)].fetch_sub(1, Ordering::Relaxed);
        }
        let keep = times.keep_code(keep_ms);
        Self::write_chain(shard, pos, &a.ticket_id, state, admitted, keep, times);
        Ok(advance)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation under a shard lock completes before anything that could
    // panic, so a poisoned lock still guards a consistent shard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReplayStore for MemoryReplayStore {
    type CheckFuture = Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = Ready<Result<Advance, StoreError>>;
    type SettleFuture = Ready<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        ready(self.at_cap_retry(c.now_ms, || self.check_sync(c)))
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        ready(self.at_cap_retry(a.now_ms, || self.advance_sync(a)))
    }

    fn settle(&self, s: &SettleHold) -> Self::SettleFuture {
        // Done before this returns: a dropped future cannot undo it.
        ready(self.settle_sync(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Hold;
    use crate::ticket::ScopeId;

    fn check(id: u8, seq: u32, now: i64, consume: bool) -> ReplayCheck {
        ReplayCheck {
            scope: ScopeId::from_name("s"),
            ticket_id: TicketId([id; 16]),
            sequence: seq,
            kind: TicketKind::Admitted,
            same_client: true,
            live_until_ms: now + 10_000,
            expires_at_ms: now + 10_000,
            now_ms: now,
            grace_ms: 5_000,
            hold: consume.then(|| Hold::new(now + 5_000)),
            epoch: 0,
        }
    }

    #[test]
    fn slot_sizes() {
        assert_eq!(std::mem::size_of::<ChainSlot>(), 32);
        assert_eq!(std::mem::size_of::<UseSlot>(), 40);
    }

    #[test]
    fn rejected_checks_do_not_grow_state() {
        let store = MemoryReplayStore::new();
        let now = 1_700_000_000_000;
        assert_eq!(
            store.check_sync(&check(1, 5, now, true)),
            Ok(ReplayVerdict::Fresh)
        );
        assert_eq!(store.len(), 2);
        for _ in 0..10 {
            assert!(matches!(
                store.check_sync(&check(1, 5, now, true)),
                Ok(ReplayVerdict::InProgress { .. })
            ));
            assert!(matches!(
                store.check_sync(&check(1, 2, now, false)),
                Ok(ReplayVerdict::Replayed(_))
            ));
        }
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn expiry_releases_capacity_without_purge() {
        let store = MemoryReplayStore::builder()
            .admitted_capacity(3)
            .tolerance(Duration::ZERO)
            .build()
            .unwrap();
        let now = 1_700_000_000_000;
        for id in 1..=3 {
            assert_eq!(
                store.check_sync(&check(id, 0, now, false)),
                Ok(ReplayVerdict::Fresh)
            );
        }
        assert_eq!(
            store.check_sync(&check(4, 0, now, false)),
            Err(StoreError::Capacity)
        );
        // Past the records' retention: at the cap, the store drains what
        // expired (in any shard) before refusing.
        let later = now + 60_000;
        for id in 4..=6 {
            let c = check(id, 0, later, false);
            let ok = store.at_cap_retry(later, || store.check_sync(&c));
            assert_eq!(ok, Ok(ReplayVerdict::Fresh));
        }
        let c = check(7, 0, later, false);
        let ok = store.at_cap_retry(later, || store.check_sync(&c));
        assert_eq!(ok, Err(StoreError::Capacity));
        store.purge(later);
        assert_eq!(store.len(), 3);
    }
}
