//! The waiting places' deadlines in the in-memory state: a timer wheel of
//! 4-byte entries, where a B-tree of `(deadline, slot)` keys took about 30
//! bytes a person (12-byte keys in leaves about half full, since most
//! deadlines land near the back of the tree).
//!
//! - An entry is a waiting place's position (its low 32 bits), filed under
//!   a 64 ms bucket of deadline. The position names the person for good:
//!   positions are never handed out twice, so an entry whose person was
//!   admitted or left finds its position vacant in the line and is dropped.
//!   Nothing needs to find an entry to remove it.
//! - A person has exactly one entry, in a bucket at or before the bucket of
//!   its deadline. A heartbeat moves the deadline, not the entry (deadlines
//!   only grow): when the entry's bucket comes due and finds its person
//!   still live, it moves to the bucket of the person's deadline then. So a
//!   heartbeat costs nothing here, and each entry moves about once per
//!   heartbeat, later and in bulk.
//! - The buckets that started at or before now are visited in order; in
//!   the bucket of now, the entries whose deadline is still ahead stay.
//!   After a visit with no limit reached, no dead waiting person is left.
//!
//! The visit itself is [`Queue::expire`](super::memory): the wheel only
//! files and hands out buckets.

use std::collections::BTreeMap;

/// Milliseconds per bucket: short enough that the entries staying in the
/// bucket of now (people whose deadline falls in these 64 ms) are few.
const BUCKET_MS: i64 = 64;

/// The bucket of a deadline.
pub(super) fn bucket_of(deadline_ms: i64) -> i64 {
    deadline_ms.div_euclid(BUCKET_MS)
}

/// Entries (low 32 bits of waiting positions) by bucket of deadline.
#[derive(Debug, Default)]
pub(super) struct Wheel {
    buckets: BTreeMap<i64, Vec<u32>>,
}

impl Wheel {
    /// Files `position` under the bucket of `deadline_ms`.
    pub(super) fn insert(&mut self, deadline_ms: i64, position: u64) {
        self.buckets
            .entry(bucket_of(deadline_ms))
            .or_default()
            .push(position as u32);
    }

    /// Takes out the earliest bucket that started at or before `now_ms`.
    pub(super) fn take_due(&mut self, now_ms: i64) -> Option<(i64, Vec<u32>)> {
        let (&bucket, _) = self.buckets.first_key_value()?;
        if bucket.saturating_mul(BUCKET_MS) > now_ms {
            return None;
        }
        self.buckets.remove_entry(&bucket)
    }

    /// Puts entries back under `bucket` (what a visit did not finish, or
    /// what stays in the bucket of now).
    pub(super) fn put_back(&mut self, bucket: i64, entries: Vec<u32>) {
        if entries.is_empty() {
            return;
        }
        match self.buckets.entry(bucket) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(entries);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().extend(entries),
        }
    }

    /// Gives the memory back (the line emptied: every entry is stale).
    pub(super) fn clear(&mut self) {
        self.buckets = BTreeMap::new();
    }

    /// Every entry with its bucket (tests).
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.buckets
            .iter()
            .flat_map(|(&b, v)| v.iter().map(move |&e| (b, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_come_due_in_order_when_they_start() {
        let mut w = Wheel::default();
        w.insert(200, 7);
        w.insert(-1, 8);
        w.insert(130, 9);
        w.insert(140, 10);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(w.take_due(-65), None, "bucket -1 starts at -64");
        assert_eq!(w.take_due(-64), Some((-1, vec![8])));
        assert_eq!(w.take_due(127), None);
        assert_eq!(w.take_due(128), Some((2, vec![9, 10])));
        w.put_back(2, vec![10]);
        w.put_back(2, vec![]);
        assert_eq!(w.iter().collect::<Vec<_>>(), [(2, 10), (3, 7)]);
        assert_eq!(w.take_due(i64::MAX), Some((2, vec![10])));
        assert_eq!(w.take_due(i64::MAX), Some((3, vec![7])));
        assert_eq!(w.take_due(i64::MAX), None);
        w.insert(i64::MIN, 1);
        w.insert(i64::MAX, 2);
        assert_eq!(w.take_due(i64::MIN).map(|(_, v)| v), Some(vec![1]));
        assert_eq!(w.take_due(i64::MAX).map(|(_, v)| v), Some(vec![2]));
        w.insert(5, 3);
        w.clear();
        assert_eq!(w.iter().count(), 0);
    }
}
