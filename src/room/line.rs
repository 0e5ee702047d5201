//! The waiting places of the in-memory state by position, and the keys of
//! its deadline B-trees: both laid out for memory per person, which is what
//! a queue of a million is made of.
//!
//! Positions are handed out in increasing order and only ever leave, so
//! the places need no search tree: a ring of chain slots from the front to
//! the back of the line, indexed by position, with a vacant mark where
//! someone left. That is 4 bytes per position between the front and the
//! back (plus the ring's spare capacity), where a `BTreeMap<u64, u32>`
//! took about 25 bytes per place (half-full nodes of 144 bytes). The
//! vacancies in front are dropped as soon as they reach the front, so the
//! ring spans from the first live place to the last one handed out.

use std::collections::VecDeque;

/// A vacant position (its person left or was admitted). Chain slots are
/// below `u32::MAX` (the chains' index keeps `slot + 1` in 32 bits).
const VACANT: u32 = u32::MAX;

/// The waiting places by position: `slots[k]` is the chain slot of
/// position `base + k`, or [`VACANT`]. The front (`slots[0]`) is never
/// vacant.
#[derive(Debug, Default)]
pub(super) struct Line {
    base: u64,
    slots: VecDeque<u32>,
    len: usize,
}

impl Line {
    /// How many places are taken.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Takes `position` for the chain in `slot`. Positions must come in
    /// increasing order (after every position held so far); the positions
    /// skipped in between, if any, are vacant.
    pub(super) fn insert(&mut self, position: u64, slot: u32) {
        debug_assert!(slot != VACANT, "chain slots are below u32::MAX");
        if self.slots.is_empty() {
            self.base = position;
        }
        let end = self.base + self.slots.len() as u64;
        assert!(position >= end, "positions are handed out in order");
        for _ in end..position {
            self.slots.push_back(VACANT);
        }
        self.slots.push_back(slot);
        self.len += 1;
    }

    fn index(&self, position: u64) -> Option<usize> {
        let k = usize::try_from(position.checked_sub(self.base)?).ok()?;
        (k < self.slots.len()).then_some(k)
    }

    /// The chain slot at `position`, if it is taken.
    #[cfg(test)]
    pub(super) fn get(&self, position: u64) -> Option<u32> {
        let slot = self.slots[self.index(position)?];
        (slot != VACANT).then_some(slot)
    }

    /// The taken place whose position has these low 32 bits: its position
    /// and chain slot. (The line spans fewer than 2³² positions, so the low
    /// bits name one position in it; a position the front passed is
    /// vacant or out of the line.)
    pub(super) fn resolve(&self, low: u32) -> Option<(u64, u32)> {
        let k = low.wrapping_sub(self.base as u32) as usize;
        let slot = *self.slots.get(k)?;
        (slot != VACANT).then_some((self.base + k as u64, slot))
    }

    /// Frees `position`; returns the slot that held it.
    pub(super) fn remove(&mut self, position: u64) -> Option<u32> {
        let k = self.index(position)?;
        let slot = std::mem::replace(&mut self.slots[k], VACANT);
        if slot == VACANT {
            return None;
        }
        self.len -= 1;
        // Drop the vacancies that reached the front: each position once.
        while self.slots.front() == Some(&VACANT) {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            // Give the ring back once the line is empty.
            self.slots = VecDeque::new();
        }
        Some(slot)
    }

    /// The first place: its position and chain slot.
    pub(super) fn first(&self) -> Option<(u64, u32)> {
        self.slots.front().map(|&slot| (self.base, slot))
    }

    /// Frees the first place; returns its position and chain slot.
    pub(super) fn pop_first(&mut self) -> Option<(u64, u32)> {
        let (position, _) = self.first()?;
        self.remove(position).map(|slot| (position, slot))
    }

