//! Errors of setup ([`ConfigError`]) and of the state store ([`StoreError`]).

/// A setting that cannot work, reported when the layer, verifier or issuer is
/// built, never at the first request.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key shorter than 32 bytes.
    #[error("key {key_id} is {len} bytes long; keys must be at least 32 bytes")]
    KeyTooShort {
        /// The key's id.
        key_id: u8,
        /// Its length in bytes.
        len: usize,
    },
    /// Two keys with the same id.
    #[error("key id {0} is used twice in the key ring")]
    DuplicateKeyId(u8),
    /// A key id that is not in the ring.
    #[error("key id {0} is not in the key ring")]
    UnknownKeyId(u8),
    /// The ring has no key allowed to sign.
    #[error("the key ring has no signing key")]
    NoSigningKey,
    /// A secret that is not valid hexadecimal.
    #[error("the secret is not valid hexadecimal")]
    InvalidHex,
    /// Failing open on `store_unavailable` in a single-use scope could admit
    /// the same ticket twice.
    #[error("store_unavailable cannot be monitored (fail-open) in a single_use scope: it could book twice")]
    FailOpenSingleUse,
    /// Monitoring `missing`, `replayed` or `in_progress` in a single-use
    /// scope lets ticket-less, reused or concurrent bookings through; it
    /// needs `Policy::allow_monitor_on_single_use(true)`.
    #[error("{0} is monitored in a single_use scope: that lets bookings through; opt in with Policy::allow_monitor_on_single_use(true)")]
    MonitorSingleUse(&'static str),
    /// Any other setting out of its range.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// The state store failed or timed out. The verifier turns this into
/// [`Rejection::StoreUnavailable`](crate::Rejection::StoreUnavailable)
/// (fail closed) unless the policy monitors that code.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("the state store timed out")]
    Timeout,
    /// The store is at a hard capacity; it refuses rather than evicting live
    /// records (eviction would let replays through).
    #[error("the state store is at capacity")]
    Capacity,
    /// The store could not be reached or answered with an error.
    #[error("the state store failed: {0}")]
    Backend(String),
}
