//! A second implementation of the ticket format, written from `SPEC.md`
//! with the primitives only (HMAC-SHA256, SHA-256, base64url), not with the
//! crate's own encoder or key ring. Tests sign arbitrary claims with it (fixed
//! ticket ids, extreme timestamps, non-canonical bytes) and the vectors are
//! generated with it, so the crate is checked against the spec rather than
//! against itself.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use queuegate::ticket::{Binding, QueueId};
use queuegate::{Claims, TicketKind};
use sha2::{Digest, Sha256};

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `K_purpose = HMAC-SHA256(secret, "queuegate/1 key:" || purpose)`.
pub fn derive(secret: &[u8], purpose: &str) -> [u8; 32] {
    hmac(secret, &[b"queuegate/1 key:", purpose.as_bytes()])
}

fn sha256_8(prefix: &[u8], name: &str) -> [u8; 8] {
    let d = Sha256::new()
        .chain_update(prefix)
        .chain_update(name.as_bytes())
        .finalize();
    d[..8].try_into().unwrap()
}

/// First 8 bytes of `SHA-256("queuegate/1 queue:" || name)`.
pub fn queue_id(name: &str) -> QueueId {
    QueueId(sha256_8(b"queuegate/1 queue:", name))
}

/// First 8 bytes of `SHA-256("queuegate/1 scope:" || name)`.
pub fn scope_id(name: &str) -> [u8; 8] {
    sha256_8(b"queuegate/1 scope:", name)
}

/// First 16 bytes of `HMAC(K_binding, queue_id || material)`.
pub fn binding(secret: &[u8], queue: QueueId, material: &[u8]) -> Binding {
    let tag = hmac(&derive(secret, "binding"), &[&queue.0, material]);
    Binding(tag[..16].try_into().unwrap())
}

/// The purpose name of a kind's ticket key.
pub fn purpose(kind: TicketKind) -> &'static str {
    match kind {
        TicketKind::Waiting => "waiting",
        TicketKind::Admitted => "admitted",
    }
}

/// The 100 claim bytes, laid out as SPEC.md §2 says.
pub fn claims_bytes(c: &Claims) -> [u8; 100] {
    let mut b = Vec::with_capacity(100);
    b.push(1u8);
    b.push(match c.kind {
        TicketKind::Waiting => 0,
        TicketKind::Admitted => 1,
    });
    b.push(u8::from(c.clock_offset_ms.is_some()));
    b.push(c.key_id);
    b.extend_from_slice(&c.queue.0);
    b.extend_from_slice(&c.ticket_id.0);
    b.extend_from_slice(&c.epoch.to_be_bytes());
    b.extend_from_slice(&c.sequence.to_be_bytes());
    b.extend_from_slice(&c.position.to_be_bytes());
    for t in [
        c.joined_at_ms,
        c.issued_at_ms,
        c.live_until_ms,
        c.admitted_from_ms,
        c.expires_at_ms,
    ] {
        b.extend_from_slice(&t.to_be_bytes());
    }
    b.extend_from_slice(&c.clock_offset_ms.unwrap_or(0).to_be_bytes());
    b.extend_from_slice(&c.binding.0);
    b.try_into().unwrap()
}

/// The MAC input: `"queuegate/1" || claims` (111 bytes).
pub fn mac_input(claims: &[u8; 100]) -> Vec<u8> {
    let mut m = b"queuegate/1".to_vec();
    m.extend_from_slice(claims);
    m
}

/// The tag of raw claim bytes under `secret`'s key for `purpose`.
pub fn tag_raw(secret: &[u8], purpose: &str, claims: &[u8; 100]) -> [u8; 32] {
    hmac(&derive(secret, purpose), &[&mac_input(claims)])
}

/// The ticket text of raw claim bytes and a tag.
pub fn text(claims: &[u8; 100], tag: &[u8; 32]) -> String {
    let mut bytes = claims.to_vec();
    bytes.extend_from_slice(tag);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `claims` under `secret` (the key its `key_id` names) and encodes it.
pub fn sign(secret: &[u8], c: &Claims) -> String {
    let bytes = claims_bytes(c);
    text(&bytes, &tag_raw(secret, purpose(c.kind), &bytes))
}

/// Signs raw claim bytes with the key of `purpose` and encodes them.
pub fn sign_raw(secret: &[u8], purpose: &str, claims: &[u8; 100]) -> String {
    text(claims, &tag_raw(secret, purpose, claims))
}

/// Decodes ticket text to its 132 bytes (no canonical checks: tests only).
pub fn bytes_of(ticket: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(ticket).unwrap()
}

/// Encodes 132 bytes as ticket text.
pub fn text_of(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SPEC.md §10: how long a chain's replay record is kept, from the
/// `(live_until_ms, expires_at_ms)` of every ticket the store saw issued or
/// presented in the chain: the latest liveness deadline, each bounded by
/// its ticket's expiry, plus the tolerance.
pub fn retention_ms(tickets: &[(i64, i64)], tolerance_ms: i64) -> i64 {
    tickets
        .iter()
        .map(|&(live, expires)| live.min(expires))
        .max()
        .expect("at least one ticket")
        + tolerance_ms
}
