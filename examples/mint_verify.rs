//! Mints a queue ticket, renews it, verifies it, and shows a few of the
//! ways a ticket is refused.
//!
//! ```sh
//! cargo run --example mint_verify
//! ```
//!
//! A manual clock (starting at the real time) stands in for the passing of
//! time, so the example runs instantly.

use std::sync::Arc;
use std::time::Duration;

use queuegate::{
    ClientTime, Clock, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy,
    Presented, Rejection, SystemClock, Verifier,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In production the secret comes from configuration (32+ random bytes).
    let keys = Arc::new(KeyRing::from_hex(
        1,
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    )?);
    let store = Arc::new(MemoryReplayStore::new());
    let clock = ManualClock::new(SystemClock.now_ms());
    let policy = Policy::new("vaccine-53-54");
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone())?;
    let verifier = Verifier::new(keys, policy, clock.clone(), store)?;

    let session: &[u8] = b"session-42";
    let wait = |admit| JoinDecision {
        position: if admit { 0 } else { 812 },
        live_for: Duration::from_secs(30),
        estimated_wait: Duration::from_secs(120),
        admit,
    };

    // 1. Join: a waiting ticket, bound to the session.
    let joined = issuer.join(session, ClientTime::Absent, &wait(false))?;
    println!(
        "joined: position {}, ticket of {} chars: {}...",
        joined.claims.position,
        joined.ticket.len(),
        &joined.ticket[..16]
    );
    let p = Presented {
        ticket: Some(joined.ticket.as_bytes()),
        binding: Some(session),
        client_time: ClientTime::Absent,
    };
    show(
        "waiting ticket on the booking route:",
        verifier.verify(&p).await,
    );

    // 2. Heartbeat 20 s later: the turn has come, the next ticket is admitted.
    clock.advance(Duration::from_secs(20));
    let current = issuer.check(&p)?;
    let admitted = issuer.renew(&current, session, &wait(true)).await?;
    println!(
        "renewed: sequence {}, admitted: {}",
        admitted.claims.sequence,
        admitted.claims.is_admitted()
    );
    let ok = Presented {
        ticket: Some(admitted.ticket.as_bytes()),
        ..p
    };
    show("admitted ticket:", verifier.verify(&ok).await);

    // 3. Refusals.
    let mut edited = admitted.ticket.clone().into_bytes();
    edited[60] = if edited[60] == b'A' { b'B' } else { b'A' };
    let tampered = Presented {
        ticket: Some(&edited),
        ..ok
    };
    show("one character changed:", verifier.verify(&tampered).await);

    let stolen = Presented {
        binding: Some(b"session-99"),
        ..ok
    };
    show("someone else's session:", verifier.verify(&stolen).await);

    let skewed = Presented {
        client_time: ClientTime::Millis(clock.now_ms() + 10 * 60_000),
        ..ok
    };
    show(
        "device clock 10 minutes ahead:",
        verifier.verify(&skewed).await,
    );

    // The admitted ticket was used above, so its predecessor is now a
    // stale copy (a clone on a second device, say).
    let again = match issuer.check(&p) {
        Ok(current) => issuer.renew(&current, session, &wait(false)).await,
        Err(e) => Err(e),
    };
    show("heartbeat with the old waiting ticket:", again);

    clock.advance(Duration::from_secs(31));
    show(
        "31 s offline (airplane mode), then resumed:",
        verifier.verify(&ok).await,
    );

    let missing = Presented::default();
    show("no ticket at all:", verifier.verify(&missing).await);
    Ok(())
}

fn show<T>(label: &str, outcome: Result<T, Rejection>) {
    match outcome {
        Ok(_) => println!("  {label:<44} accepted"),
        Err(e) => println!("  {label:<44} {}: {e}", e.code()),
    }
}
