//! The ticket decoder on arbitrary bytes: never panics, and whatever it
//! accepts is the one canonical encoding of what it decoded to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queuegate::ticket::{decode, encode, ENCODED_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(ticket) = decode(data) else {
        return;
    };
    assert_eq!(data.len(), ENCODED_LEN);
    let tag: [u8; 32] = ticket.tag().try_into().expect("32-byte tag");
    if let Ok(claims) = ticket.claims() {
        // Exactly one encoding of a ticket is accepted.
        assert_eq!(encode(&claims, &tag).as_bytes(), data);
    }
});
