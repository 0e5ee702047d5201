//! Why a ticket was refused: [`Rejection`], its stable machine codes and
//! default HTTP statuses.

use std::fmt;

use http::StatusCode;

use crate::ticket::TicketId;

/// Why a request's queue ticket was refused.
///
/// Every variant has a stable machine-readable [`code`](Rejection::code)
/// (the strings of the threat table in `DESIGN.md`), a human message
/// (`Display`) written for the person in the queue, and the details an
/// operator needs. No variant ever carries ticket or key bytes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The request carries no ticket: the client skipped the queue.
    #[error("no queue ticket was sent: please join the queue first")]
    Missing,
    /// The ticket is not a well-formed queuegate ticket.
    #[error("the queue ticket is malformed ({reason}): please rejoin the queue")]
    Malformed {
        /// What was wrong, for operators (never the input itself).
        reason: MalformedReason,
    },
    /// The ticket's signature does not match its contents.
    #[error("the queue ticket's signature is not valid: please rejoin the queue")]
    BadSignature,
    /// The ticket names a signing key this server does not know (or retired).
    #[error("the queue ticket was signed with a key that is not in use (key {key_id})")]
    UnknownKey {
        /// The key id the ticket names.
        key_id: u8,
    },
    /// The ticket is valid but its holder has not been admitted yet.
    #[error("your turn has not come yet: please keep waiting (about {} s)", ceil_secs(*.retry_after_ms))]
    NotAdmitted {
        /// How long to wait before trying again, in milliseconds.
        retry_after_ms: u64,
    },
    /// The ticket is past its absolute expiry.
    #[error("the queue ticket has expired: please rejoin the queue")]
    Expired {
        /// How long ago it expired, in milliseconds (0 = exactly now).
        expired_for_ms: u64,
    },
    /// The ticket's liveness deadline passed: the client went offline (or
    /// stopped its heartbeat) and resumed with a stale ticket.
    #[error("the queue lost contact with this device for too long: please rejoin the queue")]
    OfflineResumed {
        /// How far past the deadline, in milliseconds (0 = exactly at it).
        late_by_ms: u64,
    },
    /// The ticket was already used (single-use) or is an older copy of a
    /// chain that has moved on (a clone on another device).
    #[error("{}", .reason.message())]
    Replayed {
        /// Which kind of replay.
        reason: ReplayReason,
        /// The chain's id (not a credential: it cannot be presented), so a
        /// host can answer a retried single-use request by the same client
        /// with the result of the first one.
        ticket_id: TicketId,
    },
    /// The client's clock is too far from the server's.
    #[error("your device clock is {} off: please set it to the correct time", human_ms(.offset_ms.unsigned_abs()))]
    ClockSkew {
        /// Client time minus server time when the request arrived, in ms.
        offset_ms: i64,
        /// The tolerance that was exceeded, in ms.
        tolerance_ms: u64,
    },
    /// The client's clock moved since the ticket was issued. The words
    /// blame nobody: an honest automatic time correction (NTP) moves a
    /// clock too, and rejoining keeps the place (the chain is re-minted
    /// with the new clock as its baseline).
    #[error("your device clock moved by {} while you waited (an automatic time correction can do this): rejoin the queue to keep your place", human_ms(.moved_ms.unsigned_abs()))]
    ClockJump {
        /// How far the client's clock moved against its baseline, in ms
        /// (positive = forward).
        moved_ms: i64,
        /// The tolerance that was exceeded, in ms.
        tolerance_ms: u64,
    },
    /// The ticket belongs to another client (shared, sold or stolen).
    #[error("this queue ticket belongs to another device or session")]
    BindingMismatch,
    /// The ticket is for another queue or event.
    #[error("this queue ticket is for a different queue")]
    WrongQueue,
    /// The shared state store could not be reached; failing closed.
    #[error("the queue is briefly unavailable: please retry in a few seconds")]
    StoreUnavailable {
        /// How long to wait before retrying, in milliseconds.
        retry_after_ms: u64,
    },
    /// Another request with this ticket is being handled in a single-use
    /// scope (it holds the chain): this one may be retried once that one is
    /// settled or its hold expired.
    #[error("this request is already being processed: please wait about {} s before trying again", ceil_secs(*.retry_after_ms))]
    InProgress {
        /// How long until the other request's hold expires, in
        /// milliseconds.
        retry_after_ms: u64,
    },
}

