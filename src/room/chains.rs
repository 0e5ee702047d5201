//! The in-memory state's chains: one flat record per person in a slab,
//! found by room binding through a small open-addressing index.
//!
//! Memory per person is what a queue of millions is made of, so nothing
//! here is boxed: a chain is one 72-byte slot of a `Vec` (reused through a
//! free list), and the index holds 8 bytes per slot of its table (a 32-bit
//! fingerprint of the binding and the chain's slot), at most 3/4 full. A
//! `HashMap<Binding, Chain>` costs twice as much at a million people: its
//! table doubles to 2²¹ entries of 96 bytes there.

use std::collections::HashMap;

use super::state::ChainFacts;
use crate::ticket::{Binding, TicketId};

/// Where a chain stands in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Joined before the opening; no place yet.
    Pre,
    Waiting,
    Admitted,
}

/// The largest position (or pre-queue index) a chain can hold: the top
/// byte of its 64-bit place word holds the status and flags. 2⁵⁶ places
/// are 2,000 years of a million joins a second.
pub(super) const MAX_PLACE: u64 = (1 << 56) - 1;

const STATUS_MASK: u8 = 0b11;
const PRE: u8 = 0;
const WAITING: u8 = 1;
const ADMITTED: u8 = 2;
/// A ticket's facts are recorded.
const HAS_FACTS: u8 = 1 << 2;
/// The recorded facts carry an epoch.
const HAS_EPOCH: u8 = 1 << 3;
/// The recorded facts carry an admission time.
const HAS_ADMITTED: u8 = 1 << 4;
/// The facts did not fit the record's 32-bit offsets: they are kept whole
/// in [`Chains`]' spill map.
const SPILLED: u8 = 1 << 5;

/// One person's chain: 72 bytes, nothing boxed. The facts of its latest
/// ticket are kept flat: the expiry and the admission time as 32-bit
/// millisecond offsets from the join time (49 days), which every ticket
/// the issuer mints fits; facts that do not fit are kept whole in the
/// chains' spill map (flag `SPILLED`), so any facts round-trip exactly.
#[derive(Clone, Copy)]
pub(super) struct Chain {
    pub(super) binding: Binding,
    ticket_id: TicketId,
    joined_at_ms: i64,
    pub(super) live_until_ms: i64,
    /// The low 56 bits: waiting or admitted, the position; in the
    /// pre-queue, the index in the queue's pre-queue list. The top byte:
    /// the status and flags.
    place: u64,
    sequence: u32,
    /// The epoch of the facts (meaningful with `HAS_EPOCH`).
    epoch: u32,
    /// `expires_at_ms - joined_at_ms`.
    expires_after_ms: u32,
    /// `admitted_from_ms - joined_at_ms` (meaningful with `HAS_ADMITTED`).
    admitted_after_ms: u32,
}

impl Chain {
    /// A chain whose first ticket is not recorded yet.
    pub(super) fn new(binding: Binding, status: Status, slot: u64, live_until_ms: i64) -> Self {
        let mut c = Self {
            binding,
            ticket_id: TicketId([0; 16]),
            joined_at_ms: 0,
            live_until_ms,
            place: 0,
            sequence: 0,
            epoch: 0,
            expires_after_ms: 0,
            admitted_after_ms: 0,
        };
        c.set_slot(slot);
        c.set_status(status);
        c
    }

    fn flags(&self) -> u8 {
        (self.place >> 56) as u8
    }

    fn set_flags(&mut self, flags: u8) {
        self.place = (self.place & MAX_PLACE) | (u64::from(flags) << 56);
    }

    /// Waiting or admitted: the position. In the pre-queue: the index in
    /// the queue's pre-queue list.
    pub(super) fn slot(&self) -> u64 {
        self.place & MAX_PLACE
    }

    /// Sets [`slot`](Self::slot); at most [`MAX_PLACE`].
    pub(super) fn set_slot(&mut self, slot: u64) {
        debug_assert!(slot <= MAX_PLACE, "places stop at MAX_PLACE");
        self.place = (self.place & !MAX_PLACE) | (slot & MAX_PLACE);
    }

