//! Counting the waiting places in front of a position in O(log n): one
//! bit per position, and a Fenwick tree (binary indexed tree) over blocks
//! of 64 positions.
//!
//! The two levels are for the cache, not the algorithm: a heartbeat at a
//! million waiting counts the people ahead with one word of bits (125 KB
//! for all of them) and a prefix sum over 15,625 block counts (61 KB), both
//! small enough to stay in a core's cache while the crowd takes turns. A
//! Fenwick tree with one count per position (4 MB at a million) walked ~20
//! nodes, most of them in distinct cache lines of a cold 4 MB array.

/// Positions per block: the bits of one `u64`.
const BLOCK: u64 = 64;

/// One bit per position after `base`: set while a place waits there.
///
/// Positions only grow, so the bits and the tree grow at their end
/// (O(log n) per new block). The blocks the front of the queue has passed
/// are dropped in batches: once the front has moved past at least half of
/// them, the rest is rebuilt in O(size), which is amortised O(1) per
/// position passed. Memory: 1 bit plus 1/16 byte per position from the
/// front to the back of the queue.
#[derive(Debug, Default)]
pub(super) struct PositionCounts {
    /// Positions up to `base` are all behind the front (count 0).
    base: u64,
    /// Bit `o % 64` of `bits[o / 64]` is position `base + 1 + o`.
    bits: Vec<u64>,
    /// 1-based Fenwick layout over the blocks: `tree[i - 1]` holds the
    /// places in blocks `i - lowbit(i) + 1 ..= i` (1-based).
    tree: Vec<u32>,
}

/// The lowest set bit of `i`.
fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

/// Below this many passed blocks the tree is not rebuilt.
const MIN_DROP_BLOCKS: usize = 16;

/// Below this many passed positions nothing is given back (in tests: how
/// far the memory may lag the front).
#[cfg(test)]
const MIN_DROP: usize = MIN_DROP_BLOCKS * BLOCK as usize;