/// What made a ticket malformed. Stable, short, safe to log.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedReason {
    /// The text has the wrong length for any known ticket format.
    Length,
    /// The text is not canonical unpadded base64url.
    Encoding,
    /// The format version is not one this library reads.
    Version,
    /// A field holds a value the format does not allow.
    Field,
    /// More than one ticket was presented (two headers, or a header and a
    /// cookie that disagree): which one is meant is ambiguous.
    Ambiguous,
    /// The client-time header is not Unix epoch milliseconds.
    ClientTime,
    /// The policy requires a client-time header and none was sent.
    ClientTimeMissing,
}

impl MalformedReason {
    /// A short stable description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "wrong length",
            Self::Encoding => "not canonical base64url",
            Self::Version => "unknown format version",
            Self::Field => "invalid field value",
            Self::Ambiguous => "more than one ticket presented",
            Self::ClientTime => "client time is not epoch milliseconds",
            Self::ClientTimeMissing => "client time header required",
        }
    }
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of replay was detected.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayReason {
    /// A newer ticket of the same chain has been issued and this older copy
    /// is past its renewal grace (a clone, or a replayed capture).
    StaleSequence,
    /// A single-use scope already consumed this chain (a handler succeeded),
    /// and this request is the chain's own client (its binding check
    /// passed, whatever key its ticket was minted under): typically a
    /// retried request whose response was lost. A host may answer it with
    /// the result of the first request.
    ConsumedBySameClient,
    /// A single-use scope consumed or holds this chain, and this request's
    /// binding check failed (possible only with `binding_mismatch`
    /// monitored): someone else.
    ConsumedByOtherClient,
    /// The ticket was minted before the state store last started empty (an
    /// in-memory store after a restart), or its record may have been
    /// dropped by a clock that read later than this server's (a clock
    /// stepped back): what it did before is unknown.
    StateReset,
}

impl ReplayReason {
    fn message(self) -> &'static str {
        match self {
            Self::StaleSequence => {
                "this queue ticket was replaced by a newer one: use the latest ticket or rejoin"
            }
            Self::ConsumedBySameClient => "this queue ticket was already used for this action",
            Self::ConsumedByOtherClient => "this queue ticket was already used by someone else",
            Self::StateReset => "the queue was restarted: please rejoin the queue",
        }
    }
}

/// The stable machine code of a [`Rejection`], one per variant.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectionCode {
    /// `missing`
    Missing,
    /// `malformed`
    Malformed,
    /// `bad_signature`
    BadSignature,
    /// `unknown_key`
    UnknownKey,
    /// `not_admitted`
    NotAdmitted,
    /// `expired`
    Expired,
    /// `offline_resumed`
    OfflineResumed,
    /// `replayed`
    Replayed,
    /// `clock_skew`
    ClockSkew,
    /// `clock_jump`
    ClockJump,
    /// `binding_mismatch`
    BindingMismatch,
    /// `wrong_queue`
    WrongQueue,
    /// `store_unavailable`
    StoreUnavailable,
    /// `in_progress`
    InProgress,
}

impl RejectionCode {
    /// How many codes there are.
    pub const COUNT: usize = 14;

    /// Every code, in a stable order (the order of [`index`](Self::index)).
    pub const ALL: [RejectionCode; Self::COUNT] = [
        Self::Missing,
        Self::Malformed,
        Self::BadSignature,
        Self::UnknownKey,
        Self::NotAdmitted,
        Self::Expired,
        Self::OfflineResumed,
        Self::Replayed,
        Self::ClockSkew,
        Self::ClockJump,
        Self::BindingMismatch,
        Self::WrongQueue,
        Self::StoreUnavailable,
        Self::InProgress,
    ];

    /// The machine code, e.g. `"replayed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::NotAdmitted => "not_admitted",
            Self::Expired => "expired",
            Self::OfflineResumed => "offline_resumed",
            Self::Replayed => "replayed",
            Self::ClockSkew => "clock_skew",
            Self::ClockJump => "clock_jump",
            Self::BindingMismatch => "binding_mismatch",
            Self::WrongQueue => "wrong_queue",
            Self::StoreUnavailable => "store_unavailable",
            Self::InProgress => "in_progress",
        }
    }

    /// A dense index in `0..COUNT`, for per-code tables and counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code for a machine string, if it is one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The default HTTP status for this code.
    ///
    /// `malformed` is 400, `not_admitted` 429 (with `Retry-After`),
    /// `replayed` 409, `in_progress` 409 (with `Retry-After`),
    /// `store_unavailable` 503 (with `Retry-After`), and every other
    /// refusal 403.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::NotAdmitted => StatusCode::TOO_MANY_REQUESTS,
            Self::Replayed | Self::InProgress => StatusCode::CONFLICT,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// A short title for this code (RFC 9457 `title`).
    pub const fn title(self) -> &'static str {
        match self {
            Self::Missing => "Queue ticket missing",
            Self::Malformed => "Queue ticket malformed",
            Self::BadSignature => "Queue ticket signature invalid",
            Self::UnknownKey => "Queue ticket key unknown",
            Self::NotAdmitted => "Not admitted yet",
            Self::Expired => "Queue ticket expired",
            Self::OfflineResumed => "Queue contact lost",
            Self::Replayed => "Queue ticket already used",
            Self::ClockSkew => "Device clock is wrong",
            Self::ClockJump => "Device clock moved",
            Self::BindingMismatch => "Queue ticket belongs to someone else",
            Self::WrongQueue => "Queue ticket for another queue",
            Self::StoreUnavailable => "Queue state unavailable",
            Self::InProgress => "Request already in progress",
        }
    }
}

