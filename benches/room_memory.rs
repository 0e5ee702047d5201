//! Resident memory per waiting person in the whole in-memory room (issue
//! 15), without HTTP: a `WaitingRoom` on `MemoryRoomState` and
//! `MemoryReplayStore`, built as the demo builds it (liveness 75 s near /
//! 300 s at most, admission running), driven from two worker threads as the
//! demo's runtime is.
//!
//! `cargo bench --bench room_memory` (or run the built binary directly, to
//! try allocator settings such as `MALLOC_ARENA_MAX=2` or
//! `LD_PRELOAD=…/libjemalloc.so.2`). `ROOM_MEMORY_PEOPLE` sets the crowd
//! (default 300,000), `ROOM_MEMORY_ROUNDS` how many 150 s stretches of
//! heartbeats follow the joins (default 3). People join evenly over 150 s
//! of simulated time; each then heart-beats when the room's answer says
//! (`retry_after_ms`: 40–60 % of its deadline, so every 30–45 s near the
//! front and 120–180 s at 300 s), as the page's script does; the admitted
//! stop (their 75 s deadline passes and the sweep drops them). After the
//! joins and after each stretch (each followed by a sweep) it prints, per
//! person still waiting: the growth of the process's RSS since the empty,
//! warmed-up room; the bytes the program holds allocated (a counting
//! allocator: data, whatever the allocator; capacity, so spare capacity
//! never touched makes it exceed RSS); the replay store's own count of its
//! tables; and the room (all allocated bytes but the replay store's). RSS
//! minus allocated is what the allocator keeps resident beyond the data
//! (fragmentation, free lists, per-thread arenas), less the capacity never
//! touched.
//!
//! The client's side (every person's latest ticket, the event queue) is
//! allocated and touched before the first measurement, so it is not
//! counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queuegate::room::{MemoryRoomState, WaitingRoom};
use queuegate::{ClientTime, Clock, Issuer, KeyRing, MemoryReplayStore, Policy, Presented};

/// Bytes the program holds allocated (requested sizes).
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        ALLOCATED.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new, Ordering::Relaxed);
        ALLOCATED.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T: i64 = 1_700_000_000_000;
/// Room for one person's latest ticket on the client's side.
const TICKET_MAX: usize = 320;
/// Simulated time over which the crowd joins, and between two reports.
const PHASE_MS: i64 = 150_000;

/// The simulated clock: the time of the latest event handled.
#[derive(Clone, Default)]
struct SimClock(Arc<AtomicI64>);

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

type Room = WaitingRoom<SimClock, MemoryReplayStore, MemoryRoomState>;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

fn session(i: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&i.to_le_bytes());
    s[4..8].copy_from_slice(b"sess");
    s
}

/// The client's side, allocated and touched up front: every person's
/// latest ticket (fixed-size), and the events (time, person) by time.
struct Clients {
    tickets: Vec<u8>,
    lens: Vec<u16>,
    events: BinaryHeap<Reverse<(i64, u32)>>,
}

struct Sim {
    room: Room,
    store: Arc<MemoryReplayStore>,
    clock: SimClock,
    clients: Mutex<Clients>,
}

impl Sim {
    /// Handles events up to `until_ms`: a person without a ticket joins,
    /// one with a ticket heart-beats; a waiting answer schedules the next
    /// heartbeat at the time the room suggests, an admitted one (or a
    /// refusal) ends the person.
    async fn run(&self, until_ms: i64) {
        let mut ticket = Vec::with_capacity(TICKET_MAX);
        loop {
            let (at, i) = {
                let mut c = self.clients.lock().unwrap();
                match c.events.peek() {
                    Some(Reverse((at, _))) if *at <= until_ms => {}
                    _ => return,
                }
                let Reverse((at, i)) = c.events.pop().unwrap();
                ticket.clear();
                let len = usize::from(c.lens[i as usize]);
                ticket.extend_from_slice(&c.tickets[i as usize * TICKET_MAX..][..len]);
                (at, i)
            };
            self.clock.0.fetch_max(at, Ordering::SeqCst);
            let now = self.clock.now_ms();
            let s = session(i);
            let result = if ticket.is_empty() {
                self.room.join(&s, ClientTime::Millis(now)).await
            } else {
                self.room
                    .heartbeat(&Presented {
                        ticket: Some(&ticket),
                        binding: Some(&s),
                        client_time: ClientTime::Millis(now),
                    })
                    .await
            };
            let mut c = self.clients.lock().unwrap();
            match result {
                Ok(t) if !t.admitted => {
                    let bytes = t.ticket.as_bytes();
                    assert!(bytes.len() <= TICKET_MAX, "ticket of {} bytes", bytes.len());
                    c.tickets[i as usize * TICKET_MAX..][..bytes.len()].copy_from_slice(bytes);
                    c.lens[i as usize] = bytes.len() as u16;
                    c.events.push(Reverse((now + t.retry_after_ms as i64, i)));
                }
                // Admitted (it stops heart-beating) or refused.
                _ => c.lens[i as usize] = 0,
            }
        }
    }
}