    pub(super) fn status(&self) -> Status {
        match self.flags() & STATUS_MASK {
            PRE => Status::Pre,
            WAITING => Status::Waiting,
            _ => Status::Admitted,
        }
    }

    pub(super) fn set_status(&mut self, status: Status) {
        let code = match status {
            Status::Pre => PRE,
            Status::Waiting => WAITING,
            Status::Admitted => ADMITTED,
        };
        self.set_flags((self.flags() & !STATUS_MASK) | code);
    }

    /// Whether the facts are kept in the spill map.
    fn spilled(&self) -> bool {
        self.flags() & SPILLED != 0
    }

    /// Its ticket id, once a ticket is recorded.
    pub(super) fn ticket_id(&self) -> Option<TicketId> {
        (self.flags() & HAS_FACTS != 0).then_some(self.ticket_id)
    }

    /// The facts from the record itself (not for a spilled one).
    fn flat_facts(&self) -> Option<ChainFacts> {
        let flags = self.flags();
        (flags & HAS_FACTS != 0).then(|| ChainFacts {
            ticket_id: self.ticket_id,
            sequence: self.sequence,
            joined_at_ms: self.joined_at_ms,
            expires_at_ms: self.joined_at_ms + i64::from(self.expires_after_ms),
            admitted_from_ms: (flags & HAS_ADMITTED != 0)
                .then(|| self.joined_at_ms + i64::from(self.admitted_after_ms)),
            epoch: (flags & HAS_EPOCH != 0).then_some(self.epoch),
        })
    }

    /// Records `f` in the record; false (and the record unchanged but for
    /// the id, sequence, epoch and join time) when its times do not fit the
    /// 32-bit offsets, so that the caller keeps them whole.
    fn set_flat_facts(&mut self, f: &ChainFacts) -> bool {
        let after = |t: i64| {
            t.checked_sub(f.joined_at_ms)
                .and_then(|d| u32::try_from(d).ok())
        };
        self.ticket_id = f.ticket_id;
        self.sequence = f.sequence;
        self.joined_at_ms = f.joined_at_ms;
        self.epoch = f.epoch.unwrap_or(0);
        let mut flags = (self.flags() & STATUS_MASK) | HAS_FACTS;
        if f.epoch.is_some() {
            flags |= HAS_EPOCH;
        }
        let expires = after(f.expires_at_ms);
        let admitted = f.admitted_from_ms.map(after);
        let fits = match (expires, admitted) {
            (Some(e), None) => {
                self.expires_after_ms = e;
                true
            }
            (Some(e), Some(Some(a))) => {
                self.expires_after_ms = e;
                self.admitted_after_ms = a;
                flags |= HAS_ADMITTED;
                true
            }
            _ => {
                flags |= SPILLED;
                false
            }
        };
        self.set_flags(flags);
        fits
    }
}

/// An empty index entry.
const EMPTY: u64 = 0;
/// The smallest index table.
const MIN_TABLE: usize = 16;

/// The chains of one queue, by slot and by room binding. The slab keeps
/// the size of the largest crowd it held (freed slots are reused, not
/// returned); the index and slab are given back when the queue empties.
#[derive(Default)]
pub(super) struct Chains {
    slab: Vec<Chain>,
    /// Slab slots free for reuse (their chain was removed).
    free: Vec<u32>,
    /// Open addressing with linear probing, power-of-two size: each entry
    /// is the binding's 32-bit fingerprint (high half) and slot + 1 (low
    /// half, so 0 is empty). Deletion shifts the following run back, so
    /// there are no tombstones.
    table: Vec<u64>,
    len: usize,
    /// The whole facts of the chains (by slot) whose times do not fit
    /// their record's 32-bit offsets: none for tickets the issuer mints.
    spill: HashMap<u32, ChainFacts>,
}

/// The 64 bits of a binding the index hashes: bindings are HMAC outputs
/// (uniform, and nobody can choose them without the room key).
fn hash(b: &Binding) -> u64 {
    u64::from_le_bytes(b.0[..8].try_into().expect("16 bytes"))
}

