//! What each instance keeps of a queue's shared state between ticks, and
//! "people ahead" computed from it without a call to the queue's slot.
//!
//! The queue's slot keeps one live count per block of [`BLOCK`] places (a
//! `u32` array in a Redis string, `BITFIELD ... INCRBY`): a join adds 1 to
//! its block, an admission, a leave or a dead place found by the front or
//! the sweep takes 1 away. Each instance reads the counts from the front's
//! block on (4 bytes per 1,024 places: 23 KB for 6 million waiting) at
//! most about once a second. Then the people ahead of place `p` are the
//! counts of the blocks before `p`'s, plus, inside `p`'s own block, the
//! smaller of the places between the front and `p` and the block's count
//! less `p` itself.
//!
//! That figure never undercounts. It overcounts by at most:
//! - fewer than [`BLOCK`] in `p`'s own block (its empty places before `p`
//!   when the block's count comes from places behind `p`);
//! - the people ahead who left, were admitted or were found dead since the
//!   snapshot (at most what one second of the room removes);
//! - the people ahead whose chain died and whom neither the front nor the
//!   sweep has reached yet (each tick checks a bounded batch after the
//!   sweep's cursor, so a pass over `n` waiting takes `n / batch` ticks).
//!
//! `tests/redis_room_scale.rs` checks the bound against a queue with holes.

/// Places per block of live counts. Part of the key layout (its version
/// pins it).
pub(crate) const BLOCK: u64 = 1024;

/// A queue's shared state as an instance last read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The last place handed out.
    pub(crate) next: u64,
    /// The front waiting place (0: nobody waits).
    pub(crate) front: u64,
    /// The block index of `counts[0]`.
    pub(crate) first_block: u64,
    /// Live waiting places per block, from `first_block` on.
    pub(crate) counts: Vec<u32>,
}

impl Snapshot {
    /// Parses the blocks' bytes (big-endian `u32`s, as `BITFIELD` stores
    /// them).
    pub(crate) fn set_counts(&mut self, first_block: u64, bytes: &[u8]) {
        self.first_block = first_block;
        self.counts = bytes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(b)
            })
            .collect();
    }

    /// Counts a place this instance just handed out (so its own joins show
    /// before the next snapshot).
    pub(crate) fn joined(&mut self, place: u64) {
        self.next = self.next.max(place);
        if self.front == 0 || place < self.front {
            if self.front == 0 {
                self.first_block = place / BLOCK;
                self.counts.clear();
            }
            self.front = place;
        }
        let Some(i) = (place / BLOCK).checked_sub(self.first_block) else {
            return;
        };
        let i = i as usize;
        if i >= self.counts.len() {
            if i > 1 << 24 {
                return;
            }
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Uncounts a waiting place this instance removed; `front` is the new
    /// front the queue's slot reported.
    pub(crate) fn left(&mut self, place: u64, front: u64) {
        if let Some(i) = (place / BLOCK).checked_sub(self.first_block) {
            if let Some(c) = self.counts.get_mut(i as usize) {
                *c = c.saturating_sub(1);
            }
        }
        self.front = front;
    }

    /// Live people ahead of the waiting place `place` (see the module's
    /// bound).
    pub(crate) fn ahead(&self, place: u64) -> u64 {
        if place == 0 || self.front == 0 || place <= self.front {
            return 0;
        }
        let own = place / BLOCK;
        let mut sum = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            let block = self.first_block + i as u64;
            if block >= own {
                break;
            }
            sum += u64::from(c);
        }
        let own_count = (own
            .checked_sub(self.first_block)
            .and_then(|i| self.counts.get(i as usize)))
        .copied()
        .map_or(0, u64::from);
        // The block's count includes `place` itself only if the place was
        // handed out before the snapshot (places are handed out in order).
        let others = if place <= self.next {
            own_count.saturating_sub(1)
        } else {
            own_count
        };
        let block_start = own * BLOCK;
        let between = place - self.front.max(block_start);
        sum + between.min(others)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::schedule::SplitMix;
    use std::collections::BTreeSet;

    fn snapshot_of(live: &BTreeSet<u64>, next: u64) -> Snapshot {
        let front = live.first().copied().unwrap_or(0);
        let mut s = Snapshot {
            next,
            front,
            ..Snapshot::default()
        };
        if front > 0 {
            let first = front / BLOCK;
            let last = live.last().unwrap() / BLOCK;
            let mut bytes = vec![0u8; ((last - first + 1) * 4) as usize];
            for &p in live {
                let i = ((p / BLOCK - first) * 4) as usize;
                let c = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) + 1;
                bytes[i..i + 4].copy_from_slice(&c.to_be_bytes());
            }
            s.set_counts(first, &bytes);
        }
        s
    }

    #[test]
    fn exact_without_holes_and_never_under_nor_a_block_over_with_them() {
        let rng = SplitMix::new(11);
        for round in 0..40 {
            let n = 1 + rng.next_u64() % 6_000;
            let start = 1 + rng.next_u64() % 3_000;
            let mut live: BTreeSet<u64> = (start..start + n).collect();
            let no_holes = snapshot_of(&live, start + n - 1);
            for &p in live.iter().step_by(97) {
                assert_eq!(no_holes.ahead(p), p - start, "round {round}");
            }
            // Remove a random share (left, admitted, found dead).
            let share = rng.next_u64() % 90;
            live.retain(|_| rng.next_u64() % 100 >= share);
            let s = snapshot_of(&live, start + n - 1);
            for &p in live.iter().step_by(13) {
                let exact = live.range(..p).count() as u64;
                let got = s.ahead(p);
                assert!(got >= exact, "round {round}: {got} < {exact}");
                assert!(got - exact < BLOCK, "round {round}: {got} vs {exact}");
            }
        }
    }

    #[test]
    fn local_joins_and_leaves_show_at_once() {
        let mut s = Snapshot::default();
        for p in 1..=4 {
            s.joined(p);
        }
        assert_eq!((s.ahead(1), s.ahead(2), s.ahead(4)), (0, 1, 3));
        s.left(1, 2);
        assert_eq!((s.ahead(2), s.ahead(3), s.ahead(4)), (0, 1, 2));
        s.joined(BLOCK * 3 + 5);
        assert_eq!(s.ahead(BLOCK * 3 + 5), 3);
        // A place another instance handed out after this snapshot: the
        // snapshot's counts do not hold it, so nobody is subtracted for it.
        assert_eq!(s.ahead(BLOCK * 3 + 9), 4);
    }
}
