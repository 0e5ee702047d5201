//! The in-process room state.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::chains::{Chain, Chains, Status, MAX_PLACE};
use super::counts::PositionCounts;
use super::line::{Due, Line};
use super::schedule::{shuffle, AdmissionRule, TokenBucket};
use super::state::{BeatRecord, IssuedRecord, JoinRecord, Joined, Place, RoomState, RoomStats};
use super::wheel::{bucket_of, Wheel};
use crate::amnesty::Amnesty;
use crate::error::StoreError;
use crate::ticket::Binding;

/// The most chains one operation drops (about a millisecond or two of
/// holding the lock). Whatever a mass drop-out leaves is dropped by the
/// following calls, meanwhile `ahead` may count it.
const EXPIRE_BATCH: usize = 1024;

/// One queue. Chains live in [`Chains`] and are named by their slot there.
/// Invariants between operations: every chain is in exactly one of `pre`
/// (at index `chain.slot`), `waiting` (at position `chain.slot`, and
/// counted in `counts`) or `admitted`; every pre-queue chain is in
/// `pre_deadlines` and every admitted one in `admitted`, each under its
/// current deadline, and every waiting one has exactly one entry in the
/// `deadlines` wheel, at or before its deadline's bucket. So each
/// operation finds what it needs in O(log n), and the dead are found from
/// the front of the deadline indexes and the wheel's due buckets.
#[derive(Default)]
struct Queue {
    last_position: u64,
    opened: bool,
    bucket: TokenBucket,
    admitted_total: u64,
    /// Pre-queue slots (order does not matter: it is shuffled at the
    /// opening); leaving moves the last one into the gap.
    pre: Vec<u32>,
    /// Waiting places by position: their chain's slot.
    waiting: Line,
    /// The waiting positions again, for counting the people ahead.
    counts: PositionCounts,
    /// Pre-queue chains by (deadline, slot).
    pre_deadlines: BTreeSet<Due>,
    /// Waiting chains' positions by deadline: one entry each, at or
    /// before its deadline's bucket (see [`Wheel`]).
    deadlines: Wheel,
    /// Admitted chains by (deadline, slot).
    admitted: BTreeSet<Due>,
    chains: Chains,
}

impl fmt::Debug for Queue {
    /// Counts only: no bindings (keyed hashes of session ids).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("last_position", &self.last_position)
            .field("opened", &self.opened)
            .field("pre", &self.pre.len())
            .field("waiting", &self.waiting.len())
            .field("admitted", &self.admitted.len())
            .field("chains", &self.chains.len())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The slot of the binding's chain if it is live at `now_ms`.
    fn live_slot(&self, b: &Binding, now_ms: i64) -> Option<u32> {
        self.chains
            .slot(b)
            .filter(|&s| self.chains.get(s).live_until_ms > now_ms)
    }

    /// Drops the chain in `slot` from every index: O(log n).
    fn remove(&mut self, slot: u32) {
        let c = self.chains.remove(slot);
        match c.status() {
            Status::Pre => {
                self.pre_deadlines.remove(&Due::new(c.live_until_ms, slot));
                let i = c.slot() as usize;
                if i < self.pre.len() {
                    self.pre.swap_remove(i);
                    if let Some(&moved) = self.pre.get(i) {
                        self.chains.get_mut(moved).set_slot(c.slot());
                    }
                }
            }
            Status::Waiting => {
                // Its wheel entry finds the position vacant and goes.
                self.waiting.remove(c.slot());
                self.counts.remove(c.slot());
                if self.waiting.len() == 0 {
                    self.deadlines.clear();
                }
            }
            Status::Admitted => {
                self.admitted.remove(&Due::new(c.live_until_ms, slot));
            }
        }
    }