/// Handles the events up to `until_ms` on two tasks (one per worker, as
/// the demo's runtime serves requests).
fn run(rt: &tokio::runtime::Runtime, sim: &Arc<Sim>, until_ms: i64) {
    rt.block_on(async {
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let sim = sim.clone();
                tokio::spawn(async move { sim.run(until_ms).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    sim.clock.0.fetch_max(until_ms, Ordering::SeqCst);
}

fn mallinfo() -> Option<(usize, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        // Under another allocator (LD_PRELOAD) glibc's counts are empty.
        (m.arena > 0).then_some((m.uordblks, m.fordblks))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

fn report(rt: &tokio::runtime::Runtime, what: &str, sim: &Sim, base_rss: usize, base_alloc: usize) {
    let waiting = rt.block_on(sim.room.stats()).unwrap().waiting;
    let n = waiting.max(1) as f64;
    let rss = rss_bytes().saturating_sub(base_rss) as f64;
    let alloc = ALLOCATED.load(Ordering::Relaxed).saturating_sub(base_alloc) as f64;
    let replay = sim.store.heap_bytes() as f64;
    let glibc = mallinfo()
        .map(|(used, free)| {
            format!(
                "; glibc heaps: {:.0} MiB in use, {:.0} MiB free",
                used as f64 / 1048576.0,
                free as f64 / 1048576.0
            )
        })
        .unwrap_or_default();
    println!(
        "room_memory: {what}: {waiting} waiting, {} replay records; per waiting person: RSS {:.0} B = allocated {:.0} B (room {:.0} + replay {:.0}) + allocator {:.0} B{glibc}",
        sim.store.len(),
        rss / n,
        alloc / n,
        (alloc - replay) / n,
        replay / n,
        (rss - alloc) / n,
    );
}

fn main() {
    let people = env("ROOM_MEMORY_PEOPLE", 300_000);
    let rounds = env("ROOM_MEMORY_ROUNDS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let clock = SimClock::default();
    clock.0.store(T, Ordering::SeqCst);
    let store = Arc::new(MemoryReplayStore::new());
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let issuer = Issuer::new(keys, Policy::new("crowd"), clock.clone(), store.clone()).unwrap();
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(100.0)
        .unwrap()
        .liveness(Duration::from_secs(75), Duration::from_secs(300))
        .unwrap()
        .max_waiting(1_000_000)
        .build()
        .unwrap();
    let n = people as usize;
    let mut tickets = vec![0u8; n * TICKET_MAX];
    tickets.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let mut events = BinaryHeap::with_capacity(n + 2);
    events.extend((0..n as u32 + 2).map(|i| Reverse((0, i))));
    events.clear();
    let sim = Arc::new(Sim {
        room,
        store,
        clock,
        clients: Mutex::new(Clients {
            tickets,
            lens: vec![1; n],
            events,
        }),
    });
    // Warm up: a few people join and beat, then die; the sweep drops them.
    {
        let mut c = sim.clients.lock().unwrap();
        c.lens.iter_mut().for_each(|l| *l = 0);
        for i in 0..100 {
            c.events.push(Reverse((T + i64::from(i), i)));
        }
    }
    run(&rt, &sim, T + 60_000);
    sim.clients.lock().unwrap().events.clear();
    let t0 = T + 1_000_000;
    sim.clock.0.store(t0, Ordering::SeqCst);
    rt.block_on(sim.room.sweep()).unwrap();
    sim.store.purge(t0);
    {
        let mut c = sim.clients.lock().unwrap();
        c.lens.iter_mut().for_each(|l| *l = 0);
        // The crowd arrives evenly over the first phase.
        for i in 0..people {
            let at = t0 + i64::from(i) * PHASE_MS / i64::from(people);
            c.events.push(Reverse((at, i)));
        }
    }
    let base_rss = rss_bytes();
    let base_alloc = ALLOCATED.load(Ordering::Relaxed);
    println!(
        "room_memory: {people} people joining over {} s, admitted at 100/s; empty warm room: RSS {:.1} MiB",
        PHASE_MS / 1000,
        base_rss as f64 / 1048576.0
    );
    let started = Instant::now();
    for phase in 1..=rounds + 1 {
        let until = t0 + i64::from(phase) * PHASE_MS;
        run(&rt, &sim, until);
        rt.block_on(sim.room.sweep()).unwrap();
        let what = if phase == 1 {
            "after the joins".to_owned()
        } else {
            format!("{} s later", (phase - 1) * PHASE_MS as u32 / 1000)
        };
        report(
            &rt,
            &format!("{what} and a sweep"),
            &sim,
            base_rss,
            base_alloc,
        );
    }
    println!(
        "room_memory: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