impl fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Rejection {
    /// The stable machine code.
    pub const fn code(&self) -> RejectionCode {
        match self {
            Self::Missing => RejectionCode::Missing,
            Self::Malformed { .. } => RejectionCode::Malformed,
            Self::BadSignature => RejectionCode::BadSignature,
            Self::UnknownKey { .. } => RejectionCode::UnknownKey,
            Self::NotAdmitted { .. } => RejectionCode::NotAdmitted,
            Self::Expired { .. } => RejectionCode::Expired,
            Self::OfflineResumed { .. } => RejectionCode::OfflineResumed,
            Self::Replayed { .. } => RejectionCode::Replayed,
            Self::ClockSkew { .. } => RejectionCode::ClockSkew,
            Self::ClockJump { .. } => RejectionCode::ClockJump,
            Self::BindingMismatch => RejectionCode::BindingMismatch,
            Self::WrongQueue => RejectionCode::WrongQueue,
            Self::StoreUnavailable { .. } => RejectionCode::StoreUnavailable,
            Self::InProgress { .. } => RejectionCode::InProgress,
        }
    }

    /// The default HTTP status (see [`RejectionCode::status`]).
    pub const fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// How long the client should wait before retrying, for the codes where
    /// waiting helps (`not_admitted`, `store_unavailable`, `in_progress`).
    pub const fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::NotAdmitted { retry_after_ms }
            | Self::StoreUnavailable { retry_after_ms }
            | Self::InProgress { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        }
    }

    pub(crate) const fn malformed(reason: MalformedReason) -> Self {
        Self::Malformed { reason }
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// "4 minutes", "20 seconds", "1 hour": how a person reads a clock error,
/// rounded to the nearest unit (an offset of 59 min 59.9 s reads "1 hour").
fn human_ms(ms: u64) -> String {
    const SEC: u64 = 1_000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    let round = |unit: u64| ms.saturating_add(unit / 2) / unit;
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if round(SEC) < 120 {
        plural(round(SEC).max(1), "second")
    } else if round(MIN) < 60 {
        plural(round(MIN), "minute")
    } else if round(HOUR) < 48 {
        plural(round(HOUR), "hour")
    } else {
        plural(round(DAY), "day")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_dense() {
        let names: Vec<_> = RejectionCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "missing",
                "malformed",
                "bad_signature",
                "unknown_key",
                "not_admitted",
                "expired",
                "offline_resumed",
                "replayed",
                "clock_skew",
                "clock_jump",
                "binding_mismatch",
                "wrong_queue",
                "store_unavailable",
                "in_progress"
            ]
        );
        for (i, code) in RejectionCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
            assert_eq!(RejectionCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(RejectionCode::parse("nope"), None);
    }

    #[test]
    fn messages_speak_plainly() {
        let skew = Rejection::ClockSkew {
            offset_ms: -4 * 60_000 - 10,
            tolerance_ms: 60_000,
        };
        assert_eq!(
            skew.to_string(),
            "your device clock is 4 minutes off: please set it to the correct time"
        );
        let hour = Rejection::ClockSkew {
            offset_ms: 3_599_941,
            tolerance_ms: 300_000,
        };
        assert!(hour.to_string().contains("is 1 hour off"), "{hour}");
        let jump = Rejection::ClockJump {
            moved_ms: 20_000,
            tolerance_ms: 5_000,
        };
        assert_eq!(
            jump.to_string(),
            "your device clock moved by 20 seconds while you waited (an automatic time correction can do this): rejoin the queue to keep your place"
        );
        let wait = Rejection::NotAdmitted {
            retry_after_ms: 1_500,
        };
        assert!(wait.to_string().contains("about 2 s"));
        assert_eq!(wait.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(wait.retry_after_ms(), Some(1_500));
        assert_eq!(Rejection::Missing.retry_after_ms(), None);
        assert_eq!(
            Rejection::StoreUnavailable { retry_after_ms: 1 }.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
