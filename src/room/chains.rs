//! The in-memory state's chains: one flat record per person in a slab,
//! found by room binding through a small open-addressing index.
//!
//! Memory per person is what a queue of millions is made of, so nothing
//! here is boxed: a chain is one 88-byte slot of a `Vec` (reused through a
//! free list), and the index holds 8 bytes per slot of its table (a 32-bit
//! fingerprint of the binding and the chain's slot), at most 3/4 full. A
//! `HashMap<Binding, Chain>` costs twice as much at a million people: its
//! table doubles to 2²¹ entries of 96 bytes there.

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

/// One person's chain. The facts of its latest ticket are kept flat (no
/// `Option` padding): `has_facts` says whether any ticket was recorded.
#[derive(Clone, Copy)]
pub(super) struct Chain {
    pub(super) binding: Binding,
    ticket_id: TicketId,
    joined_at_ms: i64,
    expires_at_ms: i64,
    /// `i64::MIN`: no admitted ticket issued yet.
    admitted_from_ms: i64,
    pub(super) live_until_ms: i64,
    /// Waiting or admitted: the position. In the pre-queue: the index in
    /// the queue's pre-queue list.
    pub(super) slot: u64,
    sequence: u32,
    /// The epoch of the facts (meaningful when `has_epoch`).
    epoch: u32,
    pub(super) status: Status,
    has_facts: bool,
    /// False when the recorded facts carried no epoch (`None`).
    has_epoch: bool,
}

impl Chain {
    /// A chain whose first ticket is not recorded yet.
    pub(super) fn new(binding: Binding, status: Status, slot: u64, live_until_ms: i64) -> Self {
        Self {
            binding,
            ticket_id: TicketId([0; 16]),
            joined_at_ms: 0,
            expires_at_ms: 0,
            admitted_from_ms: i64::MIN,
            live_until_ms,
            slot,
            sequence: 0,
            epoch: 0,
            status,
            has_facts: false,
            has_epoch: false,
        }
    }

    /// The facts of its latest ticket, once one is recorded.
    pub(super) fn facts(&self) -> Option<ChainFacts> {
        self.has_facts.then_some(ChainFacts {
            ticket_id: self.ticket_id,
            sequence: self.sequence,
            joined_at_ms: self.joined_at_ms,
            expires_at_ms: self.expires_at_ms,
            admitted_from_ms: (self.admitted_from_ms != i64::MIN).then_some(self.admitted_from_ms),
            epoch: self.has_epoch.then_some(self.epoch),
        })
    }

    /// Its ticket id, once a ticket is recorded.
    pub(super) fn ticket_id(&self) -> Option<TicketId> {
        self.has_facts.then_some(self.ticket_id)
    }

    pub(super) fn set_facts(&mut self, f: &ChainFacts) {
        self.ticket_id = f.ticket_id;
        self.sequence = f.sequence;
        self.joined_at_ms = f.joined_at_ms;
        self.expires_at_ms = f.expires_at_ms;
        self.admitted_from_ms = f.admitted_from_ms.unwrap_or(i64::MIN);
        self.epoch = f.epoch.unwrap_or(0);
        self.has_epoch = f.epoch.is_some();
        self.has_facts = true;
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
    fn chains_are_88_bytes() {
        // 80 before the facts' epoch (issue 11): its 4 bytes and flag do
        // not fit in the 2 bytes of padding there were.
        assert_eq!(std::mem::size_of::<Chain>(), 88);
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
        let mut c = Chain::new(Binding([1; 16]), Status::Pre, 0, 9);
        assert_eq!(c.facts(), None);
        for admitted_from_ms in [None, Some(-5), Some(1_700_000_000_000)] {
            for epoch in [None, Some(0), Some(u32::MAX)] {
                let f = ChainFacts {
                    ticket_id: TicketId([3; 16]),
                    sequence: 7,
                    joined_at_ms: 11,
                    expires_at_ms: 12,
                    admitted_from_ms,
                    epoch,
                };
                c.set_facts(&f);
                assert_eq!(c.facts(), Some(f));
            }
        }
    }
}