    /// Drops the chains whose deadline is `now_ms` or earlier, at most
    /// `limit` of them (admitted and pre-queue ones earliest deadline
    /// first, O(log n) each; waiting ones by 64 ms bucket of deadline, O(1)
    /// each), looking at no more than `limit * 8` wheel entries; returns
    /// how many, and whether none is left.
    fn expire(&mut self, now_ms: i64, limit: usize) -> (u64, bool) {
        let mut dropped = 0;
        for admitted in [true, false] {
            loop {
                let index = if admitted {
                    &self.admitted
                } else {
                    &self.pre_deadlines
                };
                let Some(&due) = index.first() else {
                    break;
                };
                let (deadline, slot) = (due.deadline_ms(), due.slot());
                if deadline > now_ms {
                    break;
                }
                if dropped as usize >= limit {
                    self.forget_passed_positions();
                    return (dropped, false);
                }
                self.remove(slot);
                dropped += 1;
            }
        }
        let done = self.expire_waiting(now_ms, limit, &mut dropped);
        self.forget_passed_positions();
        (dropped, done)
    }

    /// The waiting part of [`expire`](Self::expire): visits the wheel's
    /// due buckets in order. An entry whose place is vacant goes; one
    /// whose person is dead drops the person; one whose person lives moves
    /// to the bucket of the person's deadline, or stays if that is this
    /// bucket (the bucket of now).
    fn expire_waiting(&mut self, now_ms: i64, limit: usize, dropped: &mut u64) -> bool {
        let mut budget = limit.saturating_mul(8);
        while let Some((bucket, mut entries)) = self.deadlines.take_due(now_ms) {
            // Entries `..kept` stay; `visited..` are not visited yet.
            let mut kept = 0;
            let mut visited = 0;
            while visited < entries.len() {
                if *dropped as usize >= limit || budget == 0 {
                    entries.drain(kept..visited);
                    self.deadlines.put_back(bucket, entries);
                    return false;
                }
                budget -= 1;
                let entry = entries[visited];
                visited += 1;
                let Some((position, slot)) = self.waiting.resolve(entry) else {
                    continue;
                };
                let deadline = self.chains.get(slot).live_until_ms;
                if deadline <= now_ms {
                    self.remove(slot);
                    *dropped += 1;
                } else if bucket_of(deadline) > bucket {
                    self.deadlines.insert(deadline, position);
                } else {
                    entries[kept] = entry;
                    kept += 1;
                }
            }
            if kept > 0 {
                // Deadlines ahead in this bucket: it is the bucket of now,
                // the last one due.
                entries.truncate(kept);
                self.deadlines.put_back(bucket, entries);
                break;
            }
        }
        true
    }

    /// Lets the position counts give back the positions the front passed.
    fn forget_passed_positions(&mut self) {
        let front = match self.waiting.first() {
            Some((p, _)) => p,
            None => self.last_position.saturating_add(1),
        };
        self.counts.drop_before(front);
    }

    /// The opening (once due): the live pre-queue placed at the back in
    /// shuffled order.
    fn open_if_due(&mut self, rule: &AdmissionRule, live_ms: i64) {
        if self.opened || !rule.is_open() {
            return;
        }
        self.opened = true;
        let mut pre = std::mem::take(&mut self.pre);
        shuffle(&mut pre, rule.shuffle_seed);
        for slot in pre {
            let c = self.chains.get_mut(slot);
            // Dead: only after a mass drop-out not yet fully dropped. Out
            // of places (2⁵⁶ of them; the opening hands out the first):
            // never, but no place is ever handed out twice.
            if c.live_until_ms <= live_ms || self.last_position >= MAX_PLACE {
                // Out of `pre` already: only its deadline entry is left.
                self.pre_deadlines.remove(&Due::new(c.live_until_ms, slot));
                self.chains.remove(slot);
                continue;
            }
            self.last_position += 1;
            let position = self.last_position;
            c.set_slot(position);
            c.set_status(Status::Waiting);
            let deadline = c.live_until_ms;
            self.pre_deadlines.remove(&Due::new(deadline, slot));
            self.deadlines.insert(deadline, position);
            self.waiting.insert(position, slot);
            self.counts.insert(position);
        }
    }

    /// Everything an operation at `rule.now_ms` does first: drop the dead,
    /// open if due, admit. Liveness is judged at `live_ms` (`rule.now_ms`,
    /// or earlier during an amnesty).
    fn advance(&mut self, rule: &AdmissionRule, live_ms: i64) {
        self.expire(live_ms, EXPIRE_BATCH);
        self.open_if_due(rule, live_ms);
        self.admit(rule, live_ms);
    }

