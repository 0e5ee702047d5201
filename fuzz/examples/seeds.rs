//! Writes the seed corpus: valid tickets signed with the fuzz key and their
//! near misses (one bit off, truncated, padded, other alphabet, expired,
//! waiting, foreign queue or key), as `decode` texts and `verify` inputs.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds`

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy,
};
use queuegate_fuzz::{keys, now_or_never, verifier, Input, NOW_MS, QUEUE};

fn mint(keys: Arc<KeyRing>, queue: &str, at_ms: i64, admit: bool, live_s: u64) -> String {
    let issuer = Issuer::new(
        keys,
        Policy::new(queue),
        ManualClock::new(at_ms),
        Arc::new(MemoryReplayStore::new()),
    )
    .expect("issuer");
    let decision = JoinDecision {
        position: 3,
        live_for: Duration::from_secs(live_s),
        estimated_wait: Duration::from_secs(30),
        admit,
    };
    issuer
        .join(
            b"seed-binding",
            ClientTime::Millis(at_ms + 1_500),
            &decision,
        )
        .expect("join")
        .ticket
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let out = Path::new(&out);
    let foreign = Arc::new(KeyRing::new(9, &[0x24; 32]).unwrap());
    let valid = mint(keys(), QUEUE, NOW_MS - 1_000, true, 60);
    let mut texts: Vec<(&str, Vec<u8>)> = vec![
        ("valid", valid.clone().into_bytes()),
        (
            "waiting",
            mint(keys(), QUEUE, NOW_MS - 1_000, false, 60).into_bytes(),
        ),
        (
            "offline",
            mint(keys(), QUEUE, NOW_MS - 120_000, true, 60).into_bytes(),
        ),
        (
            "expired",
            mint(keys(), QUEUE, NOW_MS - 3_600_000, true, 7_200).into_bytes(),
        ),
        (
            "other-queue",
            mint(keys(), "other", NOW_MS - 1_000, true, 60).into_bytes(),
        ),
        (
            "foreign-key",
            mint(foreign, QUEUE, NOW_MS - 1_000, true, 60).into_bytes(),
        ),
        ("truncated", valid.as_bytes()[..175].to_vec()),
        ("padded", format!("{valid}=").into_bytes()),
        (
            "standard-alphabet",
            valid.replace('-', "+").replace('_', "/").into_bytes(),
        ),
        ("empty", Vec::new()),
    ];
    let mut flipped = valid.clone().into_bytes();
    flipped[100] ^= 0b10;
    texts.push(("bit-flip", flipped));
    let mut version = valid.clone().into_bytes();
    version[0] = b'B';
    texts.push(("version-2", version));

    let decode_dir = out.join("decode");
    let verify_dir = out.join("verify");
    std::fs::create_dir_all(&decode_dir)?;
    std::fs::create_dir_all(&verify_dir)?;
    let client_times: [(&str, u8, &[u8]); 4] = [
        ("no-clock", 0b1_0000, b""),
        ("clock", 0, b"1835481601000"),
        ("clock-seconds", 0, b"1835481601"),
        ("clock-garbage", 0, b"-12x"),
    ];
    for (name, text) in &texts {
        std::fs::write(decode_dir.join(name), text)?;
        for (ct_name, ct_flag, ct) in client_times {
            for (mode_name, mode_flags) in [("off", 0b000), ("session", 0b010), ("single", 0b100)] {
                let input = Input {
                    flags: ct_flag | mode_flags,
                    client_time: ct,
                    binding: b"seed-binding",
                    ticket: text,
                };
                let file = format!("{name}.{ct_name}.{mode_name}");
                std::fs::write(verify_dir.join(file), input.to_bytes())?;
            }
        }
        let monitored = Input {
            flags: 0b1_0001,
            client_time: b"",
            binding: b"someone-else",
            ticket: text,
        };
        std::fs::write(
            verify_dir.join(format!("{name}.monitor")),
            monitored.to_bytes(),
        )?;
    }
    // The seeds must reach where they are meant to: the valid ticket is
    // accepted by the target's verifier, each near miss is refused.
    for (name, text) in &texts {
        let input = Input {
            flags: 0b1_0000,
            client_time: b"",
            binding: b"seed-binding",
            ticket: text,
        };
        let verdict = now_or_never(verifier(input.policy()).verify(&input.presented()));
        assert_eq!(verdict.is_ok(), *name == "valid", "{name}: {verdict:?}");
    }
    println!("seeds written to {}", out.display());
    Ok(())
}
