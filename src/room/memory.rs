//! The in-process room state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{ready, Future};
use std::sync::{Mutex, MutexGuard};

use super::schedule::{shuffle, AdmissionRule, TokenBucket};
use super::state::{BeatRecord, IssuedRecord, JoinRecord, Joined, Place, RoomState, RoomStats};
use crate::error::StoreError;
use crate::ticket::{Binding, TicketId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Joined before the opening; no place yet.
    Pre,
    Waiting,
    Admitted,
}

#[derive(Debug)]
struct Chain {
    ticket_id: Option<TicketId>,
    ticket: Option<String>,
    position: u32,
    status: Status,
    live_until_ms: i64,
}

#[derive(Debug, Default)]
struct Queue {
    last_position: u32,
    opened: bool,
    bucket: TokenBucket,
    admitted_total: u64,
    /// Pre-queue in join order (bindings; dead ones are skipped at opening).
    pre: Vec<Binding>,
    /// Waiting places by position.
    waiting: BTreeMap<u32, Binding>,
    /// Admitted chains by (deadline, binding).
    admitted: BTreeSet<(i64, [u8; 16])>,
    chains: HashMap<Binding, Chain>,
}

impl Queue {
    fn is_live(&self, b: &Binding, now_ms: i64) -> bool {
        self.chains.get(b).is_some_and(|c| c.live_until_ms > now_ms)
    }

    fn remove(&mut self, b: &Binding) {
        if let Some(c) = self.chains.remove(b) {
            match c.status {
                Status::Pre => self.pre.retain(|x| x != b),
                Status::Waiting => {
                    self.waiting.remove(&c.position);
                }
                Status::Admitted => {
                    self.admitted.remove(&(c.live_until_ms, b.0));
                }
            }
        }
    }

    fn open_if_due(&mut self, rule: &AdmissionRule) {
        if self.opened || !rule.is_open() {
            return;
        }
        self.opened = true;
        let mut pre = std::mem::take(&mut self.pre);
        pre.retain(|b| {
            let live = self.is_live(b, rule.now_ms);
            if !live {
                self.chains.remove(b);
            }
            live
        });
        shuffle(&mut pre, rule.shuffle_seed);
        for b in pre {
            self.last_position = self.last_position.saturating_add(1);
            let position = self.last_position;
            if let Some(c) = self.chains.get_mut(&b) {
                c.position = position;
                c.status = Status::Waiting;
                self.waiting.insert(position, b);
            }
        }
    }

    fn admit(&mut self, rule: &AdmissionRule) {
        let now = rule.now_ms;
        // Admitted chains whose deadline passed no longer hold a slot.
        while let Some(&(deadline, b)) = self.admitted.first() {
            if deadline > now {
                break;
            }
            self.admitted.pop_first();
            self.chains.remove(&Binding(b));
        }
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
            let Some((_, b)) = self.waiting.pop_first() else {
                break;
            };
            let Some(c) = self.chains.get_mut(&b) else {
                continue;
            };
            if c.live_until_ms <= now {
                // A dead place: skipped without using the rate.
                self.chains.remove(&b);
                continue;
            }
            c.status = Status::Admitted;
            self.admitted.insert((c.live_until_ms, b.0));
            self.admitted_total += 1;
            self.bucket.take();
        }
    }

    fn place(&self, b: &Binding, now_ms: i64) -> Option<Place> {
        let c = self.chains.get(b)?;
        let ahead = match c.status {
            Status::Waiting => self
                .waiting
                .range(..c.position)
                .filter(|(_, w)| self.is_live(w, now_ms))
                .count() as u64,
            _ => 0,
        };
        Some(Place {
            ticket_id: c.ticket_id,
            position: c.position,
            ahead,
            admitted: c.status == Status::Admitted,
            live_until_ms: c.live_until_ms,
        })
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
/// Counting the people ahead walks the places in front (cost grows with the
/// position); fine for a demo or a single instance of modest size.
#[derive(Debug, Default)]
pub struct MemoryRoomState {
    queues: Mutex<HashMap<String, Queue>>,
}

impl MemoryRoomState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
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
        let now = rule.now_ms;
        ready(Ok(self.with_queue(queue, |q| {
            q.open_if_due(rule);
            q.admit(rule);
            let b = join.binding;
            if q.is_live(&b, now) {
                let place = q.place(&b, now).expect("live chain exists");
                let ticket = q.chains.get(&b).and_then(|c| c.ticket.clone());
                return Joined::Existing { place, ticket };
            }
            q.remove(&b);
            if join.max_waiting.is_some_and(|max| q.waiting_count() >= max) {
                return Joined::Full;
            }
            let (status, position) = if q.opened {
                q.last_position = q.last_position.saturating_add(1);
                q.waiting.insert(q.last_position, b);
                (Status::Waiting, q.last_position)
            } else {
                q.pre.push(b);
                (Status::Pre, 0)
            };
            q.chains.insert(
                b,
                Chain {
                    ticket_id: None,
                    ticket: None,
                    position,
                    status,
                    live_until_ms: join.live_until_ms,
                },
            );
            // The newcomer may be admitted at once if the queue is short.
            q.admit(rule);
            Joined::New(q.place(&b, now).expect("just inserted"))
        })))
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        let now = rule.now_ms;
        ready(Ok(self.with_queue(queue, |q| {
            q.open_if_due(rule);
            q.admit(rule);
            let b = beat.binding;
            let c = q.chains.get(&b)?;
            if c.ticket_id != Some(beat.ticket_id) {
                return None;
            }
            if c.live_until_ms <= now {
                q.remove(&b);
                return None;
            }
            q.place(&b, now)
        })))
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_queue(queue, |q| {
            let b = issued.binding;
            let Some(c) = q.chains.get_mut(&b) else {
                return;
            };
            if c.ticket_id.is_some_and(|id| id != issued.ticket_id) {
                return;
            }
            c.ticket_id = Some(issued.ticket_id);
            c.ticket = Some(issued.ticket.to_owned());
            let old = c.live_until_ms;
            let new = old.max(issued.live_until_ms);
            c.live_until_ms = new;
            if c.status == Status::Admitted && new != old {
                q.admitted.remove(&(old, b.0));
                q.admitted.insert((new, b.0));
            }
        });
        ready(Ok(()))
    }

    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_queue(queue, |q| q.remove(binding));
        ready(Ok(()))
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.with_queue(queue, |q| {
            let dead: Vec<Binding> = q
                .chains
                .iter()
                .filter(|(_, c)| c.live_until_ms <= now_ms)
                .map(|(b, _)| *b)
                .collect();
            for b in &dead {
                q.remove(b);
            }
            dead.len() as u64
        })))
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        ready(Ok(self.with_queue(queue, |q| RoomStats {
            waiting: q.waiting_count(),
            admitted_alive: q
                .admitted
                .iter()
                .filter(|(deadline, _)| *deadline > now_ms)
                .count() as u64,
            admitted_total: q.admitted_total,
            entries: q.chains.len() as u64,
            last_position: q.last_position,
            opened: q.opened,
        })))
    }
}