impl Chains {
    /// How many chains are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    fn home(&self, h: u64) -> usize {
        // The low bits choose the bucket; the high ones are the fingerprint.
        (h as usize) & self.mask()
    }

    /// The table index of the binding's entry, if present.
    fn find(&self, b: &Binding) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let h = hash(b);
        let fingerprint = h >> 32;
        let mut i = self.home(h);
        loop {
            let e = self.table[i];
            if e == EMPTY {
                return None;
            }
            if e >> 32 == fingerprint {
                let slot = (e as u32 - 1) as usize;
                if self.slab[slot].binding == *b {
                    return Some(i);
                }
            }
            i = (i + 1) & self.mask();
        }
    }

    /// The slot of the binding's chain.
    pub(super) fn slot(&self, b: &Binding) -> Option<u32> {
        self.find(b).map(|i| self.table[i] as u32 - 1)
    }

    pub(super) fn get(&self, slot: u32) -> &Chain {
        &self.slab[slot as usize]
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Chain {
        &mut self.slab[slot as usize]
    }

    /// The facts of the latest ticket of the chain in `slot`, once one is
    /// recorded.
    pub(super) fn facts(&self, slot: u32) -> Option<ChainFacts> {
        let c = &self.slab[slot as usize];
        if c.spilled() {
            return self.spill.get(&slot).copied();
        }
        c.flat_facts()
    }

    /// Records the facts of the latest ticket of the chain in `slot`.
    pub(super) fn set_facts(&mut self, slot: u32, f: &ChainFacts) {
        if self.slab[slot as usize].set_flat_facts(f) {
            self.spill.remove(&slot);
        } else {
            self.spill.insert(slot, *f);
        }
    }

    /// Every chain with its slot (tests).
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Chain)> {
        let free: std::collections::HashSet<u32> = self.free.iter().copied().collect();
        self.slab
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c))
            .filter(move |(i, _)| !free.contains(i))
    }

    fn place_entry(&mut self, h: u64, slot: u32) {
        let mut i = self.home(h);
        while self.table[i] != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.table[i] = (h >> 32) << 32 | u64::from(slot + 1);
    }

    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(MIN_TABLE);
        let old = std::mem::replace(&mut self.table, vec![EMPTY; size]);
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            let slot = e as u32 - 1;
            let h = hash(&self.slab[slot as usize].binding);
            self.place_entry(h, slot);
        }
    }

    /// Adds a chain whose binding has none yet; returns its slot.
    pub(super) fn insert(&mut self, chain: Chain) -> u32 {
        debug_assert!(self.find(&chain.binding).is_none());
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        let h = hash(&chain.binding);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = chain;
                s
            }
            None => {
                self.slab.push(chain);
                u32::try_from(self.slab.len() - 1).expect("fewer than 4 billion chains")
            }
        };
        self.place_entry(h, slot);
        self.len += 1;
        slot
    }

    /// Removes the chain in `slot` (from the index too) and frees the slot.
    pub(super) fn remove(&mut self, slot: u32) -> Chain {
        let chain = self.slab[slot as usize];
        if chain.spilled() {
            self.spill.remove(&slot);
        }
        let b = chain.binding;
        let mut i = self.find(&b).expect("a held chain is indexed");
        // Backward-shift deletion: pull later entries of the run into the
        // gap when their home does not lie strictly between gap and them.
        loop {
            let mut j = i;
            loop {
                j = (j + 1) & self.mask();
                let e = self.table[j];
                if e == EMPTY {
                    self.table[i] = EMPTY;
                    self.len -= 1;
                    self.free.push(slot);
                    self.shrink_if_empty();
                    return chain;
                }
                let home = self.home(hash(&self.slab[(e as u32 - 1) as usize].binding));
                // Whether `home` is cyclically in (i, j]: then e stays.
                let stays = if i <= j {
                    i < home && home <= j
                } else {
                    i < home || home <= j
                };
                if !stays {
                    self.table[i] = e;
                    i = j;
                    break;
                }
            }
        }
    }

    /// Gives the memory back once a queue has emptied.
    fn shrink_if_empty(&mut self) {
        if self.len == 0 {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::schedule::SplitMix;
    use std::collections::HashMap;

    #[test]
    fn chains_are_72_bytes() {
        // 88 with three 64-bit times and three flag bytes; the status and
        // flags now ride in the place word's top byte and two of the times
        // are 32-bit offsets from the join time.
        assert_eq!(std::mem::size_of::<Chain>(), 72);
    }

    /// Inserts and removals in random order agree with a `HashMap`, with
    /// bindings chosen to collide in the table (same low bits) and in the
    /// fingerprint.
    #[test]
    fn index_agrees_with_a_hash_map() {
        let rng = SplitMix::new(11);
        let mut chains = Chains::default();
        let mut model: HashMap<Binding, u32> = HashMap::new();
        let who = |i: u64| {
            let mut b = [0u8; 16];
            // Few distinct low bytes: long probe runs and wrap-arounds.
            b[0] = (i % 7) as u8;
            b[4] = (i % 3) as u8;
            b[8..].copy_from_slice(&i.to_le_bytes());
            Binding(b)
        };
        for step in 0..40_000u64 {
            let i = rng.next_u64() % 500;
            let b = who(i);
            match (model.get(&b).copied(), rng.next_u64() % 3) {
                (None, _) => {
                    let slot = chains.insert(Chain::new(b, Status::Waiting, i, 5));
                    model.insert(b, slot);
                }
                (Some(slot), 0) => {
                    assert_eq!(chains.remove(slot).binding, b);
                    model.remove(&b);
                }
                (Some(slot), _) => assert_eq!(chains.slot(&b), Some(slot)),
            }
            if step % 1_000 == 0 {
                for j in 0..500 {
                    assert_eq!(chains.slot(&who(j)), model.get(&who(j)).copied());
                }
                assert_eq!(chains.len(), model.len());
            }
        }
        for (b, slot) in model.drain() {
            chains.remove(slot);
            assert_eq!(chains.slot(&b), None);
        }
        assert!(chains.table.is_empty() && chains.slab.is_empty(), "emptied");
    }

    #[test]
    fn facts_round_trip() {
        let mut chains = Chains::default();
        let slot = chains.insert(Chain::new(Binding([1; 16]), Status::Pre, 0, 9));
        assert_eq!(chains.facts(slot), None);
        // In range of the 32-bit offsets, and past them either way (kept
        // whole in the spill map, which a fitting record empties again).
        let times = [
            (11, 12, None),
            (11, 12, Some(11)),
            (
                1_700_000_000_000,
                1_700_000_300_000,
                Some(1_700_000_100_000),
            ),
            (0, i64::from(u32::MAX), Some(i64::from(u32::MAX))),
            (0, i64::from(u32::MAX) + 1, None),
            (0, 5, Some(i64::from(u32::MAX) + 1)),
            (11, 10, None),
            (11, 12, Some(-5)),
            (i64::MIN, i64::MAX, Some(0)),
        ];
        for (joined_at_ms, expires_at_ms, admitted_from_ms) in times {
            for epoch in [None, Some(0), Some(u32::MAX)] {
                for status in [Status::Pre, Status::Waiting, Status::Admitted] {
                    let f = ChainFacts {
                        ticket_id: TicketId([3; 16]),
                        sequence: 7,
                        joined_at_ms,
                        expires_at_ms,
                        admitted_from_ms,
                        epoch,
                    };
                    chains.get_mut(slot).set_status(status);
                    chains.get_mut(slot).set_slot(MAX_PLACE - 1);
                    chains.set_facts(slot, &f);
                    assert_eq!(chains.facts(slot), Some(f));
                    let c = chains.get(slot);
                    assert_eq!((c.status(), c.slot()), (status, MAX_PLACE - 1));
                    assert_eq!(c.ticket_id(), Some(TicketId([3; 16])));
                    let fits = u32::try_from(expires_at_ms.wrapping_sub(joined_at_ms)).is_ok()
                        && expires_at_ms >= joined_at_ms
                        && admitted_from_ms.is_none_or(|a| {
                            a >= joined_at_ms && a - joined_at_ms <= i64::from(u32::MAX)
                        });
                    assert_eq!(chains.spill.len(), usize::from(!fits), "{f:?}");
                }
            }
        }
        chains.remove(slot);
        assert!(chains.spill.is_empty(), "a removed chain leaves no spill");
    }
}
