use super::claims::{Binding, Claims, QueueId, TicketId, TicketKind};
use crate::rejection::{MalformedReason, Rejection};

/// The format version this library writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of claims in a version-1 ticket.
pub const CLAIMS_LEN: usize = 100;
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes of a decoded ticket: claims then tag.
pub const TICKET_LEN: usize = CLAIMS_LEN + TAG_LEN;
/// Characters of an encoded ticket (unpadded base64url of [`TICKET_LEN`]
/// bytes; 132 is a multiple of 3, so there are no trailing bits).
pub const ENCODED_LEN: usize = TICKET_LEN / 3 * 4;
/// The domain-separation label that starts every MAC input.
pub const DOMAIN_LABEL: &[u8; 11] = b"queuegate/1";
/// Bytes of the MAC input: label then claims. At most 119, so the inner
/// SHA-256 of HMAC takes two compressions after the key block.
pub const MAC_INPUT_LEN: usize = DOMAIN_LABEL.len() + CLAIMS_LEN;

const _: () = assert!(MAC_INPUT_LEN <= 119);
const _: () = assert!(ENCODED_LEN == 176);

/// Where the queue id lies in the claims.
pub(crate) const CLAIMS_QUEUE: std::ops::Range<usize> = 4..12;
/// Where the binding lies in the claims.
pub(crate) const CLAIMS_BINDING: std::ops::Range<usize> = 84..100;

const FLAG_OFFSET_MEASURED: u8 = 0b0000_0001;
const LABEL: usize = DOMAIN_LABEL.len();

/// A ticket decoded from its text but not yet authenticated.
///
/// It holds the bytes `label || claims || tag` contiguously, so the MAC
/// input is one slice. Its claims must not be trusted before the tag was
/// verified; [`claims`](Self::claims) parses them without any check of
/// authenticity.
#[derive(Clone)]
pub struct DecodedTicket {
    buf: [u8; LABEL + TICKET_LEN + SPARE],
}

impl std::fmt::Debug for DecodedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes of a ticket are a bearer credential: never print them.
        f.write_str("DecodedTicket(REDACTED)")
    }
}

impl DecodedTicket {
    /// The format version byte.
    pub fn version(&self) -> u8 {
        self.buf[LABEL]
    }

    /// The kind byte, parsed.
    pub fn kind(&self) -> Option<TicketKind> {
        TicketKind::from_byte(self.buf[LABEL + 1])
    }

    /// The key id byte.
    pub fn key_id(&self) -> u8 {
        self.buf[LABEL + 3]
    }

    /// The exact bytes the MAC covers: [`DOMAIN_LABEL`] then the claims.
    pub fn mac_input(&self) -> &[u8] {
        &self.buf[..MAC_INPUT_LEN]
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        &self.buf[MAC_INPUT_LEN..MAC_INPUT_LEN + TAG_LEN]
    }

    /// The claims bytes.
    pub fn claims_bytes(&self) -> &[u8; CLAIMS_LEN] {
        self.buf[LABEL..MAC_INPUT_LEN]
            .try_into()
            .expect("fixed layout")
    }

    /// Parses the claims (structure only, no authenticity).
    #[inline]
    pub fn claims(&self) -> Result<Claims, Rejection> {
        parse_claims(self.claims_bytes())
    }
}

/// Decodes ticket text into bytes: the exact length first, then strict
/// base64url (no padding, no `+` or `/`, no whitespace), then the version.
///
/// Costs no allocation whatever the input; input of the wrong length is
/// refused before any byte is read.
#[inline]
pub fn decode(text: &[u8]) -> Result<DecodedTicket, Rejection> {
    if text.len() != ENCODED_LEN {
        return Err(Rejection::malformed(MalformedReason::Length));
    }
    let text: &[u8; ENCODED_LEN] = text.try_into().expect("length checked");
    let mut buf = [0u8; LABEL + TICKET_LEN + SPARE];
    buf[..LABEL].copy_from_slice(DOMAIN_LABEL);
    let out = (&mut buf[LABEL..]).try_into().expect("fixed layout");
    if !decode_base64url(text, out) {
        return Err(Rejection::malformed(MalformedReason::Encoding));
    }
    let ticket = DecodedTicket { buf };
    if ticket.version() != VERSION {
        return Err(Rejection::malformed(MalformedReason::Version));
    }
    Ok(ticket)
}

