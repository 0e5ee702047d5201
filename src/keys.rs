//! The key ring: keys with ids, one signing key, verify-only keys for
//! rotation, per-purpose derived keys with their HMAC state prepared once.

use std::fmt;

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ConfigError;
use crate::rejection::{MalformedReason, Rejection};
use crate::ticket::{
    Binding, Claims, DecodedTicket, QueueId, TicketKind, CLAIMS_BINDING, CLAIMS_QUEUE,
    MAC_INPUT_LEN, TAG_LEN,
};

/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// SHA-256's block size in bytes.
const BLOCK: usize = 64;
/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A prepared HMAC-SHA256 key: the keyed inner and outer states are computed
/// once, and every use starts from a copy of them.
///
/// This is the crate's one MAC primitive; tickets and bindings both go
/// through it. Verification compares full 32-byte tags in constant time and
/// refuses a tag of any other length (no truncated tags).
///
/// It is HMAC (RFC 2104) written directly over the SHA-256 compression
/// function of the `sha2` crate (which uses the CPU's SHA extensions when
/// present): the two prepared states are 64 bytes in all, whole blocks of
/// the message are compressed in place without copying, and only the last
/// partial block is buffered. The tests check it against the `hmac` crate
/// and the RFC 4231 vectors.
#[derive(Clone)]
pub struct MacKey {
    /// The state after compressing `K0 ^ ipad`.
    inner: [u32; 8],
    /// The state after compressing `K0 ^ opad`.
    outer: [u32; 8],
}

