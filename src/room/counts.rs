//! Counting the waiting places in front of a position in O(log n): a
//! Fenwick tree (binary indexed tree) over positions.

/// One count per position after `base`: 1 while a place waits there, else
/// 0.
///
/// Positions only grow, so the tree grows at its end (O(log n) per new
/// position). The positions the front of the queue has passed are dropped
/// in batches: once the front has moved past at least half the tree, the
/// rest is rebuilt in O(size), which is amortised O(1) per position passed.
/// Memory: 4 bytes per position from the front to the back of the queue.
#[derive(Debug, Default)]
pub(super) struct PositionCounts {
    /// Positions up to `base` are all behind the front (count 0).
    base: u64,
    /// 1-based Fenwick layout: `tree[i - 1]` holds the counts of the
    /// positions `base + i - lowbit(i) + 1 ..= base + i`.
    tree: Vec<u32>,
}

/// The lowest set bit of `i`.
fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

/// Below this many passed positions the tree is not rebuilt.
const MIN_DROP: usize = 1024;

impl PositionCounts {
    /// The sum of the counts at indices `1..=i`.
    fn prefix(&self, mut i: usize) -> u64 {
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i - 1]);
            i -= lowbit(i);
        }
        sum
    }

    /// Adds `delta` (wrapping: `u32::MAX` is -1) at index `i`.
    fn add(&mut self, mut i: usize, delta: u32) {
        while i <= self.tree.len() {
            self.tree[i - 1] = self.tree[i - 1].wrapping_add(delta);
            i += lowbit(i);
        }
    }

    fn index(&self, position: u64) -> Option<usize> {
        position
            .checked_sub(self.base)
            .filter(|&i| i > 0)
            .and_then(|i| usize::try_from(i).ok())
    }

    /// Counts a place at `position` (after every position counted so far
    /// in normal use; the tree grows to reach it).
    pub(super) fn insert(&mut self, position: u64) {
        let Some(i) = self.index(position) else {
            return;
        };
        while self.tree.len() < i {
            // A new node starts with the counts of the range it covers.
            let n = self.tree.len() + 1;
            let covered = self.prefix(n - 1) - self.prefix(n - lowbit(n));
            self.tree.push(covered as u32);
        }
        self.add(i, 1);
    }

    /// Uncounts the place at `position` (which must be counted).
    pub(super) fn remove(&mut self, position: u64) {
        if let Some(i) = self.index(position).filter(|&i| i <= self.tree.len()) {
            self.add(i, u32::MAX);
        }
    }

    /// The number of places counted before `position`.
    pub(super) fn count_before(&self, position: u64) -> u64 {
        match self.index(position) {
            Some(i) => self.prefix((i - 1).min(self.tree.len())),
            None => 0,
        }
    }

    /// Forgets the positions before `front` (none of them may be counted):
    /// the memory they take is given back once it is worth a rebuild.
    pub(super) fn drop_before(&mut self, front: u64) {
        let new_base = front.saturating_sub(1);
        let Some(shift) = new_base
            .checked_sub(self.base)
            .map(|s| usize::try_from(s).unwrap_or(usize::MAX))
        else {
            return;
        };
        if shift == 0 {
            return;
        }
        let len = self.tree.len();
        if shift >= len {
            self.tree.clear();
            self.base = new_base;
        } else if shift >= MIN_DROP && shift * 2 >= len {
            // Back to one count per position (children subtracted from
            // their parents, highest index first), drop the passed ones,
            // and build the tree again (children added to their parents).
            for i in (1..=len).rev() {
                let parent = i + lowbit(i);
                if parent <= len {
                    self.tree[parent - 1] = self.tree[parent - 1].wrapping_sub(self.tree[i - 1]);
                }
            }
            self.tree.drain(..shift);
            let len = self.tree.len();
            for i in 1..=len {
                let parent = i + lowbit(i);
                if parent <= len {
                    self.tree[parent - 1] = self.tree[parent - 1].wrapping_add(self.tree[i - 1]);
                }
            }
            self.base = new_base;
        } else {
            return;
        }
        if self.tree.capacity() > 4 * self.tree.len().max(MIN_DROP) {
            self.tree.shrink_to(2 * self.tree.len());
        }
    }

    /// Positions held in memory.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.tree.len()
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
                    + MIN_DROP,
            "passed positions are given back"
        );
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
