//! Property tests of the ticket format and the verifier's structural checks
//! (threat T2, T3): the codec round-trips every claim set; every edit of a
//! valid signed ticket (bit flip, truncation, extension, re-encoding, byte
//! substitution) is refused with a structural code; no input panics.
//!
//! Case counts are modest so `cargo test` stays fast; a heavier run is
//! `PROPTEST_CASES=100000 cargo test --release --test prop_ticket`.

mod adversary;

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::prelude::*;
use queuegate::ticket::{self, Binding, Claims, QueueId, TicketId, TicketKind};
use queuegate::{
    ClientTime, ManualClock, MemoryReplayStore, Policy, Presented, RejectionCode, Verifier,
};

use adversary::*;

fn claims_strategy() -> impl Strategy<Value = Claims> {
    (
        (
            prop_oneof![Just(TicketKind::Waiting), Just(TicketKind::Admitted)],
            any::<u8>(),
            any::<[u8; 8]>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(any::<i32>()),
            any::<[u8; 16]>(),
        ),
    )
        .prop_map(
            |(
                (kind, key_id, queue, id, epoch, sequence, position),
                (joined, issued, live, admitted, expires, offset, binding),
            )| Claims {
                kind,
                key_id,
                queue: QueueId(queue),
                ticket_id: TicketId(id),
                epoch,
                sequence,
                position,
                joined_at_ms: joined,
                issued_at_ms: issued,
                live_until_ms: live,
                admitted_from_ms: admitted,
                expires_at_ms: expires,
                clock_offset_ms: offset,
                binding: Binding(binding),
            },
        )
}

/// A verifier at [`NOW_MS`] that keeps no replay state, so that checking
/// the same ticket many times has no side effect on the outcome.
fn verifier() -> Verifier<ManualClock, MemoryReplayStore> {
    Verifier::new(
        keys(),
        Policy::new(QUEUE).replay(queuegate::ReplayMode::Off),
        ManualClock::new(NOW_MS),
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap()
}

/// Claims that pass every check of [`verifier`] when bound to `b"me"`.
fn valid_claims(id: [u8; 16], sequence: u32, offset: Option<i32>) -> Claims {
    let keys = keys();
    let queue = QueueId::from_name(QUEUE);
    Claims {
        kind: TicketKind::Admitted,
        key_id: KEY_ID,
        queue,
        ticket_id: TicketId(id),
        epoch: 0,
        sequence,
        position: 1,
        joined_at_ms: NOW_MS - 60_000,
        issued_at_ms: NOW_MS - 1_000,
        live_until_ms: NOW_MS + 30_000,
        admitted_from_ms: NOW_MS - 1_000,
        expires_at_ms: NOW_MS + 600_000,
        clock_offset_ms: offset,
        binding: keys.bind(KEY_ID, queue, b"me").unwrap(),
    }
}

fn check(v: &Verifier<ManualClock, MemoryReplayStore>, text: &[u8]) -> Result<(), RejectionCode> {
    v.check(&Presented {
        ticket: Some(text),
        binding: Some(b"me"),
        client_time: ClientTime::Absent,
    })
    .map(|_| ())
    .map_err(|r| r.code())
}

/// A tampered ticket must fail before any claim is trusted: with one of the
/// structural codes, never with a claim-level one (which would mean the
/// MAC accepted it).
fn assert_structural(v: &Verifier<ManualClock, MemoryReplayStore>, text: &[u8], what: &str) {
    match check(v, text) {
        Ok(()) => panic!("{what}: a tampered ticket was accepted"),
        Err(RejectionCode::Malformed | RejectionCode::BadSignature | RejectionCode::UnknownKey) => {
        }
        Err(other) => panic!("{what}: refused only by a claim check ({other})"),
    }
}

#[test]
fn the_fixture_ticket_is_valid() {
    // The positive control for every tamper property below.
    let v = verifier();
    let text = sign(&valid_claims([7; 16], 0, Some(-250)));
    assert_eq!(check(&v, text.as_bytes()), Ok(()));
}

#[test]
fn test_signer_matches_the_issuer() {
    // The tests' signer is written from the format's definition; it must
    // produce the issuer's exact bytes, or every property here tests nothing.
    let f = Fixture::new(
        Arc::new(MemoryReplayStore::new()),
        Policy::new(QUEUE),
        ManualClock::new(NOW_MS),
    );
    for decision in [
        admit_now(std::time::Duration::from_secs(30)),
        wait(9, std::time::Duration::from_secs(30)),
    ] {
        let minted = f.join(b"me", &decision);
        assert_eq!(sign(&minted.claims), minted.ticket);
    }
}

#[test]
fn every_single_bit_flip_of_the_text_is_refused() {
    let v = verifier();
    let text = sign(&valid_claims([3; 16], 5, Some(12)));
    for i in 0..text.len() {
        for bit in 0..8 {
            let mut t = text.clone().into_bytes();
            t[i] ^= 1 << bit;
            assert_structural(&v, &t, &format!("text byte {i} bit {bit}"));
        }
    }
}

#[test]
fn every_single_bit_flip_of_the_bytes_is_refused() {
    // Flips in the decoded bytes, re-encoded canonically: these pass the
    // decoder and must be caught by the key id, the MAC or a field check.
    let v = verifier();
    let text = sign(&valid_claims([4; 16], 5, None));
    let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
    assert_eq!(bytes.len(), ticket::TICKET_LEN);
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let t = URL_SAFE_NO_PAD.encode(&b);
            assert_structural(&v, t.as_bytes(), &format!("byte {i} bit {bit}"));
        }
    }
}