/// Bytes after the ticket in a decoding buffer: the decoder stores eight
/// bytes at a time, six of them decoded.
const SPARE: usize = 2;

/// Marks a byte outside the alphabet in the decoding tables: a bit above
/// the 24 that four characters decode to.
const INVALID: u32 = 1 << 31;

/// The value of each byte as the `i`-th character of a 4-character group,
/// shifted into place, or [`INVALID`] for every byte outside the base64url
/// alphabet (`=`, `+`, `/`, whitespace, non-ASCII).
const fn decode_table(i: u32) -> [u32; 256] {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [INVALID; 256];
    let mut v = 0;
    while v < alphabet.len() {
        table[alphabet[v] as usize] = (v as u32) << (18 - 6 * i);
        v += 1;
    }
    table
}
static DECODE: [[u32; 256]; 4] = [
    decode_table(0),
    decode_table(1),
    decode_table(2),
    decode_table(3),
];

/// Strict base64url decoding of `text` (whole 4-character groups, so no
/// padding and no trailing bits to check) into `out`: eight characters,
/// read as one word, decode to six bytes, stored as one word (the last two
/// bytes of each store are overwritten by the next one, or land in the
/// spare bytes). Table-driven with no branch per character: the OR of all
/// looked-up values shows whether any byte was outside the alphabet.
/// Returns `false` then; `out` holds garbage and must be discarded.
fn decode_base64url(text: &[u8; ENCODED_LEN], out: &mut [u8; TICKET_LEN + SPARE]) -> bool {
    let mut seen = 0u32;
    let group = |word: u64| {
        let byte = |i: u32| usize::from((word >> (8 * i)) as u8);
        DECODE[0][byte(0)] | DECODE[1][byte(1)] | DECODE[2][byte(2)] | DECODE[3][byte(3)]
    };
    for i in 0..ENCODED_LEN / 8 {
        let word = u64::from_le_bytes(text[i * 8..i * 8 + 8].try_into().expect("in range"));
        let (a, b) = (group(word), group(word >> 32));
        seen |= a | b;
        let six = u64::from(a & 0xff_ffff) << 40 | u64::from(b & 0xff_ffff) << 16;
        out[i * 6..i * 6 + 8].copy_from_slice(&six.to_be_bytes());
    }
    seen & INVALID == 0
}

/// The MAC input for `claims`: [`DOMAIN_LABEL`] then the claim bytes.
pub fn mac_input(claims: &Claims) -> [u8; MAC_INPUT_LEN] {
    let mut out = [0u8; MAC_INPUT_LEN];
    out[..LABEL].copy_from_slice(DOMAIN_LABEL);
    out[LABEL..].copy_from_slice(&claims_to_bytes(claims));
    out
}

/// Encodes claims and their tag as ticket text.
pub fn encode(claims: &Claims, tag: &[u8; TAG_LEN]) -> String {
    encode_signed(&claims_to_bytes(claims), tag)
}

/// Encodes claim bytes and their tag as ticket text: base64url, three bytes
/// to four characters, no padding (the length is a multiple of three).
pub(crate) fn encode_signed(claims: &[u8; CLAIMS_LEN], tag: &[u8; TAG_LEN]) -> String {
    let mut bytes = [0u8; TICKET_LEN];
    bytes[..CLAIMS_LEN].copy_from_slice(claims);
    bytes[CLAIMS_LEN..].copy_from_slice(tag);
    encode_bytes(&bytes)
}

/// The text of a ticket's bytes (claims then tag), whatever they hold.
pub(crate) fn encode_bytes(bytes: &[u8; TICKET_LEN]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = [0u8; ENCODED_LEN];
    for (three, four) in bytes.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
        let n = u32::from(three[0]) << 16 | u32::from(three[1]) << 8 | u32::from(three[2]);
        for (i, c) in four.iter_mut().enumerate() {
            *c = ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize];
        }
    }
    String::from_utf8(text.to_vec()).expect("the alphabet is ASCII")
}

