//! A flat, expiring open-addressing table: the storage behind
//! [`MemoryReplayStore`](super::MemoryReplayStore).
//!
//! - Robin Hood linear probing with backward-shift deletion (no
//!   tombstones), in one contiguous slot array. Positions come from the high
//!   32 bits of a 64-bit hash by multiply-shift (no power-of-two sizes), so the
//!   table can grow by ~14 % at a time and stay between about 77 % and 88 %
//!   full once large: that is what keeps a live record near 40 bytes.
//! - An expiry wheel: per 8-second bucket of retention end, the high 32 bits
//!   of each record's hash (4 bytes per record). A due bucket is drained a few
//!   entries at a time; each entry finds "the expired record with this hash"
//!   in a short probe and deletes it. So expiry costs O(expired) work, never
//!   a scan. A record whose retention is extended keeps its one entry where
//!   it is: when that bucket comes due, the entry finds the record still
//!   live and moves to the record's current bucket (at a heartbeat every
//!   couple of minutes and a retention of five, that is one move per
//!   record where a new entry per extension kept two or three). An entry
//!   whose record was already removed finds nothing and is dropped:
//!   deleting only records that *are* expired makes stale or colliding
//!   entries harmless.

use std::collections::BTreeMap;

/// Seconds per expiry bucket.
const BUCKET_SHIFT: u32 = 3;

/// Smallest table (per shard).
const MIN_SLOTS: usize = 64;

/// One slot of a [`Table`]. All-zero bytes mean empty.
pub(super) trait Slot: Copy {
    /// The empty slot.
    const EMPTY: Self;
    /// The record's 64-bit hash (of its key).
    fn hash(&self) -> u64;
    /// The retention code (see [`Times::keep_code`]); 0 means empty.
    fn keep_code(&self) -> u32;
}

/// The store's time base: retention in whole seconds and issue times in
/// milliseconds, both as offsets from `base_ms` so they fit 32 and 48 bits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub(super) base_ms: i64,
}

/// Retention codes keep the low 31 bits for time; the top bit is free for a
/// flag of the slot.
pub(super) const KEEP_MASK: u32 = 0x7fff_ffff;
const ISSUED_MAX: u64 = (1 << 48) - 1;

impl Times {
    /// The retention code for "keep until `keep_ms`": whole seconds since the
    /// base, rounded up (a record is never dropped early), plus one so that 0
    /// can mean empty. Saturates at both ends (68 years of range).
    pub(super) fn keep_code(self, keep_ms: i64) -> u32 {
        let rel = keep_ms.saturating_sub(self.base_ms).max(0);
        let secs = rel.saturating_add(999) / 1000;
        (secs.min(i64::from(KEEP_MASK) - 1) as u32) + 1
    }

    /// The instant a retention code keeps its record until (inclusive).
    pub(super) fn keep_ms(self, code: u32) -> i64 {
        let secs = i64::from((code & KEEP_MASK).saturating_sub(1));
        self.base_ms.saturating_add(secs * 1000)
    }

    /// Whether a record with retention `code` is expired at `now_ms`.
    pub(super) fn expired(self, code: u32, now_ms: i64) -> bool {
        self.keep_ms(code) < now_ms
    }

    /// An issue time as 48 bits of milliseconds since the base (8 900 years).
    pub(super) fn issued_code(self, ms: i64) -> u64 {
        (ms.saturating_sub(self.base_ms).max(0) as u64).min(ISSUED_MAX)
    }

    /// The issue time of a code.
    pub(super) fn issued_ms(self, code: u64) -> i64 {
        self.base_ms.saturating_add((code & ISSUED_MAX) as i64)
    }

    fn bucket_due(self, bucket: u32, now_ms: i64) -> bool {
        // The latest code in the bucket; its record is kept until keep_ms.
        let last = ((u64::from(bucket) + 1) << BUCKET_SHIFT) - 1;
        self.expired(last.min(u64::from(KEEP_MASK)) as u32, now_ms)
    }
}