#[test]
fn every_truncation_and_common_extension_is_refused() {
    let v = verifier();
    let text = sign(&valid_claims([5; 16], 0, None));
    for len in 0..text.len() {
        assert_eq!(
            check(&v, &text.as_bytes()[..len]),
            Err(RejectionCode::Malformed),
            "prefix of {len}"
        );
        assert_eq!(
            check(&v, &text.as_bytes()[text.len() - len..]),
            Err(RejectionCode::Malformed),
            "suffix of {len}"
        );
    }
    for tail in [
        &b"="[..],
        b"==",
        b"A",
        b"AAAA",
        b"\0",
        b" ",
        b"\n",
        b"\r\n",
        b";",
        b",",
    ] {
        let mut t = text.clone().into_bytes();
        t.extend_from_slice(tail);
        assert_eq!(
            check(&v, &t),
            Err(RejectionCode::Malformed),
            "tail {tail:?}"
        );
        let mut t = tail.to_vec();
        t.extend_from_slice(text.as_bytes());
        assert_eq!(
            check(&v, &t),
            Err(RejectionCode::Malformed),
            "head {tail:?}"
        );
    }
    // Two tickets glued together, and the ticket twice.
    let doubled = format!("{text}{text}");
    assert_eq!(check(&v, doubled.as_bytes()), Err(RejectionCode::Malformed));
}

#[test]
fn other_encodings_of_the_same_bytes_are_refused() {
    let v = verifier();
    // Find a valid ticket whose text uses both url-safe-only characters, so
    // that the standard alphabet really spells it differently.
    let (text, bytes) = (0u8..=255)
        .map(|i| {
            let t = sign(&valid_claims([i; 16], u32::from(i), None));
            let b = URL_SAFE_NO_PAD.decode(&t).unwrap();
            (t, b)
        })
        .find(|(t, _)| t.contains('-') && t.contains('_'))
        .expect("some ticket uses '-' and '_'");
    assert_eq!(check(&v, text.as_bytes()), Ok(()));

    let standard = STANDARD_NO_PAD.encode(&bytes);
    assert_ne!(standard, text);
    let padded_std = STANDARD.encode(&bytes);
    assert_eq!(URL_SAFE.encode(&bytes), text, "132 bytes need no padding");
    // 132 bytes encode without padding; force a padded spelling of the
    // same bytes too: split after a byte count that is not a multiple of 3.
    let split_padded = format!(
        "{}{}",
        URL_SAFE.encode(&bytes[..100]),
        URL_SAFE.encode(&bytes[100..])
    );
    assert!(split_padded.contains('='));
    let mut variants = vec![
        ("standard alphabet", standard.clone()),
        ("standard, padded", padded_std),
        ("padded pieces", split_padded),
        ("trailing '='", format!("{text}=")),
        ("percent-encoded '-'", text.replacen('-', "%2D", 1)),
        ("lower-cased", text.to_lowercase()),
        ("upper-cased", text.to_uppercase()),
        ("quoted", format!("\"{text}\"")),
        (
            "MIME line break",
            format!("{}\r\n{}", &text[..76], &text[76..]),
        ),
        ("line break", format!("{}\n{}", &text[..88], &text[88..])),
        ("inner space", format!("{} {}", &text[..88], &text[88..])),
        ("tab", format!("\t{text}")),
    ];
    // Each url-safe character swapped for its standard twin, one at a time.
    let pos_dash = text.find('-').unwrap();
    let pos_us = text.find('_').unwrap();
    let mut swap = text.clone().into_bytes();
    swap[pos_dash] = b'+';
    variants.push(("one '-' as '+'", String::from_utf8(swap).unwrap()));
    let mut swap = text.clone().into_bytes();
    swap[pos_us] = b'/';
    variants.push(("one '_' as '/'", String::from_utf8(swap).unwrap()));
    // Whitespace inserted at every position, then the last character
    // dropped so the length is right again.
    for i in 0..text.len() {
        let mut t = text.clone().into_bytes();
        t.insert(i, b' ');
        t.pop();
        variants.push(("space, same length", String::from_utf8(t).unwrap()));
    }
    for (what, t) in variants {
        assert_structural(&v, t.as_bytes(), what);
    }
}

