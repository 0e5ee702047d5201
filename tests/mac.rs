//! The crate's one MAC primitive, [`MacKey`], against the HMAC-SHA256 test
//! vectors of RFC 4231 (cases 1 to 7), and its refusal of any tag that is
//! not exactly 32 bytes: truncated tags (RFC 4231 case 5) are never
//! accepted, because truncated-tag verification is never used.

use queuegate::MacKey;

struct Case {
    number: u8,
    key: Vec<u8>,
    data: Vec<u8>,
    /// The full 32-byte HMAC-SHA256 (for case 5, the RFC gives only its
    /// first 16 bytes; `truncated` says so).
    mac: &'static str,
    truncated: bool,
}

fn cases() -> Vec<Case> {
    let large_key = vec![0xaa; 131];
    vec![
        Case {
            number: 1,
            key: vec![0x0b; 20],
            data: b"Hi There".to_vec(),
            mac: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            truncated: false,
        },
        Case {
            number: 2,
            key: b"Jefe".to_vec(),
            data: b"what do ya want for nothing?".to_vec(),
            mac: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            truncated: false,
        },
        Case {
            number: 3,
            key: vec![0xaa; 20],
            data: vec![0xdd; 50],
            mac: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            truncated: false,
        },
        Case {
            number: 4,
            key: (1..=25).collect(),
            data: vec![0xcd; 50],
            mac: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            truncated: false,
        },
        Case {
            number: 5,
            key: vec![0x0c; 20],
            data: b"Test With Truncation".to_vec(),
            mac: "a3b6167473100ee06e0c796c2955552b",
            truncated: true,
        },
        Case {
            number: 6,
            key: large_key.clone(),
            data: b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            mac: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            truncated: false,
        },
        Case {
            number: 7,
            key: large_key,
            data: b"This is a test using a larger than block-size key and a larger than \
                    block-size data. The key needs to be hashed before being used by the \
                    HMAC algorithm."
                .to_vec(),
            mac: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            truncated: false,
        },
    ]
}

#[test]
fn rfc_4231_vectors() {
    for case in cases() {
        let key = MacKey::new(&case.key);
        let expected = hex::decode(case.mac).unwrap();
        let tag = key.tag(&[&case.data]);
        assert_eq!(
            &tag[..expected.len()],
            &expected[..],
            "RFC 4231 case {}",
            case.number
        );
        if case.truncated {
            // Case 5: the RFC's 128-bit output is a prefix of the full
            // tag, and `verify` refuses it: truncated tags are never used.
            assert_eq!(expected.len(), 16);
            assert!(
                !key.verify(&case.data, &expected),
                "a truncated tag must be refused"
            );
            assert!(key.verify(&case.data, &tag), "the full tag verifies");
        } else {
            assert!(key.verify(&case.data, &expected), "case {}", case.number);
        }
    }
}

#[test]
fn tag_of_parts_is_tag_of_their_concatenation() {
    for case in cases() {
        let key = MacKey::new(&case.key);
        let whole = key.tag(&[&case.data]);
        for cut in 0..=case.data.len() {
            let (a, b) = case.data.split_at(cut);
            assert_eq!(key.tag(&[a, b]), whole, "case {} cut {cut}", case.number);
            assert_eq!(key.tag(&[a, &[], b]), whole);
        }
    }
}

#[test]
fn tags_of_every_wrong_length_are_refused() {
    for case in cases() {
        let key = MacKey::new(&case.key);
        let tag = key.tag(&[&case.data]);
        assert!(key.verify(&case.data, &tag));
        for len in [0usize, 1, 16, 31, 33] {
            // Built from the right tag (a correct prefix, or the right tag
            // plus one byte), so only the length is wrong.
            let mut wrong: Vec<u8> = tag.iter().copied().cycle().take(len).collect();
            if len == 33 {
                wrong[32] = 0;
            }
            assert!(
                !key.verify(&case.data, &wrong),
                "case {}: a {len}-byte tag was accepted",
                case.number
            );
        }
        // Every prefix and every extension up to 64 bytes, too.
        for len in (0..=64).filter(|&l| l != 32) {
            let wrong: Vec<u8> = tag.iter().copied().cycle().take(len).collect();
            assert!(!key.verify(&case.data, &wrong), "{len} bytes");
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_tag_is_refused() {
    for case in cases() {
        let key = MacKey::new(&case.key);
        let tag = key.tag(&[&case.data]);
        for i in 0..32 {
            for bit in 0..8 {
                let mut t = tag;
                t[i] ^= 1 << bit;
                assert!(!key.verify(&case.data, &t), "case {} byte {i}", case.number);
            }
        }
        // And a tag for other data, or under another key.
        assert!(!key.verify(b"other data", &tag));
        assert!(!MacKey::new(b"another key").verify(&case.data, &tag));
    }
}

#[test]
fn debug_never_prints_the_key() {
    let shown = format!("{:?}", MacKey::new(&[0xab; 32]));
    assert_eq!(shown, "MacKey(REDACTED)");
}
