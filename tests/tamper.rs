//! Tampering: every single-bit change of a ticket, truncations, extensions,
//! key rotation and retirement, and purpose separation of the derived keys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use queuegate::ticket::{self, ENCODED_LEN, TICKET_LEN};
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Minted, Policy,
    Presented, Rejection, RejectionCode, ReplayMode, TicketKind, Verifier,
};

const T0: i64 = 1_626_087_600_000;
const SESSION: &[u8] = b"session-42";
const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];
const K3: [u8; 32] = [3; 32];

fn ring(signing: (u8, &[u8]), verify_only: &[(u8, &[u8])]) -> Arc<KeyRing> {
    let mut b = KeyRing::builder();
    for (id, s) in verify_only {
        b = b.verify_only_key(*id, s).unwrap();
    }
    Arc::new(
        b.signing_key(signing.0, signing.1)
            .unwrap()
            .build()
            .unwrap(),
    )
}

struct Side {
    issuer: Issuer<ManualClock>,
    verifier: Verifier<ManualClock>,
}

/// An issuer and a verifier on `keys`, sharing a store and a clock.
fn side(keys: Arc<KeyRing>, clock: &ManualClock, store: &Arc<MemoryReplayStore>) -> Side {
    let policy = Policy::new("q");
    Side {
        issuer: Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap(),
        verifier: Verifier::new(keys, policy, clock.clone(), store.clone()).unwrap(),
    }
}

fn decision(admit: bool) -> JoinDecision {
    JoinDecision {
        position: 3,
        live_for: Duration::from_secs(60),
        estimated_wait: Duration::from_secs(30),
        admit,
    }
}

fn presented(text: &[u8]) -> Presented<'_> {
    Presented {
        ticket: Some(text),
        binding: Some(SESSION),
        client_time: ClientTime::Absent,
    }
}

/// The stateless verifier (key ring: 1 signs, 3 verifies) and a valid
/// admitted ticket signed by key 1.
fn fixture() -> (Verifier<ManualClock>, Minted) {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryReplayStore::new());
    let keys = ring((1, &K1), &[(3, &K3)]);
    let s = side(keys.clone(), &clock, &store);
    let minted = s
        .issuer
        .join(SESSION, ClientTime::Absent, &decision(true))
        .unwrap();
    let stateless =
        Verifier::new(keys, Policy::new("q").replay(ReplayMode::Off), clock, store).unwrap();
    assert!(stateless
        .check(&presented(minted.ticket.as_bytes()))
        .is_ok());
    (stateless, minted)
}

fn structural(r: &Rejection) -> bool {
    matches!(
        r.code(),
        RejectionCode::Malformed | RejectionCode::BadSignature | RejectionCode::UnknownKey
    )
}

#[test]
fn every_bit_of_the_text_matters() {
    let (v, minted) = fixture();
    let text = minted.ticket.as_bytes();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..text.len() {
        for bit in 0..8 {
            let mut t = text.to_vec();
            t[i] ^= 1 << bit;
            let r = v.check(&presented(&t)).unwrap_err();
            assert!(structural(&r), "char {i} bit {bit}: {r:?}");
            seen.insert(r.code());
        }
    }
    // Both the encoding check and the MAC did some of the refusing.
    assert!(seen.contains(&RejectionCode::Malformed));
    assert!(seen.contains(&RejectionCode::BadSignature));
}

#[test]
fn every_bit_of_the_bytes_matters() {
    let (v, minted) = fixture();
    let bytes = common::bytes_of(&minted.ticket);
    assert_eq!(bytes.len(), TICKET_LEN);
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let t = common::text_of(&b);
            let r = v.check(&presented(t.as_bytes())).unwrap_err();
            let expected = match (i, bit) {
                (0, _) => RejectionCode::Malformed,    // version
                (1, 1..) => RejectionCode::Malformed,  // kind not 0 or 1
                (3, 1) => RejectionCode::BadSignature, // key 1 -> 3: in the ring
                (3, _) => RejectionCode::UnknownKey,
                _ => RejectionCode::BadSignature,
            };
            assert_eq!(r.code(), expected, "byte {i} bit {bit}: {r:?}");
        }
    }
}

