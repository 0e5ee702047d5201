//! The key ring: keys with ids, one signing key, verify-only keys for
//! rotation, per-purpose derived keys with their HMAC state prepared once.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ConfigError;
use crate::rejection::{MalformedReason, Rejection};
use crate::ticket::{Binding, Claims, DecodedTicket, QueueId, TicketKind, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// A prepared HMAC-SHA256 key: the keyed inner and outer states are computed
/// once, and every use starts from a copy of them.
///
/// This is the crate's one MAC primitive; tickets and bindings both go
/// through it. Verification compares full 32-byte tags in constant time and
/// refuses a tag of any other length (no truncated tags).
#[derive(Clone)]
pub struct MacKey {
    state: HmacSha256,
}

impl MacKey {
    /// Prepares `key` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(key: &[u8]) -> Self {
        Self {
            state: HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"),
        }
    }

    /// The tag of the concatenation of `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut mac = self.state.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `msg`: constant time, and `false` for a
    /// tag that is not exactly 32 bytes long.
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let mut mac = self.state.clone();
        mac.update(msg);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(REDACTED)")
    }
}

/// One key of the ring with its derived, prepared keys.
#[derive(Clone)]
struct KeyEntry {
    id: u8,
    waiting: MacKey,
    admitted: MacKey,
    binding: MacKey,
}

impl KeyEntry {
    fn new(id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(ConfigError::KeyTooShort {
                key_id: id,
                len: secret.len(),
            });
        }
        let master = MacKey::new(secret);
        let derive = |purpose: &str| {
            let derived = master.tag(&[b"queuegate/1 key:", purpose.as_bytes()]);
            MacKey::new(&derived)
        };
        Ok(Self {
            id,
            waiting: derive("waiting"),
            admitted: derive("admitted"),
            binding: derive("binding"),
        })
    }

    fn ticket_key(&self, kind: TicketKind) -> &MacKey {
        match kind {
            TicketKind::Waiting => &self.waiting,
            TicketKind::Admitted => &self.admitted,
        }
    }
}

/// The keys that sign and verify tickets.
///
/// Each key has a one-byte id written into every ticket it signs. Exactly
/// one key signs; the others only verify: a new key is deployed verify-only
/// to every instance first, then made the signing key; an old key stays
/// verify-only until the longest ticket it signed has expired, then is
/// removed (retired), after which its tickets are `unknown_key`.
///
/// From each secret three keys are derived, one per purpose (waiting
/// tickets, admitted tickets, bindings), so a tag made for one purpose never
/// verifies for another. `Debug` prints key ids only.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<KeyEntry>,
    signing: usize,
}

impl KeyRing {
    /// A ring with one key, which signs.
    pub fn new(key_id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        Self::builder().signing_key(key_id, secret)?.build()
    }

    /// A ring with one key given as hexadecimal text.
    pub fn from_hex(key_id: u8, hex: &str) -> Result<Self, ConfigError> {
        Self::new(key_id, &decode_hex(hex)?)
    }

