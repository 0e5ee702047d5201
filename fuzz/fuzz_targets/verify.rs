//! The full verifier on arbitrary requests (ticket, binding, client time,
//! policy flags): never panics, never accepts a ticket the fuzz key did not
//! sign, and whatever it accepts is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queuegate::ticket::{decode, encode};
use queuegate::RejectionCode;
use queuegate_fuzz::{keys, now_or_never, shared_verifier, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let v = shared_verifier(&input);
    let presented = input.presented();
    match now_or_never(v.verify(&presented)) {
        Ok(verified) => {
            // Accepted (possibly with a monitored finding): the text must be
            // a canonical ticket whose MAC the ring accepts.
            let text = presented.ticket.expect("a ticket was presented");
            let ticket = decode(text).expect("accepted text decodes");
            keys()
                .verify(&ticket)
                .expect("accepted ticket is authentic");
            let tag: [u8; 32] = ticket.tag().try_into().unwrap();
            assert_eq!(encode(&verified.claims, &tag).as_bytes(), text);
            if verified.monitored.is_none() {
                assert!(verified.claims.is_admitted());
            }
        }
        Err(rejection) => {
            // Structural failures stop verification whatever the mode; any
            // other rejection is only possible in enforce mode.
            let structural = matches!(
                rejection.code(),
                RejectionCode::Missing
                    | RejectionCode::Malformed
                    | RejectionCode::BadSignature
                    | RejectionCode::UnknownKey
                    | RejectionCode::StoreUnavailable
            );
            assert!(structural || v.policy().enforces(rejection.code()));
            let _ = rejection.to_string();
        }
    }
});