    /// How many places are taken in front of `position`: O(n), for tests.
    #[cfg(test)]
    pub(super) fn count_before(&self, position: u64) -> usize {
        let end = position
            .saturating_sub(self.base)
            .min(self.slots.len() as u64) as usize;
        self.slots.range(..end).filter(|&&s| s != VACANT).count()
    }
}

/// A key of the deadline indexes: a deadline (ms) and a chain slot,
/// ordered by deadline, then slot. Kept as three 32-bit words (12 bytes,
/// 4-aligned) rather than an `(i64, u32)` (16 bytes with its padding): a
/// B-tree leaf of 11 keys is then 144 bytes instead of 192. (The waiting
/// people's deadlines are in a wheel, `super::wheel`; these keys index the
/// pre-queue and the admitted.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    /// The deadline with its sign bit flipped (so unsigned order is the
    /// order of `i64`), high and low words.
    hi: u32,
    lo: u32,
    slot: u32,
}

impl Due {
    /// The key of the chain in `slot` with deadline `deadline_ms`.
    pub(super) fn new(deadline_ms: i64, slot: u32) -> Self {
        let d = (deadline_ms as u64) ^ (1 << 63);
        Self {
            hi: (d >> 32) as u32,
            lo: d as u32,
            slot,
        }
    }

    /// The deadline (ms).
    pub(super) fn deadline_ms(self) -> i64 {
        ((u64::from(self.hi) << 32 | u64::from(self.lo)) ^ (1 << 63)) as i64
    }

    /// The chain slot.
    pub(super) fn slot(self) -> u32 {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_order_as_deadline_then_slot_and_round_trip() {
        let deadlines = [i64::MIN, -1_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let mut keys: Vec<(i64, u32)> = Vec::new();
        for &d in &deadlines {
            for slot in [0, 1, u32::MAX - 1] {
                keys.push((d, slot));
                assert_eq!(Due::new(d, slot).deadline_ms(), d);
                assert_eq!(Due::new(d, slot).slot(), slot);
            }
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    Due::new(a.0, a.1).cmp(&Due::new(b.0, b.1)),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
        assert_eq!(std::mem::size_of::<Due>(), 12);
    }

    #[test]
    fn the_line_keeps_places_by_position_and_drops_vacancies_at_the_front() {
        let mut line = Line::default();
        assert_eq!(line.first(), None);
        for p in 10..20u64 {
            line.insert(p, p as u32 * 2);
        }
        assert_eq!((line.len(), line.first()), (10, Some((10, 20))));
        assert_eq!(line.remove(12), Some(24));
        assert_eq!(line.remove(12), None, "already vacant");
        assert_eq!(line.get(12), None);
        assert_eq!(line.get(13), Some(26));
        assert_eq!(line.count_before(15), 4);
        assert_eq!(line.pop_first(), Some((10, 20)));
        assert_eq!(line.pop_first(), Some((11, 22)));
        // 12 was vacant: the front is now 13.
        assert_eq!(line.first(), Some((13, 26)));
        assert_eq!(line.slots.len(), 7);
        // Positions out of range are simply absent.
        assert_eq!(
            (line.get(5), line.get(99), line.remove(99)),
            (None, None, None)
        );
        // A gap after the back is vacant.
        line.insert(25, 50);
        assert_eq!(
            (line.get(24), line.get(25), line.len()),
            (None, Some(50), 8)
        );
        for p in 13..20u64 {
            assert!(line.remove(p).is_some());
        }
        assert_eq!(line.first(), Some((25, 50)), "the gap was dropped too");
        assert_eq!(line.pop_first(), Some((25, 50)));
        assert_eq!((line.len(), line.slots.capacity()), (0, 0), "given back");
        // Empty, it starts again at any later position.
        line.insert(1_000, 7);
        assert_eq!(line.first(), Some((1_000, 7)));
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn positions_must_come_in_order() {
        let mut line = Line::default();
        line.insert(5, 1);
        line.insert(4, 2);
    }
}