    /// A builder for a ring with several keys.
    pub fn builder() -> KeyRingBuilder {
        KeyRingBuilder::default()
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> u8 {
        self.keys[self.signing].id
    }

    /// The ids of every key that verifies (the signing key included).
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    fn entry(&self, key_id: u8) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.id == key_id)
    }

    /// Signs `claims` with the signing key. `claims.key_id` must be the
    /// signing key's id (the issuer sets it).
    pub(crate) fn sign(&self, claims: &Claims) -> [u8; TAG_LEN] {
        let key = &self.keys[self.signing];
        debug_assert_eq!(claims.key_id, key.id);
        key.ticket_key(claims.kind)
            .tag(&[&crate::ticket::mac_input(claims)])
    }

    /// Checks a decoded ticket's tag: `unknown_key` when its key id is not
    /// in the ring, `bad_signature` when the tag does not match.
    pub fn verify(&self, ticket: &DecodedTicket) -> Result<(), Rejection> {
        let key_id = ticket.key_id();
        let entry = self.entry(key_id).ok_or(Rejection::UnknownKey { key_id })?;
        let kind = ticket
            .kind()
            .ok_or(Rejection::malformed(MalformedReason::Field))?;
        if entry
            .ticket_key(kind)
            .verify(ticket.mac_input(), ticket.tag())
        {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// The binding of `material` in `queue`, under key `key_id`: the first
    /// 16 bytes of `HMAC(K_binding, queue_id || material)`. `None` if the key
    /// is not in the ring.
    pub fn bind(&self, key_id: u8, queue: QueueId, material: &[u8]) -> Option<Binding> {
        let entry = self.entry(key_id)?;
        let tag = entry.binding.tag(&[&queue.0, material]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag[..16]);
        Some(Binding(out))
    }

    /// Whether `material` is what `claims` is bound to (constant time).
    pub fn binding_matches(&self, claims: &Claims, material: &[u8]) -> bool {
        match self.bind(claims.key_id, claims.queue, material) {
            Some(b) => bool::from(b.0.ct_eq(&claims.binding.0)),
            None => false,
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_key_id", &self.signing_key_id())
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("secrets", &"REDACTED")
            .finish()
    }
}

/// Builds a [`KeyRing`] with one signing key and any number of verify-only
/// keys. Every fallible step fails at setup with a [`ConfigError`].
#[derive(Default)]
#[must_use]
pub struct KeyRingBuilder {
    keys: Vec<KeyEntry>,
    signing: Option<u8>,
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .field("signing", &self.signing)
            .field("secrets", &"REDACTED")
            .finish()
    }
}

impl KeyRingBuilder {
    /// Adds a key that only verifies.
    pub fn verify_only_key(mut self, key_id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        if self.keys.iter().any(|k| k.id == key_id) {
            return Err(ConfigError::DuplicateKeyId(key_id));
        }
        self.keys.push(KeyEntry::new(key_id, secret)?);
        Ok(self)
    }

    /// Adds a key and makes it the signing key.
    pub fn signing_key(self, key_id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        let mut this = self.verify_only_key(key_id, secret)?;
        this.signing = Some(key_id);
        Ok(this)
    }

    /// Builds the ring.
    pub fn build(self) -> Result<KeyRing, ConfigError> {
        let signing_id = self.signing.ok_or(ConfigError::NoSigningKey)?;
        let signing = self
            .keys
            .iter()
            .position(|k| k.id == signing_id)
            .ok_or(ConfigError::UnknownKeyId(signing_id))?;
        Ok(KeyRing {
            keys: self.keys,
            signing,
        })
    }
}

/// Decodes hexadecimal text (either case) into bytes.
pub fn decode_hex(hex: &str) -> Result<Vec<u8>, ConfigError> {
    let hex = hex.trim();
    if hex.len() % 2 != 0 {
        return Err(ConfigError::InvalidHex);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ConfigError::InvalidHex),
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_a_config_error() {
        assert_eq!(
            KeyRing::new(1, &[0; 31]).unwrap_err(),
            ConfigError::KeyTooShort { key_id: 1, len: 31 }
        );
        assert!(KeyRing::new(1, &[0; 32]).is_ok());
    }

    #[test]
    fn builder_rejects_duplicates_and_missing_signer() {
        let b = KeyRing::builder().verify_only_key(1, &[1; 32]).unwrap();
        assert_eq!(
            b.verify_only_key(1, &[2; 32]).unwrap_err(),
            ConfigError::DuplicateKeyId(1)
        );
        let b = KeyRing::builder().verify_only_key(1, &[1; 32]).unwrap();
        assert_eq!(b.build().unwrap_err(), ConfigError::NoSigningKey);
    }

    #[test]
    fn debug_prints_no_secret() {
        let secret = [0xAB; 32];
        let ring = KeyRing::new(3, &secret).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.to_lowercase().contains("abab"));
        assert!(!shown.contains("171"));
    }

    #[test]
    fn mac_refuses_wrong_tag_lengths() {
        let key = MacKey::new(b"key");
        let tag = key.tag(&[b"msg"]);
        assert!(key.verify(b"msg", &tag));
        for len in [0, 1, 16, 31, 33] {
            let mut t = tag.to_vec();
            t.resize(len, 0);
            if len == 33 {
                t[..32].copy_from_slice(&tag);
            }
            assert!(!key.verify(b"msg", &t), "length {len}");
        }
    }

    #[test]
    fn purposes_are_separated() {
        let entry = KeyEntry::new(1, &[7; 32]).unwrap();
        let w = entry.waiting.tag(&[b"x"]);
        assert!(!entry.admitted.verify(b"x", &w));
        assert!(!entry.binding.verify(b"x", &w));
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ffA1").unwrap(), vec![0, 255, 0xa1]);
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