    /// Admission from the front. Dead places never use up the rate: they
    /// are normally gone already ([`expire`](Self::expire) ran first), and
    /// skipped for free otherwise (at most [`EXPIRE_BATCH`] per call).
    fn admit(&mut self, rule: &AdmissionRule, live_ms: i64) {
        let mut skipped = 0;
        self.bucket.refill(rule, self.waiting.len() as u64);
        if rule.paused() || !self.opened {
            return;
        }
        while self.bucket.tokens >= 1.0 {
            if rule
                .max_admitted
                .is_some_and(|cap| self.admitted.len() as u64 >= cap)
            {
                break;
            }
            let Some((position, slot)) = self.waiting.first() else {
                break;
            };
            let live_until_ms = self.chains.get(slot).live_until_ms;
            if live_until_ms <= live_ms {
                // Left over from a mass drop-out: skipped for free.
                self.remove(slot);
                skipped += 1;
                if skipped >= EXPIRE_BATCH {
                    break;
                }
                continue;
            }
            // Its wheel entry finds the position vacant and goes.
            self.waiting.pop_first();
            self.counts.remove(position);
            if self.waiting.len() == 0 {
                self.deadlines.clear();
            }
            self.chains.get_mut(slot).set_status(Status::Admitted);
            self.admitted.insert(Due::new(live_until_ms, slot));
            self.admitted_total += 1;
            self.bucket.take();
        }
        self.forget_passed_positions();
    }

    /// Where the chain in `slot` stands: O(log n). The people ahead are
    /// exact once [`expire`](Self::expire) dropped every dead chain; only
    /// after a mass drop-out can it count some not yet dropped (an
    /// overcount).
    fn place(&self, slot: u32) -> Place {
        let c = self.chains.get(slot);
        let (position, ahead) = match c.status() {
            Status::Pre => (0, 0),
            Status::Waiting => (c.slot(), self.counts.count_before(c.slot())),
            Status::Admitted => (c.slot(), 0),
        };
        Place {
            chain: self.chains.facts(slot),
            position,
            ahead,
            admitted: c.status() == Status::Admitted,
            live_until_ms: c.live_until_ms,
        }
    }

    fn waiting_count(&self) -> u64 {
        (self.waiting.len() + self.pre.len()) as u64
    }
}

/// The in-memory [`RoomState`]: every queue behind one mutex in this
/// process.
///
/// **Nothing survives a restart**: positions, counters, the pre-queue and
/// every chain are lost with the process. The tickets already handed out
/// are then refused anyway, because the in-memory replay store draws a new
/// epoch on start, so people must rejoin (at the back). Use a shared store
/// for more than one instance or to survive restarts.
///
/// Every operation costs O(log n) in the queue's size n, whatever the
/// position: the people ahead are counted with a Fenwick tree over the
/// positions, and the chains whose deadline passed are found from the front
/// of deadline indexes (a timer wheel for the waiting). The dead are dropped by the next operations of
/// their queue (join, heartbeat; O(log n) each), at most 1,024 per call so
/// no call holds the lock for long, which keeps "people ahead" exact (only
/// live people counted) except right after more than that many dropped out
/// at once, or more than 8,192 deadline-wheel entries came due at once
/// (after the queue sat idle: a call looks at no more than that): until
/// the following calls have caught up, the dead not yet dropped are still
/// counted (an overcount, never an undercount).
/// [`RoomState::sweep`] drops them all, in batches of 1,024 that let go of
/// the lock in between. [`RoomState::stats`] counts dead admitted chains
/// not yet dropped in O(their number).
///
/// Memory per person in line is one 72-byte chain record (the facts of its
/// latest ticket with their epoch, no ticket text), 8 to 16 bytes of
/// index, 4 bytes of place by position (8 with the ring's spare capacity; a
/// vacant 4 bytes per person who left behind the front, until the front
/// passes), and a 4-byte entry in the deadline wheel (about 6 with the
/// buckets' spare capacity; a person in the pre-queue has a 12-byte key in
/// a B-tree instead, about 30 bytes with its nodes): the `room` bench
/// prints the resident figure at a million people, and the `room_memory`
/// bench that of the whole room (replay store included) under heartbeats.
#[derive(Debug, Default)]
pub struct MemoryRoomState {
    queues: Mutex<HashMap<String, Queue>>,
    /// The room's amnesty, once shared: places whose deadline it forgives
    /// are not dropped.
    amnesty: OnceLock<Arc<Amnesty>>,
}