pub(crate) fn claims_to_bytes(c: &Claims) -> [u8; CLAIMS_LEN] {
    let mut b = [0u8; CLAIMS_LEN];
    b[0] = VERSION;
    b[1] = c.kind.to_byte();
    b[2] = if c.clock_offset_ms.is_some() {
        FLAG_OFFSET_MEASURED
    } else {
        0
    };
    b[3] = c.key_id;
    b[CLAIMS_QUEUE].copy_from_slice(&c.queue.0);
    b[12..28].copy_from_slice(&c.ticket_id.0);
    b[28..32].copy_from_slice(&c.epoch.to_be_bytes());
    b[32..36].copy_from_slice(&c.sequence.to_be_bytes());
    b[36..40].copy_from_slice(&c.position.to_be_bytes());
    b[40..48].copy_from_slice(&c.joined_at_ms.to_be_bytes());
    b[48..56].copy_from_slice(&c.issued_at_ms.to_be_bytes());
    b[56..64].copy_from_slice(&c.live_until_ms.to_be_bytes());
    b[64..72].copy_from_slice(&c.admitted_from_ms.to_be_bytes());
    b[72..80].copy_from_slice(&c.expires_at_ms.to_be_bytes());
    b[80..84].copy_from_slice(&c.clock_offset_ms.unwrap_or(0).to_be_bytes());
    b[CLAIMS_BINDING].copy_from_slice(&c.binding.0);
    b
}

