//! Fixtures shared by the adversarial tests (`tests/{prop_ticket,races,
//! time_faults,hostile_http,flood}.rs`): a key, a clock at a fixed
//! instant, an issuer and verifier over one store, and signing of arbitrary
//! claims with [`spec`], the format written from `SPEC.md` with the
//! primitives only (`tests/common`), not with the crate's own signer.
#![allow(dead_code)]

/// The ticket format written from `SPEC.md` (shared with the protocol
/// tests, which include it as `common`).
#[path = "../common/mod.rs"]
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use queuegate::ticket::Claims;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, Minted, Policy, Presented, ReplayStore,
    Verifier,
};

/// The test secret (32 bytes, the minimum).
pub const SECRET: [u8; 32] = [0x5a; 32];
/// Its key id.
pub const KEY_ID: u8 = 1;
/// The queue every fixture uses.
pub const QUEUE: &str = "adversarial";
/// 2026-11-25T12:00:00Z.
pub const NOW_MS: i64 = 1_795_608_000_000;

/// Signs arbitrary claims under `secret` (whatever their key id says).
pub fn sign_with(secret: &[u8], claims: &Claims) -> String {
    spec::sign(secret, claims)
}

/// Signs arbitrary claims under the test secret.
pub fn sign(claims: &Claims) -> String {
    sign_with(&SECRET, claims)
}

/// The key ring holding the test secret.
pub fn keys() -> Arc<KeyRing> {
    Arc::new(KeyRing::new(KEY_ID, &SECRET).expect("valid key"))
}

/// A join decision that admits at once and lets the chain live `live_for`.
pub fn admit_now(live_for: Duration) -> JoinDecision {
    JoinDecision {
        position: 1,
        live_for,
        estimated_wait: Duration::ZERO,
        admit: true,
    }
}

/// A join decision that keeps the client waiting.
pub fn wait(position: u32, live_for: Duration) -> JoinDecision {
    JoinDecision {
        position,
        live_for,
        estimated_wait: Duration::from_secs(60),
        admit: false,
    }
}

/// An issuer and a verifier for `policy`, sharing `store` and `clock`.
pub struct Fixture<S: ReplayStore> {
    pub clock: ManualClock,
    pub store: Arc<S>,
    pub issuer: Issuer<ManualClock, S>,
    pub verifier: Verifier<ManualClock, S>,
}

impl<S: ReplayStore> Fixture<S> {
    pub fn new(store: Arc<S>, policy: Policy, clock: ManualClock) -> Self {
        let keys = keys();
        let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone())
            .expect("issuer");
        let verifier = Verifier::new(keys, policy, clock.clone(), store.clone()).expect("verifier");
        Self {
            clock,
            store,
            issuer,
            verifier,
        }
    }

    /// Joins bound to `binding` and returns the first ticket.
    pub fn join(&self, binding: &[u8], decision: &JoinDecision) -> Minted {
        self.issuer
            .join(binding, ClientTime::Absent, decision)
            .expect("join")
    }

    /// An admitted ticket (joined and admitted at once), live for a minute.
    pub fn admitted(&self, binding: &[u8]) -> Minted {
        self.join(binding, &admit_now(Duration::from_secs(60)))
    }

    /// Heart-beats `ticket` once with `decision`.
    pub async fn renew(
        &self,
        ticket: &str,
        binding: &[u8],
        decision: &JoinDecision,
    ) -> Result<Minted, queuegate::Rejection> {
        let presented = presented(ticket, binding);
        let current = self.issuer.check(&presented)?;
        self.issuer.renew(&current, binding, decision).await
    }
}

/// What a request presents: `ticket` bound to `binding`, no client time.
pub fn presented<'a>(ticket: &'a str, binding: &'a [u8]) -> Presented<'a> {
    Presented {
        ticket: Some(ticket.as_bytes()),
        binding: Some(binding),
        client_time: ClientTime::Absent,
    }
}