fn bucket_of(code: u32) -> u32 {
    (code & KEEP_MASK) >> BUCKET_SHIFT
}

/// A 64-bit hash of 16 key bytes: one multiply (Fibonacci hashing), since
/// every probe step recomputes the home of the slot it passes. Ticket ids
/// come from a CSPRNG and are authenticated, so nobody can choose them to
/// collide; the multiply still spreads structured ids (tests). Positions use
/// the high 32 bits; the fold gives the low bits (shard choice) some of the
/// high ones.
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let h = (a ^ b.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 32)
}

pub(super) struct Table<S> {
    slots: Vec<S>,
    len: usize,
    wheel: BTreeMap<u32, Vec<u32>>,
}

impl<S: Slot> Table<S> {
    pub(super) fn new() -> Self {
        Self {
            slots: vec![S::EMPTY; MIN_SLOTS],
            len: 0,
            wheel: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the slot array and the wheel (capacity, not length).
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<S>()
            + self
                .wheel
                .values()
                .map(|v| v.capacity() * 4 + 48)
                .sum::<usize>()
    }

    fn home(&self, hi: u32) -> usize {
        ((u64::from(hi) * self.slots.len() as u64) >> 32) as usize
    }

    fn next(&self, pos: usize) -> usize {
        if pos + 1 == self.slots.len() {
            0
        } else {
            pos + 1
        }
    }

    /// How far the slot at `pos` sits from its home position.
    fn distance(&self, pos: usize) -> usize {
        let home = self.home(hi32(self.slots[pos].hash()));
        if pos >= home {
            pos - home
        } else {
            pos + self.slots.len() - home
        }
    }

    /// The position of the first record with hash-high-bits `hi` matching
    /// `pred`. Robin Hood order lets a miss stop early.
    pub(super) fn find(&self, hi: u32, mut pred: impl FnMut(&S) -> bool) -> Option<usize> {
        let mut pos = self.home(hi);
        let mut dist = 0;
        loop {
            let slot = &self.slots[pos];
            if slot.keep_code() == 0 || self.distance(pos) < dist {
                return None;
            }
            if hi32(slot.hash()) == hi && pred(slot) {
                return Some(pos);
            }
            pos = self.next(pos);
            dist += 1;
        }
    }

    pub(super) fn get(&self, pos: usize) -> &S {
        &self.slots[pos]
    }

    /// Replaces the record at `pos` (same key). A later retention needs
    /// no new wheel entry: the record's entry, in an earlier bucket, moves
    /// to the record's bucket when it comes due (see [`drain`](Self::drain)).
    pub(super) fn update(&mut self, pos: usize, slot: S) {
        self.slots[pos] = slot;
    }

    /// Inserts a record whose key is known to be absent.
    pub(super) fn insert(&mut self, slot: S) {
        if (self.len + 1) * 10 > self.slots.len() * 9 {
            self.grow();
        }
        self.enqueue(bucket_of(slot.keep_code()), hi32(slot.hash()));
        self.place(slot);
        self.len += 1;
    }

    /// Adds a wheel entry. Buckets grow by half rather than double, so
    /// their spare capacity averages ~17 % instead of ~33 % (bytes per
    /// record).
    fn enqueue(&mut self, bucket: u32, hi: u32) {
        let entries = self.wheel.entry(bucket).or_default();
        if entries.len() == entries.capacity() {
            entries.reserve_exact(entries.capacity() / 2 + 4);
        }
        entries.push(hi);
    }

    fn place(&mut self, mut slot: S) {
        let mut pos = self.home(hi32(slot.hash()));
        let mut dist = 0;
        loop {
            if self.slots[pos].keep_code() == 0 {
                self.slots[pos] = slot;
                return;
            }
            let resident = self.distance(pos);
            if resident < dist {
                std::mem::swap(&mut self.slots[pos], &mut slot);
                dist = resident;
            }
            pos = self.next(pos);
            dist += 1;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len();
        // Doubling while small; 12.5 % steps once large, so a table that
        // grows at 90 % full never drops below 80 % (memory per record).
        // Robin Hood order keeps probes short at that load.
        let new_n = if n < 1 << 12 { n * 2 } else { n + n / 8 };
        let old = std::mem::replace(&mut self.slots, vec![S::EMPTY; new_n]);
        for slot in old {
            if slot.keep_code() != 0 {
                self.place(slot);
            }
        }
    }

    /// Removes the record at `pos`, shifting its run back (no tombstones).
    pub(super) fn remove(&mut self, mut pos: usize) -> S {
        let removed = self.slots[pos];
        loop {
            let next = self.next(pos);
            if self.slots[next].keep_code() == 0 || self.distance(next) == 0 {
                self.slots[pos] = S::EMPTY;
                break;
            }
            self.slots[pos] = self.slots[next];
            pos = next;
        }
        self.len -= 1;
        removed
    }

    /// Drains up to `budget` wheel entries of buckets that are wholly past
    /// their retention at `now_ms`, deleting the expired records they name.
    /// Calls `on_remove` for each deleted record. Returns whether due work
    /// is left.
    pub(super) fn drain(
        &mut self,
        times: Times,
        now_ms: i64,
        mut budget: usize,
        mut on_remove: impl FnMut(&S),
    ) -> bool {
        loop {
            let Some(mut first) = self.wheel.first_entry() else {
                return false;
            };
            if !times.bucket_due(*first.key(), now_ms) {
                return false;
            }
            if budget == 0 {
                return true;
            }
            let Some(hi) = first.get_mut().pop() else {
                first.remove();
                continue;
            };
            if first.get().is_empty() {
                first.remove();
            }
            budget -= 1;
            if let Some(pos) = self.find_expired(hi, times, now_ms) {
                on_remove(&self.remove(pos));
            } else if let Some(pos) = self.find(hi, |s| !times.expired(s.keep_code(), now_ms)) {
                // Extended since: the entry follows the record (to a bucket
                // that is not due, so this drain does not meet it again).
                let bucket = bucket_of(self.slots[pos].keep_code());
                self.enqueue(bucket, hi);
            }
        }
    }

    /// Deletes every expired record (due buckets wholly; the bucket holding
    /// `now_ms` entry by entry).
    pub(super) fn purge(&mut self, times: Times, now_ms: i64, mut on_remove: impl FnMut(&S)) {
        while self.drain(times, now_ms, usize::MAX, &mut on_remove) {}
        let Some(mut bucket) = self.wheel.first_entry() else {
            return;
        };
        let mut entries = std::mem::take(bucket.get_mut());
        entries.retain(|&hi| match self.find_expired(hi, times, now_ms) {
            Some(pos) => {
                on_remove(&self.remove(pos));
                false
            }
            None => true,
        });
        if let Some(mut bucket) = self.wheel.first_entry() {
            *bucket.get_mut() = entries;
        }
    }

    fn find_expired(&self, hi: u32, times: Times, now_ms: i64) -> Option<usize> {
        self.find(hi, |s| times.expired(s.keep_code(), now_ms))
    }
}

pub(super) fn hi32(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct T {
        key: u64,
        keep: u32,
    }

    impl Slot for T {
        const EMPTY: Self = T { key: 0, keep: 0 };
        fn hash(&self) -> u64 {
            mix(self.key, 0)
        }
        fn keep_code(&self) -> u32 {
            self.keep
        }
    }

    fn find(t: &Table<T>, key: u64) -> Option<T> {
        t.find(hi32(mix(key, 0)), |s| s.key == key)
            .map(|p| *t.get(p))
    }

    #[test]
    fn insert_find_remove_through_growth() {
        let times = Times { base_ms: 0 };
        let mut t = Table::new();
        for k in 1..=50_000u64 {
            t.insert(T {
                key: k,
                keep: times.keep_code(1_000 * (k as i64 % 100)),
            });
        }
        assert_eq!(t.len(), 50_000);
        for k in 1..=50_000u64 {
            assert_eq!(find(&t, k).map(|s| s.key), Some(k));
        }
        assert_eq!(find(&t, 50_001), None);
        // Remove the odd ones directly.
        for k in (1..=50_000u64).step_by(2) {
            let pos = t.find(hi32(mix(k, 0)), |s| s.key == k).unwrap();
            assert_eq!(t.remove(pos).key, k);
        }
        for k in 1..=50_000u64 {
            assert_eq!(find(&t, k).is_some(), k % 2 == 0, "key {k}");
        }
    }

    #[test]
    fn drain_removes_only_expired_and_purge_everything_expired() {
        let times = Times { base_ms: 0 };
        let mut t = Table::new();
        for k in 1..=1_000u64 {
            // Retention ends at k seconds.
            t.insert(T {
                key: k,
                keep: times.keep_code(k as i64 * 1_000),
            });
        }
        let mut removed = Vec::new();
        // At 500.5 s: records 1..=500 are expired; buckets wholly before
        // 500 s are due.
        while t.drain(times, 500_500, 7, |s| removed.push(s.key)) {}
        assert!(removed.iter().all(|&k| k <= 500));
        assert!(removed.len() >= 490, "drained {}", removed.len());
        t.purge(times, 500_500, |s| removed.push(s.key));
        removed.sort_unstable();
        assert_eq!(removed, (1..=500).collect::<Vec<_>>());
        assert_eq!(t.len(), 500);
        for k in 501..=1_000u64 {
            assert!(find(&t, k).is_some());
        }
    }

    /// An extended record keeps one wheel entry, which follows it when its
    /// old bucket comes due; the record is dropped once its new retention
    /// ends, and not before.
    #[test]
    fn an_extended_record_keeps_one_entry_that_follows_it() {
        let times = Times { base_ms: 0 };
        let mut t = Table::new();
        let entries = |t: &Table<T>| t.wheel.values().map(Vec::len).sum::<usize>();
        for k in 1..=100u64 {
            t.insert(T {
                key: k,
                keep: times.keep_code(10_000),
            });
        }
        // Every record extended five times, to 50 s at last.
        for until in [20_000, 30_000, 40_000, 50_000, 60_000] {
            for k in 1..=100u64 {
                let pos = t.find(hi32(mix(k, 0)), |s| s.key == k).unwrap();
                t.update(
                    pos,
                    T {
                        key: k,
                        keep: times.keep_code(until),
                    },
                );
            }
        }
        assert_eq!(entries(&t), 100, "no entry per extension");
        // Past the first retention: nothing dropped, every entry moved on.
        let mut removed = 0;
        while t.drain(times, 30_000, 7, |_| removed += 1) {}
        assert_eq!((removed, t.len(), entries(&t)), (0, 100, 100));
        assert!(t
            .wheel
            .keys()
            .all(|&b| b == bucket_of(times.keep_code(60_000))));
        while t.drain(times, 60_000, 7, |_| removed += 1) {}
        assert_eq!(removed, 0, "kept until 60 s inclusive");
        t.purge(times, 60_001, |_| removed += 1);
        assert_eq!((removed, t.len()), (100, 0));
    }

    #[test]
    fn keep_codes_round_up_and_saturate() {
        let times = Times { base_ms: 10_000 };
        assert_eq!(times.keep_ms(times.keep_code(10_001)), 11_000);
        assert_eq!(times.keep_ms(times.keep_code(11_000)), 11_000);
        assert_eq!(times.keep_ms(times.keep_code(-5)), 10_000);
        assert!(times.keep_code(i64::MAX) <= KEEP_MASK);
        assert!(!times.expired(times.keep_code(11_000), 11_000));
        assert!(times.expired(times.keep_code(11_000), 11_001));
        assert_eq!(times.issued_ms(times.issued_code(123_456)), 123_456);
    }
}