#[inline]
fn parse_claims(b: &[u8; CLAIMS_LEN]) -> Result<Claims, Rejection> {
    let field = || Rejection::malformed(MalformedReason::Field);
    if b[0] != VERSION {
        return Err(Rejection::malformed(MalformedReason::Version));
    }
    let kind = TicketKind::from_byte(b[1]).ok_or_else(field)?;
    let flags = b[2];
    if flags & !FLAG_OFFSET_MEASURED != 0 {
        return Err(field());
    }
    let offset = i32::from_be_bytes(arr(&b[80..84]));
    let clock_offset_ms = if flags & FLAG_OFFSET_MEASURED != 0 {
        Some(offset)
    } else if offset == 0 {
        None
    } else {
        // Canonical: an unmeasured offset is written as zero.
        return Err(field());
    };
    Ok(Claims {
        kind,
        key_id: b[3],
        queue: QueueId(arr(&b[CLAIMS_QUEUE])),
        ticket_id: TicketId(arr(&b[12..28])),
        epoch: u32::from_be_bytes(arr(&b[28..32])),
        sequence: u32::from_be_bytes(arr(&b[32..36])),
        position: u32::from_be_bytes(arr(&b[36..40])),
        joined_at_ms: i64::from_be_bytes(arr(&b[40..48])),
        issued_at_ms: i64::from_be_bytes(arr(&b[48..56])),
        live_until_ms: i64::from_be_bytes(arr(&b[56..64])),
        admitted_from_ms: i64::from_be_bytes(arr(&b[64..72])),
        expires_at_ms: i64::from_be_bytes(arr(&b[72..80])),
        clock_offset_ms,
        binding: Binding(arr(&b[CLAIMS_BINDING])),
    })
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    s.try_into().expect("fixed layout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn sample() -> Claims {
        Claims {
            kind: TicketKind::Admitted,
            key_id: 7,
            queue: QueueId::from_name("q"),
            ticket_id: TicketId([0xab; 16]),
            epoch: 0xdead_beef,
            sequence: 3,
            position: 42,
            joined_at_ms: 1,
            issued_at_ms: -2,
            live_until_ms: i64::MAX,
            admitted_from_ms: i64::MIN,
            expires_at_ms: 5,
            clock_offset_ms: Some(-1234),
            binding: Binding([9; 16]),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let text = encode(&c, &[0x55; TAG_LEN]);
        assert_eq!(text.len(), ENCODED_LEN);
        let d = decode(text.as_bytes()).unwrap();
        assert_eq!(d.claims().unwrap(), c);
        assert_eq!(d.tag(), &[0x55; TAG_LEN]);
        assert_eq!(d.mac_input(), &mac_input(&c)[..]);
        let unmeasured = Claims {
            clock_offset_ms: None,
            ..c
        };
        let d = decode(encode(&unmeasured, &[0; TAG_LEN]).as_bytes()).unwrap();
        assert_eq!(d.claims().unwrap(), unmeasured);
    }

    #[test]
    fn non_canonical_text_is_refused() {
        let text = encode(&sample(), &[0x55; TAG_LEN]);
        let code = |t: &[u8]| decode(t).unwrap_err();
        let mut padded = text.clone().into_bytes();
        padded.extend_from_slice(b"==");
        assert_eq!(code(&padded), Rejection::malformed(MalformedReason::Length));
        for bad in [b'=', b'+', b'/', b' ', b'\n', 0xff] {
            let mut t = text.clone().into_bytes();
            t[10] = bad;
            assert_eq!(
                code(&t),
                Rejection::malformed(MalformedReason::Encoding),
                "byte {bad:#x}"
            );
        }
        assert!(decode(&text.as_bytes()[1..]).is_err());
        assert!(decode(b"").is_err());
    }

    /// The hand-written decoder accepts exactly what the `base64` crate's
    /// strict URL-safe, unpadded engine accepts, with the same bytes.
    #[test]
    fn decoder_agrees_with_the_base64_crate() {
        use proptest::prelude::*;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let agree = |text: &[u8]| {
            let mut ours = [0u8; TICKET_LEN + SPARE];
            let mut theirs = [0u8; TICKET_LEN];
            let ok = decode_base64url(text.try_into().unwrap(), &mut ours);
            let reference = URL_SAFE_NO_PAD.decode_slice(text, &mut theirs);
            assert_eq!(ok, reference == Ok(TICKET_LEN), "acceptance differs");
            if ok {
                assert_eq!(ours[..TICKET_LEN], theirs);
            }
        };
        // Every byte value at every position of a valid text.
        let valid = encode(&sample(), &[0xa5; TAG_LEN]).into_bytes();
        for pos in [0, 1, 2, 3, 87, 174, 175] {
            for byte in 0..=255u8 {
                let mut t = valid.clone();
                t[pos] = byte;
                agree(&t);
                if !alphabet.contains(&byte) {
                    assert!(decode(&t).is_err());
                } else if pos > 1 {
                    // Characters 0 and 1 carry the version byte.
                    assert!(decode(&t).is_ok());
                }
            }
        }
        let mut runner = proptest::test_runner::TestRunner::default();
        let mostly_valid = proptest::collection::vec(
            prop_oneof![
                20 => proptest::sample::select(alphabet.to_vec()),
                1 => any::<u8>(),
            ],
            ENCODED_LEN,
        );
        runner
            .run(&mostly_valid, |text| {
                agree(&text);
                Ok(())
            })
            .unwrap();
        runner
            .run(&proptest::array::uniform32(any::<u8>()), |seed| {
                let mut claims = [0u8; CLAIMS_LEN];
                for (i, b) in claims.iter_mut().enumerate() {
                    *b = seed[i % 32] ^ (i as u8);
                }
                let text = encode_signed(&claims, &seed);
                let mut bytes = claims.to_vec();
                bytes.extend_from_slice(&seed);
                assert_eq!(text, URL_SAFE_NO_PAD.encode(bytes));
                Ok(())
            })
            .unwrap();
        runner
            .run(&proptest::array::uniform32(any::<u8>()), |seed| {
                let mut bytes = [0u8; TICKET_LEN];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = seed[i % 32].wrapping_mul(i as u8 | 1);
                }
                let text = URL_SAFE_NO_PAD.encode(bytes);
                let mut out = [0u8; TICKET_LEN + SPARE];
                assert!(decode_base64url(
                    text.as_bytes().try_into().unwrap(),
                    &mut out
                ));
                assert_eq!(out[..TICKET_LEN], bytes);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn non_canonical_fields_are_refused() {
        let c = Claims {
            clock_offset_ms: None,
            ..sample()
        };
        let mut b = claims_to_bytes(&c);
        b[83] = 1; // offset bytes set while the flag says unmeasured
        assert!(parse_claims(&b).is_err());
        let mut b = claims_to_bytes(&c);
        b[2] = 0b10;
        assert!(parse_claims(&b).is_err());
        let mut b = claims_to_bytes(&c);
        b[1] = 2;
        assert!(parse_claims(&b).is_err());
        let mut b = claims_to_bytes(&c);
        b[0] = 2;
        assert!(parse_claims(&b).is_err());
    }
}
