//! What the fuzz targets and the seed generator share: the key, the fixed
//! server time, how a `verify` input is laid out, and the verifier.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use queuegate::{
    ClientTime, ClientTimeRule, KeyRing, ManualClock, MemoryReplayStore, Mode, Policy, Presented,
    RejectionCode, ReplayMode, Verifier,
};

/// The fuzzing key (a test key, not a secret).
pub const SECRET: [u8; 32] = [0x42; 32];
/// Its key id.
pub const KEY_ID: u8 = 1;
/// The protected queue.
pub const QUEUE: &str = "fuzz";
/// The server time of every check: 2028-02-29T23:59:59.999Z (a leap day,
/// one millisecond before midnight).
pub const NOW_MS: i64 = 1_835_481_599_999;

/// The shared key ring.
pub fn keys() -> Arc<KeyRing> {
    static KEYS: OnceLock<Arc<KeyRing>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(KeyRing::new(KEY_ID, &SECRET).expect("valid key")))
        .clone()
}

/// One `verify` input, parsed from fuzz bytes:
///
/// `[flags][n][client time: n bytes][m][binding: m bytes][ticket: the rest]`
///
/// flags bit 0: monitor every code (but `store_unavailable`); bits 1-2:
/// replay mode (0 off, 1 session, 2+ single use); bit 3: client time
/// required; bit 4: client time absent (ignore the n bytes); bit 5: no
/// ticket at all; bit 6: no binding.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub flags: u8,
    pub client_time: &'a [u8],
    pub binding: &'a [u8],
    pub ticket: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits fuzz bytes; `None` if too short to hold the header.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let n = usize::from(n).min(rest.len());
        let (client_time, rest) = rest.split_at(n);
        let (&m, rest) = rest.split_first()?;
        let m = usize::from(m).min(rest.len());
        let (binding, ticket) = rest.split_at(m);
        Some(Self {
            flags,
            client_time,
            binding,
            ticket,
        })
    }

    /// The bytes that [`parse`](Self::parse) reads back as `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.flags, self.client_time.len() as u8];
        out.extend_from_slice(self.client_time);
        out.push(self.binding.len() as u8);
        out.extend_from_slice(self.binding);
        out.extend_from_slice(self.ticket);
        out
    }

    /// The policy the flags choose.
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::new(QUEUE).replay(match (self.flags >> 1) & 0b11 {
            0 => ReplayMode::Off,
            1 => ReplayMode::Session,
            _ => ReplayMode::SingleUse,
        });
        if self.flags & 0b1000 != 0 {
            policy = policy.client_time(ClientTimeRule::Required);
        }
        if self.flags & 1 != 0 {
            // Monitoring everything on a single-use scope is refused unless
            // the host opts in; the fuzzer explores that configuration too.
            policy = policy
                .mode_all(Mode::Monitor)
                .mode_for(RejectionCode::StoreUnavailable, Mode::Enforce)
                .allow_monitor_on_single_use(true);
        }
        policy
    }

    /// What the request presents.
    pub fn presented(&self) -> Presented<'a> {
        Presented {
            ticket: (self.flags & 0b10_0000 == 0).then_some(self.ticket),
            binding: (self.flags & 0b100_0000 == 0).then_some(self.binding),
            client_time: if self.flags & 0b1_0000 != 0 {
                ClientTime::Absent
            } else {
                ClientTime::parse(self.client_time)
            },
        }
    }
}

/// A verifier for `policy` at [`NOW_MS`] over a fresh store.
pub fn verifier(policy: Policy) -> Verifier<ManualClock, MemoryReplayStore> {
    Verifier::new(
        keys(),
        policy,
        ManualClock::new(NOW_MS),
        Arc::new(MemoryReplayStore::new()),
    )
    .expect("the fuzz policy is valid")
}

/// The verifier for `input`'s policy flags, built once per process: one
/// of twelve (monitor or not, three replay modes, client time required or
/// not), all over one shared store. Building a store per input would cost
/// more than the check itself; replay state carried from input to input
/// changes which code a replayed ticket gets, not the invariants.
pub fn shared_verifier(input: &Input<'_>) -> &'static Verifier<ManualClock, MemoryReplayStore> {
    static STORE: OnceLock<Arc<MemoryReplayStore>> = OnceLock::new();
    static VERIFIERS: [OnceLock<Verifier<ManualClock, MemoryReplayStore>>; 12] =
        [const { OnceLock::new() }; 12];
    let monitor = usize::from(input.flags & 1);
    let replay = usize::from(((input.flags >> 1) & 0b11).min(2));
    let required = usize::from(input.flags & 0b1000 != 0);
    let slot = monitor * 6 + replay * 2 + required;
    VERIFIERS[slot].get_or_init(|| {
        let store = STORE.get_or_init(|| Arc::new(MemoryReplayStore::new()));
        Verifier::new(
            keys(),
            input.policy(),
            ManualClock::new(NOW_MS),
            store.clone(),
        )
        .expect("the fuzz policy is valid")
    })
}

/// Drives a future that is ready at once (the memory store's are).
pub fn now_or_never<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the memory store's future was not ready"),
    }
}