impl MacKey {
    /// Prepares `key` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(key: &[u8]) -> Self {
        let mut k0 = [0u8; BLOCK];
        if key.len() > BLOCK {
            k0[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k0[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut block = [0u8; BLOCK];
            for (b, k) in block.iter_mut().zip(k0) {
                *b = k ^ byte;
            }
            let mut state = SHA256_IV;
            compress(&mut state, &block);
            state
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// The tag of the concatenation of `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut state = self.inner;
        let mut buf = [0u8; BLOCK];
        let mut fill = 0;
        // The key block is already in the state.
        let mut total = BLOCK as u64;
        for part in parts {
            let mut rest: &[u8] = part;
            total += rest.len() as u64;
            if fill > 0 {
                let n = rest.len().min(BLOCK - fill);
                buf[fill..fill + n].copy_from_slice(&rest[..n]);
                fill += n;
                rest = &rest[n..];
                if fill < BLOCK {
                    continue;
                }
                compress(&mut state, &buf);
            }
            let mut blocks = rest.chunks_exact(BLOCK);
            for block in &mut blocks {
                compress(&mut state, block);
            }
            let tail = blocks.remainder();
            buf[..tail.len()].copy_from_slice(tail);
            fill = tail.len();
        }
        let inner = finish(state, &mut buf, fill, total);
        self.outer_tag(&inner)
    }

    /// The outer hash over an inner state: one compression.
    #[inline]
    fn outer_tag(&self, inner: &[u32; 8]) -> [u8; TAG_LEN] {
        let mut state = self.outer;
        compress(&mut state, &outer_block(inner));
        state_bytes(&state)
    }

    /// Whether `tag` is the tag of `msg`: constant time, and `false` for a
    /// tag that is not exactly 32 bytes long.
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        ct_eq_32(&self.tag(&[msg]), tag)
    }
}

/// One SHA-256 compression of a 64-byte block.
#[inline]
fn compress(state: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// Pads the last `fill` bytes in `buf` for a message of `total` bytes and
/// compresses: the final state of the hash.
#[inline]
fn finish(mut state: [u32; 8], buf: &mut [u8; BLOCK], fill: usize, total: u64) -> [u32; 8] {
    buf[fill] = 0x80;
    buf[fill + 1..].fill(0);
    if fill + 1 > BLOCK - 8 {
        compress(&mut state, buf);
        buf.fill(0);
    }
    buf[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(&mut state, buf);
    state
}

/// The last block of a message whose `tail` (at most 55 bytes) follows
/// whole blocks, `total` bytes in all: the tail, `0x80`, zeros, the length.
#[inline]
fn last_block(tail: &[u8], total: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..tail.len()].copy_from_slice(tail);
    block[tail.len()] = 0x80;
    block[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    block
}

/// The outer hash's one block: the inner digest after the key block.
#[inline]
fn outer_block(inner: &[u32; 8]) -> [u8; BLOCK] {
    last_block(&state_bytes(inner), (BLOCK + TAG_LEN) as u64)
}

/// A SHA-256 state as digest bytes (big-endian words).
#[inline]
fn state_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, word) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Constant-time equality of a 32-byte tag with `tag` (of any length):
/// the differences are folded into one word, so no branch depends on where
/// the bytes differ.
#[inline]
fn ct_eq_32(ours: &[u8; TAG_LEN], tag: &[u8]) -> bool {
    let Ok(tag) = <&[u8; TAG_LEN]>::try_from(tag) else {
        return false;
    };
    let word = |b: &[u8; TAG_LEN], i: usize| {
        u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("in range"))
    };
    let diff = (0..4).fold(0u64, |acc, i| acc | (word(ours, i) ^ word(tag, i)));
    bool::from(diff.ct_eq(&0))
}

/// A binding is the first 16 bytes of its HMAC.
#[inline]
fn binding_prefix(tag: &[u8; TAG_LEN]) -> [u8; 16] {
    tag[..16].try_into().expect("a tag is 32 bytes")
}

/// Constant-time equality of two bindings.
#[inline]
fn ct_eq_binding(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = u128::from_ne_bytes(*a) ^ u128::from_ne_bytes(*b);
    bool::from(diff.ct_eq(&0))
}

/// Bytes of the MAC input in its last inner block.
const MAC_TAIL: usize = MAC_INPUT_LEN - BLOCK;
const _: () = assert!(MAC_INPUT_LEN > BLOCK && MAC_TAIL <= BLOCK - 9);
/// The longest binding material whose binding HMAC takes one inner block
/// (queue id, material, padding): such material is bound alongside the
/// ticket's MAC (see [`KeyRing::verify_bound`]).
const SHORT_MATERIAL: usize = BLOCK - 9 - 8;

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
    /// The room key this secret gives when it is the room secret, or when
    /// the ring has no room secret and this key signs.
    room: MacKey,
    /// The door key (passes of the join door), derived beside the room key
    /// from the same secret.
    door: MacKey,
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
            room: derive("room"),
            door: derive("door"),
        })
    }

    /// The first 16 bytes of `HMAC(K_binding, queue_id || material)`.
    fn bind(&self, queue: &[u8], material: &[u8]) -> [u8; 16] {
        binding_prefix(&self.binding.tag(&[queue, material]))
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
///
/// **The room key.** The waiting room finds a person's place by a binding
/// under a fourth derived key, the room key ([`room_bind`](Self::room_bind)),
/// which must outlive every rotation: places keyed under the signing key
/// would all be lost when it rotates. Give the ring a room secret that you
/// keep across rotations ([`KeyRingBuilder::room_secret`]); without one the
/// room key is derived from the signing key, which is fine for a ring that
/// never rotates, and a [`WaitingRoom`](crate::room::WaitingRoom) refuses to
/// build on a ring of several keys without one. The room key is derived
/// from the room secret exactly as it would be from a signing key of that
/// secret, so a ring that never had a room secret can start a rotation by
/// naming its current signing secret as the room secret: places stay.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<KeyEntry>,
    signing: usize,
    room: MacKey,
    door: MacKey,
    room_secret: bool,
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
    #[cfg(test)]
    pub(crate) fn sign(&self, claims: &Claims) -> [u8; TAG_LEN] {
        debug_assert_eq!(claims.key_id, self.signing_key_id());
        self.sign_mac_input(claims.kind, &crate::ticket::mac_input(claims))
    }

    /// Signs a ticket's MAC input (label then claim bytes) of `kind` with
    /// the signing key.
    pub(crate) fn sign_mac_input(
        &self,
        kind: TicketKind,
        input: &[u8; MAC_INPUT_LEN],
    ) -> [u8; TAG_LEN] {
        self.keys[self.signing].ticket_key(kind).tag(&[input])
    }

    /// Checks a decoded ticket's tag: `unknown_key` when its key id is not
    /// in the ring, `bad_signature` when the tag does not match.
    pub fn verify(&self, ticket: &DecodedTicket) -> Result<(), Rejection> {
        let (_, key) = self.ticket_key(ticket)?;
        if key.verify(ticket.mac_input(), ticket.tag()) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// The ring entry and the ticket key a decoded ticket names:
    /// `unknown_key` when its key id is not in the ring, `malformed` when
    /// its kind byte is not a kind.
    fn ticket_key(&self, ticket: &DecodedTicket) -> Result<(&KeyEntry, &MacKey), Rejection> {
        let key_id = ticket.key_id();
        let entry = self.entry(key_id).ok_or(Rejection::UnknownKey { key_id })?;
        let kind = ticket
            .kind()
            .ok_or(Rejection::malformed(MalformedReason::Field))?;
        Ok((entry, entry.ticket_key(kind)))
    }

    /// Checks a decoded ticket's tag like [`verify`](Self::verify) and, if
    /// it is good, whether `material` is what the ticket's claims are bound
    /// to (`false` when there is no material).
    ///
    /// SHA-256 compressions with the CPU's SHA extensions are bound by
    /// latency, not throughput, so two independent ones cost little more
    /// than one. For material of at most 47 bytes (one block with the queue
    /// id) the binding HMAC's two compressions are therefore issued between
    /// the ticket MAC's three, and the binding costs a fraction of its
    /// separate price. Nothing about the binding is returned or observable
    /// unless the tag is good; the extra work for a forged ticket is
    /// constant (short material only). Longer material is bound after the
    /// tag was checked, as [`binding_matches`](Self::binding_matches) does.
    pub fn verify_bound(
        &self,
        ticket: &DecodedTicket,
        material: Option<&[u8]>,
    ) -> Result<bool, Rejection> {
        let (entry, key) = self.ticket_key(ticket)?;
        let claims = ticket.claims_bytes();
        let queue = &claims[CLAIMS_QUEUE];
        let bound: &[u8; 16] = claims[CLAIMS_BINDING].try_into().expect("fixed layout");
        let input = ticket.mac_input();
        let (tag_ok, binding_ok) = match material {
            Some(m) if m.len() <= SHORT_MATERIAL => {
                let mut b_block = [0u8; BLOCK];
                b_block[..8].copy_from_slice(queue);
                b_block[8..8 + m.len()].copy_from_slice(m);
                let b_block = last_block(&b_block[..8 + m.len()], (BLOCK + 8 + m.len()) as u64);
                let t_last = last_block(&input[BLOCK..], (BLOCK + MAC_INPUT_LEN) as u64);
                // Two independent chains, interleaved: ticket inner (2
                // blocks) then outer; binding inner (1 block) then outer.
                let mut t = key.inner;
                let mut b = entry.binding.inner;
                compress(&mut t, &input[..BLOCK]);
                compress(&mut b, &b_block);
                compress(&mut t, &t_last);
                let b_tag = binding_prefix(&entry.binding.outer_tag(&b));
                let t_tag = key.outer_tag(&t);
                (ct_eq_32(&t_tag, ticket.tag()), ct_eq_binding(&b_tag, bound))
            }
            _ => {
                let tag_ok = key.verify(input, ticket.tag());
                let binding_ok =
                    tag_ok && material.is_some_and(|m| ct_eq_binding(&entry.bind(queue, m), bound));
                (tag_ok, binding_ok)
            }
        };
        if tag_ok {
            Ok(binding_ok)
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// The binding of `material` in `queue`, under key `key_id`: the first
    /// 16 bytes of `HMAC(K_binding, queue_id || material)`. `None` if the key
    /// is not in the ring.
    pub fn bind(&self, key_id: u8, queue: QueueId, material: &[u8]) -> Option<Binding> {
        Some(Binding(self.entry(key_id)?.bind(&queue.0, material)))
    }

    /// The room binding of `material` in `queue`: the first 16 bytes of
    /// `HMAC(K_room, queue_id || material)`, under the ring's long-lived
    /// room key (see the type's docs), the same before, during and after a
    /// rotation of the signing key. It never appears in a ticket.
    pub fn room_bind(&self, queue: QueueId, material: &[u8]) -> Binding {
        Binding(binding_prefix(&self.room.tag(&[&queue.0, material])))
    }

    /// The tag of the join door's pass `parts` (see
    /// [`JoinDoor`](crate::room::JoinDoor)): under a key derived from the
    /// room secret (or the signing key without one) for this purpose only.
    pub(crate) fn door_tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        self.door.tag(parts)
    }

    /// Whether the ring was given a room secret
    /// ([`KeyRingBuilder::room_secret`]).
    pub fn has_room_secret(&self) -> bool {
        self.room_secret
    }

    /// Whether `material` is what `claims` is bound to (constant time).
    pub fn binding_matches(&self, claims: &Claims, material: &[u8]) -> bool {
        match self.bind(claims.key_id, claims.queue, material) {
            Some(b) => ct_eq_binding(&b.0, &claims.binding.0),
            None => false,
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_key_id", &self.signing_key_id())
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("room_secret", &self.room_secret)
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
    /// The room and door keys of the room secret.
    room: Option<(MacKey, MacKey)>,
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .field("signing", &self.signing)
            .field("room_secret", &self.room.is_some())
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

    /// Sets the room secret (at least 32 bytes): the long-lived secret the
    /// room key is derived from, kept the same across every rotation of the
    /// signing key (see [`KeyRing`]). It signs nothing and verifies nothing.
    pub fn room_secret(mut self, secret: &[u8]) -> Result<Self, ConfigError> {
        // Key id 0 only names the secret in a length error.
        let entry = KeyEntry::new(0, secret)?;
        self.room = Some((entry.room, entry.door));
        Ok(self)
    }

    /// Builds the ring.
    pub fn build(self) -> Result<KeyRing, ConfigError> {
        let signing_id = self.signing.ok_or(ConfigError::NoSigningKey)?;
        let signing = self
            .keys
            .iter()
            .position(|k| k.id == signing_id)
            .ok_or(ConfigError::UnknownKeyId(signing_id))?;
        let room_secret = self.room.is_some();
        let (room, door) = self.room.unwrap_or_else(|| {
            let k = &self.keys[signing];
            (k.room.clone(), k.door.clone())
        });
        Ok(KeyRing {
            keys: self.keys,
            signing,
            room,
            door,
            room_secret,
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

    /// `MacKey` against the `hmac` crate, for every key length around the
    /// block size and messages split across parts at every offset.
    #[test]
    fn mac_matches_the_hmac_crate() {
        use hmac::{Hmac, Mac};
        let reference = |key: &[u8], msg: &[u8]| -> [u8; TAG_LEN] {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(msg);
            m.finalize().into_bytes().into()
        };
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 20, 32, 55, 63, 64, 65, 100, 131] {
            let key = &data[..key_len];
            let mk = MacKey::new(key);
            for msg_len in (0..=200).chain([255, 256, 257, 300]) {
                let msg = &data[..msg_len];
                let want = reference(key, msg);
                assert_eq!(mk.tag(&[msg]), want, "key {key_len} msg {msg_len}");
                assert!(mk.verify(msg, &want));
                let split = msg_len / 3;
                let (a, rest) = msg.split_at(split);
                let (b, c) = rest.split_at(rest.len() / 2);
                assert_eq!(mk.tag(&[a, b, &[], c]), want, "split {key_len} {msg_len}");
            }
        }
    }

    /// `verify_bound` answers exactly as `verify` then `binding_matches`,
    /// for material on both sides of the one-block limit, for wrong material
    /// and for forged tags; it never reports a binding for a bad tag.
    #[test]
    fn verify_bound_agrees_with_verify_then_bind() {
        use crate::ticket::{decode, encode, TicketId};
        let ring = KeyRing::new(4, &[9; 32]).unwrap();
        let queue = QueueId::from_name("q");
        for kind in [TicketKind::Waiting, TicketKind::Admitted] {
            for len in (0..=70).chain([200, 1000]) {
                let material: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                let claims = Claims {
                    kind,
                    key_id: 4,
                    queue,
                    ticket_id: TicketId([len as u8; 16]),
                    epoch: 1,
                    sequence: 2,
                    position: 3,
                    joined_at_ms: 4,
                    issued_at_ms: 5,
                    live_until_ms: 6,
                    admitted_from_ms: 7,
                    expires_at_ms: 8,
                    clock_offset_ms: None,
                    binding: ring.bind(4, queue, &material).unwrap(),
                };
                let tag = ring.sign(&claims);
                let good = decode(encode(&claims, &tag).as_bytes()).unwrap();
                let mut forged_tag = tag;
                forged_tag[len % TAG_LEN] ^= 0x80;
                let forged = decode(encode(&claims, &forged_tag).as_bytes()).unwrap();
                let mut other = material.clone();
                other.push(0);
                for m in [
                    Some(&material[..]),
                    Some(&other[..]),
                    Some(&other[1..]),
                    None,
                ] {
                    let expected = ring
                        .verify(&good)
                        .map(|()| m.is_some_and(|m| ring.binding_matches(&claims, m)));
                    assert_eq!(ring.verify_bound(&good, m), expected, "len {len}");
                    assert_eq!(
                        ring.verify_bound(&forged, m),
                        Err(Rejection::BadSignature),
                        "len {len}"
                    );
                }
                assert_eq!(ring.verify_bound(&good, Some(&material)), Ok(true));
            }
        }
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than a block).
    #[test]
    fn mac_matches_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, want) in cases {
            let tag = MacKey::new(key).tag(&[msg]);
            assert_eq!(decode_hex(want).unwrap(), tag.to_vec());
        }
    }

    #[test]
    fn purposes_are_separated() {
        let entry = KeyEntry::new(1, &[7; 32]).unwrap();
        let w = entry.waiting.tag(&[b"x"]);
        assert!(!entry.admitted.verify(b"x", &w));
        assert!(!entry.binding.verify(b"x", &w));
        assert!(!entry.room.verify(b"x", &w));
    }

    /// The room binding is its own purpose, follows the signing key only
    /// when no room secret is given, and is the same across a rotation
    /// when one is.
    #[test]
    fn room_bindings_survive_a_rotation_with_a_room_secret() {
        let q = QueueId::from_name("q");
        let old = KeyRing::new(1, &[7; 32]).unwrap();
        assert!(!old.has_room_secret());
        assert_ne!(old.room_bind(q, b"s").0, old.bind(1, q, b"s").unwrap().0);
        let new = KeyRing::new(2, &[8; 32]).unwrap();
        assert_ne!(old.room_bind(q, b"s"), new.room_bind(q, b"s"));
        // Naming the old signing secret as the room secret keeps its room
        // bindings through every step of a rotation.
        let rings = [
            KeyRing::builder()
                .room_secret(&[7; 32])
                .unwrap()
                .signing_key(1, &[7; 32])
                .unwrap()
                .verify_only_key(2, &[8; 32])
                .unwrap()
                .build()
                .unwrap(),
            KeyRing::builder()
                .room_secret(&[7; 32])
                .unwrap()
                .signing_key(2, &[8; 32])
                .unwrap()
                .build()
                .unwrap(),
        ];
        for ring in &rings {
            assert!(ring.has_room_secret());
            assert_eq!(ring.room_bind(q, b"s"), old.room_bind(q, b"s"));
            assert_ne!(ring.room_bind(q, b"s"), ring.room_bind(q, b"t"));
        }
        assert!(matches!(
            KeyRing::builder().room_secret(&[1; 31]),
            Err(ConfigError::KeyTooShort { .. })
        ));
        assert!(format!("{:?}", rings[0]).contains("REDACTED"));
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ffA1").unwrap(), vec![0, 255, 0xa1]);
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
