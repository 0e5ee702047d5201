use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::clock::ms_to_datetime;

/// Whether a ticket is still waiting or has been admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketKind {
    /// Waiting in the queue: renewable by heartbeat, never accepted on a
    /// protected route.
    Waiting,
    /// Admitted: accepted on protected routes from `admitted_from` on.
    Admitted,
}

impl TicketKind {
    pub(crate) const fn to_byte(self) -> u8 {
        match self {
            Self::Waiting => 0,
            Self::Admitted => 1,
        }
    }

    pub(crate) const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Waiting),
            1 => Some(Self::Admitted),
            _ => None,
        }
    }
}

/// The 64-bit id of a queue, derived from its name.
///
/// `QueueId::from_name(n)` is the first 8 bytes of
/// `SHA-256("queuegate/1 queue:" || n)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId(pub [u8; 8]);

impl QueueId {
    /// The id of the queue named `name`.
    pub fn from_name(name: &str) -> Self {
        Self(truncated_sha256(b"queuegate/1 queue:", name.as_bytes()))
    }
}

/// The 64-bit id of a protection scope (one layer's replay records),
/// derived from its name like [`QueueId`] with the prefix
/// `"queuegate/1 scope:"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeId(pub [u8; 8]);

impl ScopeId {
    /// The id of the scope named `name`.
    pub fn from_name(name: &str) -> Self {
        Self(truncated_sha256(b"queuegate/1 scope:", name.as_bytes()))
    }
}

fn truncated_sha256(prefix: &[u8], name: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(prefix)
        .chain_update(name)
        .finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The random 128-bit id shared by every ticket of one chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(pub [u8; 16]);

impl TicketId {
    /// A fresh id from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).expect("the operating system's random source failed");
        Self(id)
    }
}

/// The keyed hash of what a ticket is bound to (16 bytes).
///
/// Computed by [`KeyRing::bind`](crate::KeyRing::bind): an HMAC under a key
/// derived for binding only, never a plain hash, because claims are signed,
/// not encrypted, and binding material (a session id, an address) can be
/// guessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding(pub [u8; 16]);

macro_rules! hex_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($ty))?;
                fmt::Display::fmt(self, f)?;
                f.write_str(")")
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    )*};
}
hex_debug!(QueueId, ScopeId, TicketId, Binding);

/// The signed contents of a ticket.
///
/// Instants are UTC milliseconds since the Unix epoch (`*_ms` fields); the
/// methods without the suffix return chrono instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Waiting or admitted.
    pub kind: TicketKind,
    /// Id of the key that signed the ticket.
    pub key_id: u8,
    /// The queue the ticket belongs to.
    pub queue: QueueId,
    /// The chain's random id.
    pub ticket_id: TicketId,
    /// The state store's per-boot epoch when the ticket was minted.
    pub epoch: u32,
    /// Position of this ticket in its chain: 0 at join, +1 per renewal.
    pub sequence: u32,
    /// Place in the queue (1 = first), so any instance can answer a
    /// heartbeat.
    pub position: u32,
    /// When the client joined.
    pub joined_at_ms: i64,
    /// When this ticket was issued: the client's last server contact.
    pub issued_at_ms: i64,
    /// The liveness deadline: the next heartbeat must arrive before it.
    pub live_until_ms: i64,
    /// Admitted tickets: when admission takes effect. Waiting tickets: the
    /// room's estimate of when the turn comes (a hint for `Retry-After`).
    pub admitted_from_ms: i64,
    /// Absolute expiry, fixed at join or admission, never extended.
    pub expires_at_ms: i64,
    /// The chain's client-clock baseline (client minus server time, ms):
    /// the largest offset measured so far, or `None` if never measured.
    pub clock_offset_ms: Option<i32>,
    /// The keyed hash of what the ticket is bound to.
    pub binding: Binding,
}

impl Claims {
    /// When the client joined.
    pub fn joined_at(&self) -> DateTime<Utc> {
        ms_to_datetime(self.joined_at_ms)
    }

    /// When this ticket was issued.
    pub fn issued_at(&self) -> DateTime<Utc> {
        ms_to_datetime(self.issued_at_ms)
    }

    /// The liveness deadline.
    pub fn live_until(&self) -> DateTime<Utc> {
        ms_to_datetime(self.live_until_ms)
    }

    /// When admission takes effect (or is estimated to, for waiting tickets).
    pub fn admitted_from(&self) -> DateTime<Utc> {
        ms_to_datetime(self.admitted_from_ms)
    }

    /// The absolute expiry.
    pub fn expires_at(&self) -> DateTime<Utc> {
        ms_to_datetime(self.expires_at_ms)
    }

    /// Whether this is an admitted ticket.
    pub fn is_admitted(&self) -> bool {
        self.kind == TicketKind::Admitted
    }
}