impl MemoryRoomState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time liveness is judged at: `now_ms`, or earlier during an
    /// amnesty (see [`Amnesty::liveness_now`]).
    fn live_ms(&self, now_ms: i64) -> i64 {
        self.amnesty
            .get()
            .map_or(now_ms, |a| a.liveness_now(now_ms))
    }

    fn with_queue<T>(&self, queue: &str, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut map = lock(&self.queues);
        if !map.contains_key(queue) {
            map.insert(queue.to_owned(), Queue::default());
        }
        f(map.get_mut(queue).expect("inserted above"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the maps consistent between statements that can
    // panic, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RoomState for MemoryRoomState {
    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        let now = self.live_ms(rule.now_ms);
        ready(Ok(self.with_queue(queue, |q| {
            q.advance(rule, now);
            let b = join.binding;
            if let Some(slot) = q.live_slot(&b, now) {
                return Joined::Existing(q.place(slot));
            }
            if let Some(dead) = q.chains.slot(&b) {
                q.remove(dead);
            }
            if join.max_waiting.is_some_and(|max| q.waiting_count() >= max) {
                return Joined::Full;
            }
            let (status, place) = if q.opened {
                // 2⁵⁶ places never run out; were they to, no place is
                // ever handed out twice.
                let position = q.last_position + 1;
                if position > MAX_PLACE {
                    return Joined::Full;
                }
                q.last_position = position;
                (Status::Waiting, position)
            } else {
                (Status::Pre, q.pre.len() as u64)
            };
            let slot = q
                .chains
                .insert(Chain::new(b, status, place, join.live_until_ms));
            match status {
                Status::Waiting => {
                    q.waiting.insert(place, slot);
                    q.counts.insert(place);
                    q.deadlines.insert(join.live_until_ms, place);
                }
                _ => {
                    q.pre.push(slot);
                    q.pre_deadlines.insert(Due::new(join.live_until_ms, slot));
                }
            }
            // The newcomer may be admitted at once if the queue is short.
            q.admit(rule, now);
            Joined::New(q.place(slot))
        })))
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        let now = self.live_ms(rule.now_ms);
        ready(Ok(self.with_queue(queue, |q| {
            q.advance(rule, now);
            let slot = q.chains.slot(&beat.binding)?;
            let c = q.chains.get(slot);
            if c.ticket_id() != Some(beat.ticket_id) {
                return None;
            }
            if c.live_until_ms <= now {
                q.remove(slot);
                return None;
            }
            Some(q.place(slot))
        })))
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_queue(queue, |q| {
            let Some(slot) = q.chains.slot(&issued.binding) else {
                return;
            };
            match q.chains.facts(slot) {
                Some(f) if f.ticket_id != issued.chain.ticket_id => return,
                // A later ticket's facts are kept (a late record of an
                // earlier one still extends the deadline).
                Some(f) if f.sequence > issued.chain.sequence => {}
                _ => q.chains.set_facts(slot, &issued.chain),
            }
            let c = q.chains.get_mut(slot);
            let old = c.live_until_ms;
            let new = old.max(issued.live_until_ms);
            c.live_until_ms = new;
            if new != old {
                // A waiting chain's wheel entry stays where it is (at or
                // before its deadline's bucket, since deadlines only grow).
                let index = match c.status() {
                    Status::Admitted => &mut q.admitted,
                    Status::Pre => &mut q.pre_deadlines,
                    Status::Waiting => return,
                };
                index.remove(&Due::new(old, slot));
                index.insert(Due::new(new, slot));
            }
        });
        ready(Ok(()))
    }

    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_queue(queue, |q| {
            if let Some(slot) = q.chains.slot(binding) {
                q.remove(slot);
            }
        });
        ready(Ok(()))
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        // In batches, letting go of the lock between them.
        let mut total = 0;
        loop {
            let live_ms = self.live_ms(now_ms);
            let (dropped, done) = self.with_queue(queue, |q| q.expire(live_ms, EXPIRE_BATCH));
            total += dropped;
            if done {
                break ready(Ok(total));
            }
        }
    }

    fn share_amnesty(&self, amnesty: Arc<Amnesty>) {
        // The first room built on this state keeps it.
        let _ = self.amnesty.set(amnesty);
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        let now_ms = self.live_ms(now_ms);
        ready(Ok(self.with_queue(queue, |q| RoomStats {
            waiting: q.waiting_count(),
            // The dead ones not yet dropped are at the front of the index.
            admitted_alive: (q.admitted.len()
                - q.admitted.range(..=Due::new(now_ms, u32::MAX)).count())
                as u64,
            admitted_total: q.admitted_total,
            entries: q.chains.len() as u64,
            last_position: q.last_position,
            opened: q.opened,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::schedule::SplitMix;
    use crate::room::state::ChainFacts;
    use crate::ticket::TicketId;

    fn facts(id: TicketId, sequence: u32) -> ChainFacts {
        ChainFacts {
            ticket_id: id,
            sequence,
            joined_at_ms: 1,
            expires_at_ms: 1_000_000_000,
            admitted_from_ms: None,
            epoch: Some(sequence ^ 0x5a5a),
        }
    }

    /// Every index agrees with the chains, and the Fenwick count of people
    /// ahead agrees with a walk over the waiting places. With `expired_at`,
    /// no chain dead at that time is left (so nobody dead is counted).
    fn check(q: &Queue, expired_at: Option<i64>) {
        if let Some(now_ms) = expired_at {
            assert!(q.chains.iter().all(|(_, c)| c.live_until_ms > now_ms));
        }
        let mut pre = 0;
        let mut waiting = 0;
        let mut admitted = 0;
        // The wheel's live entries: buckets by position.
        let mut wheel: HashMap<u64, Vec<i64>> = HashMap::new();
        for (bucket, e) in q.deadlines.iter() {
            if let Some((position, _)) = q.waiting.resolve(e) {
                wheel.entry(position).or_default().push(bucket);
            }
        }
        for (slot, c) in q.chains.iter() {
            assert_eq!(q.chains.slot(&c.binding), Some(slot), "indexed");
            match c.status() {
                Status::Pre => {
                    pre += 1;
                    assert_eq!(q.pre[c.slot() as usize], slot);
                    assert!(q.pre_deadlines.contains(&Due::new(c.live_until_ms, slot)));
                }
                Status::Waiting => {
                    waiting += 1;
                    assert_eq!(q.waiting.get(c.slot()), Some(slot));
                    // Exactly one wheel entry, at or before its deadline.
                    let entries = &wheel[&c.slot()];
                    assert_eq!(entries.len(), 1, "one wheel entry per waiting chain");
                    assert!(entries[0] <= bucket_of(c.live_until_ms));
                    let walked = q.waiting.count_before(c.slot()) as u64;
                    assert_eq!(q.place(slot).ahead, walked);
                }
                Status::Admitted => {
                    admitted += 1;
                    assert!(q.admitted.contains(&Due::new(c.live_until_ms, slot)));
                }
            }
        }
        assert_eq!(
            (pre, waiting, admitted),
            (q.pre.len(), q.waiting.len(), q.admitted.len())
        );
        assert_eq!(q.pre_deadlines.len(), pre);
        assert_eq!(q.chains.len(), pre + waiting + admitted);
    }

    fn ready<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory state is always ready"),
        }
    }

    #[test]
    fn random_operations_keep_every_index_consistent_and_ahead_exact() {
        let rng = SplitMix::new(3);
        let state = MemoryRoomState::new();
        let mut now = 1_000_000i64;
        let opens = now + 20_000;
        let who = |i: u64| Binding([(i % 200) as u8; 16]);
        let id = |i: u64| TicketId([(i % 200) as u8; 16]);
        for _ in 0..20_000u64 {
            let rule = AdmissionRule {
                now_ms: now,
                per_sec: if (now / 7_000) % 3 == 0 { 0.0 } else { 2.0 },
                burst: 2.0,
                max_admitted: Some(40),
                opens_at_ms: opens,
                shuffle_seed: 9,
            };
            let i = rng.next_u64() % 200;
            let live_until_ms = now + 500 + (rng.next_u64() % 20_000) as i64;
            let mut expired = Some(now);
            match rng.next_u64() % 8 {
                0 | 1 => {
                    let join = JoinRecord {
                        binding: who(i),
                        live_until_ms,
                        max_waiting: Some(150),
                    };
                    ready(state.join("q", &join, &rule)).unwrap();
                }
                2 | 3 => {
                    let issued = IssuedRecord {
                        binding: who(i),
                        chain: facts(id(i), (rng.next_u64() % 4) as u32),
                        live_until_ms,
                    };
                    ready(state.record("q", &issued)).unwrap();
                    expired = None;
                }
                4 | 5 => {
                    let beat = BeatRecord {
                        binding: who(i),
                        ticket_id: id(i),
                    };
                    let place = ready(state.beat("q", &beat, &rule)).unwrap();
                    if let Some(p) = place {
                        assert!(p.live_until_ms > now, "a dead chain answered");
                    }
                }
                6 => {
                    ready(state.leave("q", &who(i))).unwrap();
                    expired = None;
                }
                _ => {
                    ready(state.sweep("q", now)).unwrap();
                }
            }
            state.with_queue("q", |q| check(q, expired));
            now += (rng.next_u64() % 150) as i64;
        }
        let stats = ready(state.stats("q", now)).unwrap();
        assert!(stats.opened && stats.admitted_total > 100, "{stats:?}");
    }

    #[test]
    fn facts_come_back_and_bindings_are_never_printed() {
        let state = MemoryRoomState::new();
        let rule = AdmissionRule {
            now_ms: 0,
            per_sec: 0.0,
            burst: 1.0,
            max_admitted: None,
            opens_at_ms: 0,
            shuffle_seed: 0,
        };
        let join = JoinRecord {
            binding: Binding([4; 16]),
            live_until_ms: 10,
            max_waiting: None,
        };
        ready(state.join("q", &join, &rule)).unwrap();
        let record = |sequence, live_until_ms| IssuedRecord {
            binding: Binding([4; 16]),
            chain: facts(TicketId([5; 16]), sequence),
            live_until_ms,
        };
        ready(state.record("q", &record(3, 10))).unwrap();
        // A late record of an earlier ticket keeps the later facts.
        ready(state.record("q", &record(2, 20))).unwrap();
        match ready(state.join("q", &join, &rule)).unwrap() {
            Joined::Existing(place) => {
                assert_eq!(place.chain, Some(facts(TicketId([5; 16]), 3)));
                assert_eq!(place.live_until_ms, 20, "the deadline still moves");
            }
            other => panic!("{other:?}"),
        }
        let printed = format!("{state:?}");
        assert!(printed.contains("chains: 1"), "{printed}");
        assert!(!printed.contains("0404"), "no bindings: {printed}");
    }

    /// Issue 12 item 7: at the top of 32 bits the state overwrote a place
    /// (two people at one position, one of them lost from the line).
    #[test]
    fn places_past_32_bits_are_never_handed_out_twice() {
        let state = MemoryRoomState::new();
        let rule = AdmissionRule {
            now_ms: 0,
            per_sec: 0.0,
            burst: 1.0,
            max_admitted: None,
            opens_at_ms: 0,
            shuffle_seed: 0,
        };
        state.with_queue("q", |q| {
            q.opened = true;
            q.last_position = u64::from(u32::MAX) - 1;
            q.counts.drop_before(u64::from(u32::MAX));
        });
        let mut positions = Vec::new();
        for i in 1..=3u8 {
            let join = JoinRecord {
                binding: Binding([i; 16]),
                live_until_ms: 10,
                max_waiting: None,
            };
            match ready(state.join("q", &join, &rule)).unwrap() {
                Joined::New(place) => positions.push((place.position, place.ahead)),
                other => panic!("{other:?}"),
            }
        }
        let top = u64::from(u32::MAX);
        assert_eq!(positions, [(top, 0), (top + 1, 1), (top + 2, 2)]);
        state.with_queue("q", |q| check(q, None));
        assert_eq!(ready(state.stats("q", 0)).unwrap().waiting, 3);
        // At the last place a join is refused, never given a used place.
        state.with_queue("q", |q| q.last_position = MAX_PLACE);
        let join = JoinRecord {
            binding: Binding([9; 16]),
            live_until_ms: 10,
            max_waiting: None,
        };
        assert_eq!(ready(state.join("q", &join, &rule)).unwrap(), Joined::Full);
        state.with_queue("q", |q| check(q, None));
    }

    #[test]
    fn a_mass_drop_out_is_dropped_a_batch_per_call() {
        let state = MemoryRoomState::new();
        let rule = |now_ms| AdmissionRule {
            now_ms,
            per_sec: 0.0,
            burst: 1.0,
            max_admitted: None,
            opens_at_ms: 0,
            shuffle_seed: 0,
        };
        let who = |i: u32| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_le_bytes());
            Binding(b)
        };
        let (people, dying) = (3_000u32, 2_500u32);
        for i in 0..people {
            let join = JoinRecord {
                binding: who(i),
                live_until_ms: if i < dying { 100 } else { 10_000 },
                max_waiting: None,
            };
            ready(state.join("q", &join, &rule(10))).unwrap();
        }
        let last = JoinRecord {
            binding: who(people - 1),
            live_until_ms: 10_000,
            max_waiting: None,
        };
        let mut left = u64::from(dying);
        while left > 0 {
            let Joined::Existing(place) = ready(state.join("q", &last, &rule(200))).unwrap() else {
                panic!("live");
            };
            left -= left.min(EXPIRE_BATCH as u64);
            let entries = ready(state.stats("q", 200)).unwrap().entries;
            assert_eq!(
                entries,
                u64::from(people - dying) + left,
                "one batch per call"
            );
            assert_eq!(place.ahead, u64::from(people - dying - 1) + left);
        }
        // Sweep drops however many in one call (batch after batch).
        for i in people..2 * people {
            let join = JoinRecord {
                binding: who(i),
                live_until_ms: 300,
                max_waiting: None,
            };
            ready(state.join("q", &join, &rule(200))).unwrap();
        }
        assert_eq!(ready(state.sweep("q", 300)).unwrap(), u64::from(people));
    }

    #[test]
    fn the_dead_are_dropped_by_the_next_call_and_not_counted() {
        let state = MemoryRoomState::new();
        let rule = |now_ms| AdmissionRule {
            now_ms,
            per_sec: 0.0,
            burst: 1.0,
            max_admitted: None,
            opens_at_ms: 0,
            shuffle_seed: 0,
        };
        for i in 1..=5u8 {
            let join = JoinRecord {
                binding: Binding([i; 16]),
                live_until_ms: if i % 2 == 0 { 100 } else { 1_000 },
                max_waiting: None,
            };
            ready(state.join("q", &join, &rule(10))).unwrap();
        }
        let five = JoinRecord {
            binding: Binding([5; 16]),
            live_until_ms: 1_000,
            max_waiting: None,
        };
        let Joined::Existing(place) = ready(state.join("q", &five, &rule(100))).unwrap() else {
            panic!("5 is live");
        };
        assert_eq!((place.position, place.ahead), (5, 2), "2 and 4 died");
        let stats = ready(state.stats("q", 100)).unwrap();
        assert_eq!((stats.entries, stats.waiting), (3, 3), "already dropped");
        assert_eq!(ready(state.sweep("q", 100)).unwrap(), 0);
        assert_eq!(ready(state.sweep("q", 1_000)).unwrap(), 3);
    }
}
