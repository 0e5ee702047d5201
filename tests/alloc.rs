//! A bad ticket costs no allocation, whatever its size (threat T2/T11).
//!
//! A counting global allocator (this file is its own test binary, so it
//! counts only this test) records every allocation made by the current
//! thread while counting is switched on; the verifier's stateless checks on
//! garbage, forged and wrong-length tickets from 10 bytes to 1 MB must
//! allocate zero bytes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use queuegate::ticket;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented,
    RejectionCode, Verifier,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator can run while thread locals are torn down.
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + size));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts, in a thread-local cell that needs no allocation itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated by this thread while running `f`.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (usize, T) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATED.with(Cell::get), out)
}

struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

const SESSION: &[u8] = b"session-42";
const T0: i64 = 1_626_087_600_000;

#[test]
fn bad_tickets_allocate_nothing() {
    // The counter works: an allocation inside the window is seen.
    let (n, v) = allocated_by(|| vec![0u8; 100]);
    assert!(n >= 100);
    drop(v);

    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryReplayStore::new());
    let keys = Arc::new(KeyRing::new(1, &[7; 32]).unwrap());
    let policy = Policy::new("q");
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let verifier = Verifier::new(keys, policy, clock.clone(), store).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(30),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let good = issuer.join(SESSION, ClientTime::Absent, &decision).unwrap();
    let waiting = issuer
        .join(
            SESSION,
            ClientTime::Absent,
            &JoinDecision {
                admit: false,
                ..decision
            },
        )
        .unwrap();

    // Every input is built before counting starts.
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for size in [10, 100, 175, 176, 177, 1_000, 4_096, 65_536, 1 << 20] {
        inputs.push((format!("garbage {size}"), vec![b'!'; size]));
        inputs.push((format!("alphabet {size}"), vec![b'A'; size]));
        if size != ticket::ENCODED_LEN {
            inputs.push((
                format!("ticket repeated to {size}"),
                good.ticket.bytes().cycle().take(size).collect(),
            ));
        }
    }
    let mut forged = common::bytes_of(&good.ticket);
    forged[50] ^= 1;
    inputs.push(("forged".into(), common::text_of(&forged).into_bytes()));
    let mut unknown = common::bytes_of(&good.ticket);
    unknown[3] = 9;
    inputs.push(("unknown key".into(), common::text_of(&unknown).into_bytes()));
    let mut version = common::bytes_of(&good.ticket);
    version[0] = 2;
    inputs.push(("version".into(), common::text_of(&version).into_bytes()));
    let mut padded = good.ticket.clone().into_bytes();
    padded.extend_from_slice(b"==");
    inputs.push(("padded".into(), padded));
    inputs.push(("waiting".into(), waiting.ticket.clone().into_bytes()));

    let waker = Waker::from(Arc::new(NoopWake));
    for (name, text) in &inputs {
        let p = Presented {
            ticket: Some(text),
            binding: Some(SESSION),
            client_time: ClientTime::Absent,
        };
        let (n, r) = allocated_by(|| verifier.check(&p));
        assert!(r.is_err(), "{name} passed");
        assert_eq!(n, 0, "{name}: check allocated {n} bytes");
        let (n, r) = allocated_by(|| ticket::decode(text));
        let _ = r;
        assert_eq!(n, 0, "{name}: decode allocated {n} bytes");
        // The whole async verify, polled by hand (no runtime in the window).
        let (n, r) = allocated_by(|| {
            let mut cx = Context::from_waker(&waker);
            let fut = pin!(verifier.verify(&p));
            match fut.poll(&mut cx) {
                Poll::Ready(r) => r,
                Poll::Pending => unreachable!("the memory store is synchronous"),
            }
        });
        assert!(r.is_err());
        assert_eq!(n, 0, "{name}: verify allocated {n} bytes");
    }

    // A valid ticket's stateless check allocates nothing either.
    let ok = Presented {
        ticket: Some(good.ticket.as_bytes()),
        binding: Some(SESSION),
        client_time: ClientTime::Absent,
    };
    let (n, r) = allocated_by(|| verifier.check(&ok));
    assert!(r.is_ok());
    assert_eq!(n, 0);

    // Misbound, stale and not-yet-admitted valid tickets: no allocation.
    let other = Presented {
        ticket: Some(good.ticket.as_bytes()),
        binding: Some(b"someone else"),
        client_time: ClientTime::parse(b"99999999999"),
    };
    let (n, r) = allocated_by(|| verifier.check(&other));
    assert_eq!(r.unwrap_err().code(), RejectionCode::BindingMismatch);
    assert_eq!(n, 0);
    clock.advance(Duration::from_secs(30));
    let stale = Presented {
        binding: Some(SESSION),
        ..other
    };
    let (n, r) = allocated_by(|| verifier.check(&stale));
    assert_eq!(r.unwrap_err().code(), RejectionCode::OfflineResumed);
    assert_eq!(n, 0);
}