#[test]
fn non_zero_trailing_bits_are_refused() {
    // A 132-byte ticket has no trailing bits, so the strict rule is tested
    // where it applies: a 131-byte body ends in a partial quantum whose
    // low bits the encoder writes as zero. Setting them must not decode to
    // the same bytes (base64's classic malleability).
    let v = verifier();
    let text = sign(&valid_claims([6; 16], 0, None));
    let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
    let short = URL_SAFE_NO_PAD.encode(&bytes[..131]);
    assert_eq!(short.len(), 175);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *short.as_bytes().last().unwrap();
    let last_val = alphabet.iter().position(|&c| c == last).unwrap();
    assert_eq!(last_val & 0b11, 0, "the canonical encoder leaves zero bits");
    for low in 1..4 {
        let mut t = short.clone().into_bytes();
        t[174] = alphabet[last_val | low];
        // With a 176th character those bits become data bits: every such
        // text but the original itself is refused.
        for extra in alphabet.iter() {
            let mut t = t.clone();
            t.push(*extra);
            if t != text.as_bytes() {
                assert_structural(&v, &t, "non-zero trailing bits + one more char");
            }
        }
        assert_eq!(check(&v, &t), Err(RejectionCode::Malformed));
    }
}

#[test]
fn a_retired_or_foreign_key_is_refused() {
    let v = verifier();
    let claims = valid_claims([8; 16], 0, None);
    // Same key id, other secret.
    let forged = sign_with(&[0x11; 32], &claims);
    assert_eq!(
        check(&v, forged.as_bytes()),
        Err(RejectionCode::BadSignature)
    );
    // Another key id, the right secret.
    let other_id = sign(&Claims {
        key_id: 2,
        ..claims
    });
    assert_eq!(
        check(&v, other_id.as_bytes()),
        Err(RejectionCode::UnknownKey)
    );
    // The admitted tag on a waiting ticket (purposes are separated).
    let waiting = Claims {
        kind: TicketKind::Waiting,
        ..claims
    };
    let cross = spec::sign_raw(&SECRET, "admitted", &spec::claims_bytes(&waiting));
    assert_eq!(
        check(&v, cross.as_bytes()),
        Err(RejectionCode::BadSignature)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn claims_round_trip(claims in claims_strategy(), tag in any::<[u8; 32]>()) {
        let text = ticket::encode(&claims, &tag);
        prop_assert_eq!(text.len(), ticket::ENCODED_LEN);
        let decoded = ticket::decode(text.as_bytes()).unwrap();
        prop_assert_eq!(decoded.claims().unwrap(), claims);
        prop_assert_eq!(decoded.tag(), &tag[..]);
        prop_assert_eq!(decoded.key_id(), claims.key_id);
        prop_assert_eq!(decoded.kind(), Some(claims.kind));
        // And the encoding is a function of the claims: re-encoding the
        // decoded claims gives the same text.
        prop_assert_eq!(ticket::encode(&decoded.claims().unwrap(), &tag), text);
    }

    #[test]
    fn any_byte_substitution_is_refused(
        id in any::<[u8; 16]>(),
        seq in any::<u32>(),
        offset in proptest::option::of(any::<i32>()),
        pos in 0usize..ticket::TICKET_LEN,
        byte in any::<u8>(),
    ) {
        let v = verifier();
        let text = sign(&valid_claims(id, seq, offset));
        prop_assert_eq!(check(&v, text.as_bytes()), Ok(()));
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        let t = URL_SAFE_NO_PAD.encode(&bytes);
        assert_structural(&v, t.as_bytes(), "byte substitution");
    }

    #[test]
    fn any_text_substitution_is_refused(
        id in any::<[u8; 16]>(),
        pos in 0usize..ticket::ENCODED_LEN,
        byte in any::<u8>(),
    ) {
        let v = verifier();
        let text = sign(&valid_claims(id, 1, None));
        let mut t = text.clone().into_bytes();
        prop_assume!(t[pos] != byte);
        t[pos] = byte;
        assert_structural(&v, &t, "text substitution");
    }

    #[test]
    fn any_splice_of_two_valid_tickets_is_refused(
        a in any::<[u8; 16]>(),
        b in any::<[u8; 16]>(),
        cut in 1usize..ticket::ENCODED_LEN,
    ) {
        prop_assume!(a != b);
        let v = verifier();
        let ta = sign(&valid_claims(a, 0, None));
        let tb = sign(&valid_claims(b, 0, None));
        let spliced = format!("{}{}", &ta[..cut], &tb[cut..]);
        prop_assume!(spliced != ta && spliced != tb);
        assert_structural(&v, spliced.as_bytes(), "splice");
    }

    #[test]
    fn decode_and_check_never_panic_on_arbitrary_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let v = verifier();
        if let Ok(t) = ticket::decode(&input) {
            let _ = t.claims();
        }
        prop_assert!(check(&v, &input).is_err());
    }

    #[test]
    fn check_never_panics_on_well_encoded_noise(
        mut body in any::<[u8; 132]>(),
        known_key in any::<bool>(),
    ) {
        // Bytes that pass length and encoding: the version is set so the
        // decoder accepts them, the key id often the ring's, to reach the MAC.
        body[0] = ticket::VERSION;
        if known_key {
            body[3] = KEY_ID;
        }
        let v = verifier();
        let text = URL_SAFE_NO_PAD.encode(body);
        let r = check(&v, text.as_bytes());
        prop_assert!(matches!(
            r,
            Err(RejectionCode::Malformed | RejectionCode::BadSignature | RejectionCode::UnknownKey)
        ), "{:?}", r);
    }

    #[test]
    fn validly_signed_extreme_claims_never_panic(
        claims in claims_strategy(),
        client in prop_oneof![
            Just(ClientTime::Absent),
            Just(ClientTime::Invalid),
            any::<i64>().prop_map(ClientTime::Millis),
        ],
        now in prop_oneof![Just(NOW_MS), Just(0), Just(i64::MIN), Just(i64::MAX), any::<i64>()],
        monitor in any::<bool>(),
    ) {
        // Signed with the right key: every claim-level rule runs on extreme
        // instants, offsets and sequences, in enforce and in monitor mode.
        let claims = Claims { key_id: KEY_ID, ..claims };
        let text = sign(&claims);
        let policy = Policy::new(QUEUE).replay(queuegate::ReplayMode::SingleUse);
        let policy = if monitor {
            policy
                .mode_all(queuegate::Mode::Monitor)
                .mode_for(RejectionCode::StoreUnavailable, queuegate::Mode::Enforce)
                .allow_monitor_on_single_use(true)
        } else {
            policy
        };
        let v = Verifier::new(
            keys(),
            policy,
            ManualClock::new(now),
            Arc::new(MemoryReplayStore::new()),
        ).unwrap();
        let presented = Presented {
            ticket: Some(text.as_bytes()),
            binding: Some(b"me"),
            client_time: client,
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = rt.block_on(v.verify(&presented));
        if let Err(rejection) = &r {
            // Every rejection renders without panicking.
            let _ = rejection.to_string();
            let _ = rejection.status();
        }
    }

    #[test]
    fn client_time_parse_never_panics(input in proptest::collection::vec(any::<u8>(), 0..40)) {
        let parsed = ClientTime::parse(&input);
        let digits = input.strip_prefix(b"-").unwrap_or(&input);
        let well_formed =
            !digits.is_empty() && digits.len() <= 16 && digits.iter().all(u8::is_ascii_digit);
        prop_assert_eq!(matches!(parsed, ClientTime::Millis(_)), well_formed);
    }

    #[test]
    fn client_time_round_trips(ms in -9_999_999_999_999_999i64..=9_999_999_999_999_999) {
        prop_assert_eq!(ClientTime::parse(ms.to_string().as_bytes()), ClientTime::Millis(ms));
    }
}