impl PositionCounts {
    /// The places in blocks `1..=i` (1-based).
    fn prefix(&self, mut i: usize) -> u64 {
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i - 1]);
            i -= lowbit(i);
        }
        sum
    }

    /// Adds `delta` (wrapping: `u32::MAX` is -1) to block `i` (1-based).
    fn add(&mut self, mut i: usize, delta: u32) {
        while i <= self.tree.len() {
            self.tree[i - 1] = self.tree[i - 1].wrapping_add(delta);
            i += lowbit(i);
        }
    }

    /// The 0-based offset of `position` after the base.
    fn offset(&self, position: u64) -> Option<(usize, u64)> {
        let o = position.checked_sub(self.base)?.checked_sub(1)?;
        let block = usize::try_from(o / BLOCK).ok()?;
        Some((block, 1 << (o % BLOCK)))
    }

    /// Counts a place at `position` (after every position counted so far
    /// in normal use; the blocks grow to reach it).
    pub(super) fn insert(&mut self, position: u64) {
        let Some((block, bit)) = self.offset(position) else {
            return;
        };
        while self.bits.len() <= block {
            // A new node starts with the counts of the blocks it covers.
            let n = self.tree.len() + 1;
            let covered = self.prefix(n - 1) - self.prefix(n - lowbit(n));
            self.tree.push(covered as u32);
            self.bits.push(0);
        }
        if self.bits[block] & bit == 0 {
            self.bits[block] |= bit;
            self.add(block + 1, 1);
        }
    }

    /// Uncounts the place at `position` (nothing if it is not counted).
    pub(super) fn remove(&mut self, position: u64) {
        let Some((block, bit)) = self.offset(position) else {
            return;
        };
        if self.bits.get(block).is_some_and(|w| w & bit != 0) {
            self.bits[block] &= !bit;
            self.add(block + 1, u32::MAX);
        }
    }

    /// The number of places counted before `position`.
    pub(super) fn count_before(&self, position: u64) -> u64 {
        let Some((block, bit)) = self.offset(position) else {
            return 0;
        };
        match self.bits.get(block) {
            Some(w) => self.prefix(block) + u64::from((w & (bit - 1)).count_ones()),
            None => self.prefix(self.tree.len()),
        }
    }

    /// Forgets the positions before `front` (none of them may be counted):
    /// the memory they take is given back, a block at a time, once it is
    /// worth a rebuild.
    pub(super) fn drop_before(&mut self, front: u64) {
        let new_base = front.saturating_sub(1);
        let Some(shift) = new_base.checked_sub(self.base) else {
            return;
        };
        let len = self.bits.len();
        let blocks = usize::try_from(shift / BLOCK).unwrap_or(usize::MAX);
        // Nothing left counted (at most the front's block, and it empty):
        // an emptied queue holds nothing.
        let emptied = blocks >= len || (blocks + 1 == len && self.bits[len - 1] == 0);
        if emptied {
            if shift == 0 && len == 0 {
                return;
            }
            self.bits.clear();
            self.tree.clear();
            self.base = new_base;
        } else if blocks >= MIN_DROP_BLOCKS && blocks * 2 >= len {
            // Whole blocks only, so the bits keep their alignment; the
            // tree is built again from the blocks' counts (each node adds
            // itself to its parent).
            self.bits.drain(..blocks);
            self.base += blocks as u64 * BLOCK;
            let len = self.bits.len();
            self.tree.clear();
            self.tree.extend(self.bits.iter().map(|w| w.count_ones()));
            for i in 1..=len {
                let parent = i + lowbit(i);
                if parent <= len {
                    self.tree[parent - 1] = self.tree[parent - 1].wrapping_add(self.tree[i - 1]);
                }
            }
        } else {
            return;
        }
        let keep = self.bits.len().max(MIN_DROP_BLOCKS);
        if self.bits.capacity() > 4 * keep {
            self.bits.shrink_to(2 * self.bits.len());
            self.tree.shrink_to(2 * self.tree.len());
        }
    }

    /// Positions held in memory.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.bits.len() * BLOCK as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::schedule::SplitMix;
    use std::collections::BTreeSet;

    #[test]
    fn counts_match_a_plain_set_through_growth_removal_and_drops() {
        let rng = SplitMix::new(7);
        let mut counts = PositionCounts::default();
        let mut model = BTreeSet::new();
        let mut last = 0u64;
        for step in 0..60_000u32 {
            match rng.next_u64() % 10 {
                // Joins at the back (now and then leaving a gap).
                0..=4 => {
                    last += 1 + u64::from(rng.next_u64() % 50 == 0);
                    counts.insert(last);
                    model.insert(last);
                }
                // Admission from the front.
                5 | 6 => {
                    if let Some(p) = model.pop_first() {
                        counts.remove(p);
                    }
                }
                // Someone anywhere leaves.
                _ => {
                    if last > 0 {
                        let p = 1 + rng.next_u64() % last;
                        if model.remove(&p) {
                            counts.remove(p);
                        }
                    }
                }
            }
            counts.drop_before(model.first().copied().unwrap_or(last + 1));
            if step % 97 == 0 {
                for probe in [1, last / 3, last / 2, last, last + 1, last + 100] {
                    let want = model.range(..probe).count() as u64;
                    assert_eq!(counts.count_before(probe), want, "step {step}, {probe}");
                }
            }
        }
        assert!(
            counts.held()
                <= 2 * (last as usize + 1 - model.first().map_or(last + 1, |&p| p) as usize)
                    + MIN_DROP
                    // Whole blocks: a partial one at each end.
                    + 2 * BLOCK as usize,
            "passed positions are given back"
        );
    }

    /// Around block edges, with a base that is not a multiple of the
    /// block: every count agrees with a plain set, removing an uncounted
    /// position changes nothing, and dropping keeps whole blocks.
    #[test]
    fn block_edges_and_unaligned_bases() {
        let mut counts = PositionCounts::default();
        let mut model = BTreeSet::new();
        // Passed positions 1..=100: the base moves to 100 (not aligned).
        counts.drop_before(101);
        for p in 101..=2_000u64 {
            if p % 3 != 0 {
                counts.insert(p);
                model.insert(p);
            }
        }
        counts.remove(300); // never counted (a multiple of 3)
        counts.remove(99); // before the base
        counts.remove(5_000); // past the end
        let check = |counts: &PositionCounts, model: &BTreeSet<u64>| {
            for probe in (90..2_100).chain([0, 1, u64::MAX]) {
                let want = model.range(..probe).count() as u64;
                assert_eq!(counts.count_before(probe), want, "{probe}");
            }
        };
        check(&counts, &model);
        // The front passes 1,500: 21 whole blocks are given back.
        for p in 101..1_500 {
            if model.remove(&p) {
                counts.remove(p);
            }
        }
        counts.drop_before(1_500);
        check(&counts, &model);
        assert!(counts.held() < 1_000, "held {}", counts.held());
        // Joins go on at the back after the rebuild.
        for p in 2_001..=2_200 {
            counts.insert(p);
            model.insert(p);
        }
        check(&counts, &model);
    }

    #[test]
    fn an_emptied_queue_holds_nothing() {
        let mut counts = PositionCounts::default();
        for p in 1..=5_000 {
            counts.insert(p);
        }
        for p in 1..=5_000 {
            counts.remove(p);
        }
        counts.drop_before(5_001);
        assert_eq!(counts.held(), 0);
        counts.insert(5_001);
        counts.insert(5_002);
        assert_eq!(counts.count_before(5_002), 1);
        assert_eq!(counts.count_before(10), 0);
    }
}