#[test]
fn truncations_and_extensions_are_malformed() {
    let (v, minted) = fixture();
    let text = minted.ticket.as_bytes();
    for len in 0..text.len() {
        let r = v.check(&presented(&text[..len])).unwrap_err();
        assert_eq!(r.code(), RejectionCode::Malformed, "prefix {len}");
        let r = v.check(&presented(&text[text.len() - len..])).unwrap_err();
        assert_eq!(r.code(), RejectionCode::Malformed, "suffix {len}");
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \n\0";
    for &c in alphabet {
        for n in 1..=4 {
            let mut t = text.to_vec();
            t.extend_from_slice(&vec![c; n]);
            assert_eq!(
                v.check(&presented(&t)).unwrap_err().code(),
                RejectionCode::Malformed
            );
            let mut t = vec![c; n];
            t.extend_from_slice(text);
            assert_eq!(
                v.check(&presented(&t)).unwrap_err().code(),
                RejectionCode::Malformed
            );
        }
    }
    // Two tickets glued together, and a very long ticket.
    let twice = [text, text].concat();
    assert_eq!(
        v.check(&presented(&twice)).unwrap_err().code(),
        RejectionCode::Malformed
    );
    let huge = text.repeat(6_000);
    assert_eq!(
        v.check(&presented(&huge)).unwrap_err().code(),
        RejectionCode::Malformed
    );
}

#[test]
fn re_encodings_are_refused() {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    use base64::Engine as _;
    let (v, minted) = fixture();
    let bytes = common::bytes_of(&minted.ticket);
    let mut refused = 0;
    for other in [
        STANDARD.encode(&bytes),
        STANDARD_NO_PAD.encode(&bytes),
        URL_SAFE.encode(&bytes),
        hex::encode(&bytes),
    ] {
        if other == minted.ticket {
            continue; // no '+' or '/' in this ticket's standard encoding
        }
        refused += 1;
        assert_eq!(
            v.check(&presented(other.as_bytes())).unwrap_err().code(),
            RejectionCode::Malformed
        );
    }
    assert!(refused >= 1);
    // Lower/upper case swaps change the bytes: the MAC refuses them.
    let swapped: String = minted
        .ticket
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    if swapped != minted.ticket {
        assert!(v.check(&presented(swapped.as_bytes())).is_err());
    }
}

#[tokio::test]
async fn key_rotation_flow() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryReplayStore::new());
    // 1. Every instance runs with key 1 signing.
    let v1 = side(ring((1, &K1), &[]), &clock, &store);
    let old = v1
        .issuer
        .join(SESSION, ClientTime::Absent, &decision(true))
        .unwrap();
    assert_eq!(old.claims.key_id, 1);
    // 2. Key 2 is deployed verify-only everywhere first.
    let v2 = side(ring((1, &K1), &[(2, &K2)]), &clock, &store);
    // 3. One instance starts signing with key 2 while others are still at step 2:
    //    they verify its tickets before they ever sign with key 2.
    let v3 = side(ring((2, &K2), &[(1, &K1)]), &clock, &store);
    let new = v3
        .issuer
        .join(SESSION, ClientTime::Absent, &decision(true))
        .unwrap();
    assert_eq!(new.claims.key_id, 2);
    assert!(v2
        .verifier
        .verify(&presented(new.ticket.as_bytes()))
        .await
        .is_ok());
    // Not on an instance that has not got key 2 at all.
    assert_eq!(
        v1.verifier
            .verify(&presented(new.ticket.as_bytes()))
            .await
            .unwrap_err(),
        Rejection::UnknownKey { key_id: 2 }
    );
    // The old-but-live key 1 still verifies on the new instance ...
    assert!(v3
        .verifier
        .verify(&presented(old.ticket.as_bytes()))
        .await
        .is_ok());
    // ... and a heartbeat there re-signs the chain with key 2, re-bound.
    clock.advance(Duration::from_secs(10));
    let current = v3.issuer.check(&presented(old.ticket.as_bytes())).unwrap();
    let renewed = v3
        .issuer
        .renew(&current, SESSION, &decision(true))
        .await
        .unwrap();
    assert_eq!(renewed.claims.key_id, 2);
    assert_eq!(renewed.claims.ticket_id, old.claims.ticket_id);
    assert!(v2
        .verifier
        .verify(&presented(renewed.ticket.as_bytes()))
        .await
        .is_ok());
    // 4. Key 1 is retired: its tickets are unknown_key.
    let v4 = side(ring((2, &K2), &[]), &clock, &store);
    assert_eq!(
        v4.verifier
            .verify(&presented(old.ticket.as_bytes()))
            .await
            .unwrap_err(),
        Rejection::UnknownKey { key_id: 1 }
    );
    assert!(v4
        .verifier
        .verify(&presented(renewed.ticket.as_bytes()))
        .await
        .is_ok());
}

#[test]
fn a_waiting_tag_never_verifies_as_admitted() {
    let (v, _) = fixture();
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryReplayStore::new());
    let s = side(ring((1, &K1), &[]), &clock, &store);
    let waiting = s
        .issuer
        .join(SESSION, ClientTime::Absent, &decision(false))
        .unwrap();
    assert_eq!(waiting.claims.kind, TicketKind::Waiting);
    // Relabel it admitted and set admitted_from to the past: the tag was
    // made under K_waiting, the verifier checks it under K_admitted.
    let mut bytes = common::bytes_of(&waiting.ticket);
    bytes[1] = 1;
    bytes[64..72].copy_from_slice(&0i64.to_be_bytes());
    let text = common::text_of(&bytes);
    assert_eq!(
        v.check(&presented(text.as_bytes())).unwrap_err(),
        Rejection::BadSignature
    );
    // The same claims tagged under each purpose: only K_admitted verifies.
    let mut claims: [u8; 100] = bytes[..100].try_into().unwrap();
    claims[1] = 1;
    for (purpose, ok) in [("waiting", false), ("binding", false), ("admitted", true)] {
        let t = common::sign_raw(&K1, purpose, &claims);
        let d = ticket::decode(t.as_bytes()).unwrap();
        assert_eq!(s.verifier.keys().verify(&d).is_ok(), ok, "{purpose}");
    }
    // And an admitted tag relabelled waiting does not verify as waiting.
    claims[1] = 0;
    let t = common::text(
        &claims,
        &common::tag_raw(&K1, "admitted", &{
            let mut a = claims;
            a[1] = 1;
            a
        }),
    );
    let d = ticket::decode(t.as_bytes()).unwrap();
    assert_eq!(s.verifier.keys().verify(&d), Err(Rejection::BadSignature));
    // The master secret itself (no derivation) never verifies either.
    let raw = common::text(&claims, &common::hmac(&K1, &[&common::mac_input(&claims)]));
    let d = ticket::decode(raw.as_bytes()).unwrap();
    assert_eq!(s.verifier.keys().verify(&d), Err(Rejection::BadSignature));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_changes_are_refused(
        flips in proptest::collection::vec((0usize..TICKET_LEN, 1u8..=255), 1..8)
    ) {
        let (v, minted) = fixture();
        let mut b = common::bytes_of(&minted.ticket);
        for (i, x) in &flips {
            b[*i] ^= x;
        }
        prop_assume!(b != common::bytes_of(&minted.ticket));
        let t = common::text_of(&b);
        let r = v.check(&presented(t.as_bytes())).unwrap_err();
        prop_assert!(structural(&r), "{:?}", r);
    }

    #[test]
    fn random_text_is_refused(text in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (v, _) = fixture();
        prop_assert!(v.check(&presented(&text)).is_err());
    }

    #[test]
    fn random_alphabet_text_of_the_right_length_is_refused(
        text in proptest::string::string_regex("[A-Za-z0-9_-]{176}").unwrap()
    ) {
        let (v, _) = fixture();
        prop_assert_eq!(text.len(), ENCODED_LEN);
        let r = v.check(&presented(text.as_bytes())).unwrap_err();
        prop_assert!(structural(&r), "{:?}", r);
    }
}
