//! The verify path against its floor and its peer, all over the same ticket.
//!
//! Run: `cargo bench --bench verify` (add `-- --warm-up-time 1
//! --measurement-time 3` for a quick run). `BENCHMARKS.md` explains the
//! figures; the ratios that matter are between functions of the group
//! `verify`, measured in the same run:
//!
//! - `hmac_keyed`: the floor. A clone of a pre-keyed `Hmac<Sha256>` and
//!   `verify_slice` over the ticket's exact MAC input, under the admitted-ticket
//!   key derived as `SPEC.md` says (`HMAC-SHA256(secret, "queuegate/1
//!   key:admitted")`).
//! - `queuegate_verify`: [`Verifier::check`] with replay off: decoding, the
//!   MAC, every claim check including the binding, the system clock.
//! - `queuegate_verify_store`: [`Verifier::verify`] in `session` replay mode
//!   with the in-memory store holding 1M live records.
//! - `queuegate_reject_forged`: the same ticket with one tag byte flipped.
//! - `queuegate_heartbeat`: [`Issuer::check`] then [`Issuer::renew`]: verify
//!   and mint the next ticket of the chain.
//! - `jsonwebtoken_hs256`: what a user would write instead: an HS256 JWT with
//!   the same claims, `exp` and `nbf` validated.
//!
//! The group `verify_parts` times the pieces of `queuegate_verify` so that
//! the remaining cost can be attributed.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::{noop_waker, now_or_never, ThreadCpuTime};
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use queuegate::replay::ReplayCheck;
use queuegate::ticket::{self, ScopeId, TicketId, TAG_LEN};
use queuegate::{
    ClientTime, Clock, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore,
    MonotonicClock, Policy, Presented, ReplayMode, ReplayStore, SystemClock, TicketKind, Verifier,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const SECRET: [u8; 32] = [0x5a; 32];
const KEY_ID: u8 = 1;
const QUEUE: &str = "vaccine-53-54";
const SESSION: &[u8] = b"session-0123456789abcdef";
const LIVE_RECORDS: u32 = 1_000_000;

/// The claims of the ticket as a JWT: the same fields, the ids as hex.
#[derive(Serialize, Deserialize)]
struct JwtClaims {
    kind: String,
    kid: u8,
    queue: String,
    jti: String,
    epoch: u32,
    seq: u32,
    pos: u32,
    joined: i64,
    iat: i64,
    live_until: i64,
    nbf: i64,
    exp: i64,
    offset: Option<i32>,
    bnd: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bench_verify(c: &mut Criterion<ThreadCpuTime>) {
    let waker = noop_waker();
    let keys = Arc::new(KeyRing::new(KEY_ID, &SECRET).unwrap());
    // Room for the 1M records below and the bench's own tickets.
    let store = Arc::new(
        MemoryReplayStore::builder()
            .admitted_capacity(LIVE_RECORDS as usize + 1_000)
            .build()
            .unwrap(),
    );
    let policy = Policy::new(QUEUE);
    let issuer = Issuer::new(keys.clone(), policy.clone(), SystemClock, store.clone()).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3_600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let minted = issuer.join(SESSION, ClientTime::Absent, &decision).unwrap();
    assert_eq!(minted.claims.kind, TicketKind::Admitted);
    let text = minted.ticket.clone();
    let presented = Presented {
        ticket: Some(text.as_bytes()),
        binding: Some(SESSION),
        client_time: ClientTime::Absent,
    };

    // The floor: the derived admitted key, pre-keyed; the exact MAC input.
    let decoded = ticket::decode(text.as_bytes()).unwrap();
    let mac_input = decoded.mac_input().to_vec();
    assert_eq!(mac_input.len(), ticket::MAC_INPUT_LEN);
    let tag = decoded.tag().to_vec();
    let derived = {
        let mut m = Hmac::<Sha256>::new_from_slice(&SECRET).unwrap();
        m.update(b"queuegate/1 key:admitted");
        m.finalize().into_bytes()
    };
    let keyed = Hmac::<Sha256>::new_from_slice(&derived).unwrap();
    {
        let mut m = keyed.clone();
        m.update(&mac_input);
        m.verify_slice(&tag)
            .expect("the derivation in this bench matches the crate's");
    }

    // Replay off: every stateless check.
    let stateless = Verifier::new(
        keys.clone(),
        policy.clone().replay(ReplayMode::Off),
        SystemClock,
        store.clone(),
    )
    .unwrap();
    stateless.check(&presented).expect("the ticket verifies");

    // Session replay over a store holding 1M live records (plus the ticket's).
    let now = SystemClock.now_ms();
    for i in 0..LIVE_RECORDS {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        id[4..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_le_bytes());
        id[15] = 0xee;
        let check = ReplayCheck {
            scope: ScopeId::from_name(QUEUE),
            ticket_id: TicketId(id),
            sequence: 0,
            kind: TicketKind::Admitted,
            same_client: true,
            live_until_ms: now + 3_600_000,
            expires_at_ms: now + 3_600_000,
            now_ms: now,
            grace_ms: 5_000,
            hold: None,
            epoch: 0,
        };
        now_or_never(&waker, store.check(&check)).unwrap();
    }
    let session = Verifier::new(
        keys.clone(),
        policy.clone().replay(ReplayMode::Session),
        SystemClock,
        store.clone(),
    )
    .unwrap();
    now_or_never(&waker, session.verify(&presented)).expect("fresh");
    assert!(store.len() > LIVE_RECORDS as usize);

    // The same ticket with one tag byte flipped.
    let mut forged_tag = [0u8; TAG_LEN];
    forged_tag.copy_from_slice(&tag);
    forged_tag[TAG_LEN / 2] ^= 0x01;
    let forged = ticket::encode(&decoded.claims().unwrap(), &forged_tag);
    let forged_presented = Presented {
        ticket: Some(forged.as_bytes()),
        ..presented
    };
    assert_eq!(
        stateless.check(&forged_presented).unwrap_err(),
        queuegate::Rejection::BadSignature
    );

    // The heartbeat chain: a separate issuer store so the 1M records above
    // stay untouched; each renewal presents the ticket the last one minted.
    let hb_store = Arc::new(MemoryReplayStore::new());
    let hb_issuer = Issuer::new(keys.clone(), policy.clone(), SystemClock, hb_store).unwrap();
    let mut current = hb_issuer
        .join(SESSION, ClientTime::Absent, &decision)
        .unwrap()
        .ticket;

    // The JWT a user would write instead, with the same claims.
    let cl = &minted.claims;
    let jwt_claims = JwtClaims {
        kind: "admitted".into(),
        kid: cl.key_id,
        queue: hex(&cl.queue.0),
        jti: hex(&cl.ticket_id.0),
        epoch: cl.epoch,
        seq: cl.sequence,
        pos: cl.position,
        joined: cl.joined_at_ms / 1000,
        iat: cl.issued_at_ms / 1000,
        live_until: cl.live_until_ms / 1000,
        nbf: cl.admitted_from_ms / 1000,
        exp: cl.expires_at_ms / 1000,
        offset: cl.clock_offset_ms,
        bnd: hex(&cl.binding.0),
    };
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &jwt_claims,
        &EncodingKey::from_secret(&SECRET),
    )
    .unwrap();
    let jwt_key = DecodingKey::from_secret(&SECRET);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_nbf = true;
    validation.validate_exp = true;
    validation.leeway = 0;
    jsonwebtoken::decode::<JwtClaims>(&jwt, &jwt_key, &validation).expect("the JWT verifies");

    let mut g = c.benchmark_group("verify");
    g.bench_function("hmac_keyed", |b| {
        b.iter(|| {
            let mut m = keyed.clone();
            m.update(black_box(&mac_input));
            m.verify_slice(black_box(&tag)).is_ok()
        })
    });
    g.bench_function("queuegate_verify", |b| {
        b.iter(|| stateless.check(black_box(&presented)).is_ok())
    });
    g.bench_function("queuegate_verify_store", |b| {
        b.iter(|| now_or_never(&waker, session.verify(black_box(&presented))).is_ok())
    });
    g.bench_function("queuegate_reject_forged", |b| {
        b.iter(|| stateless.check(black_box(&forged_presented)).is_err())
    });
    g.bench_function("queuegate_heartbeat", |b| {
        b.iter(|| {
            let p = Presented {
                ticket: Some(current.as_bytes()),
                binding: Some(SESSION),
                client_time: ClientTime::Absent,
            };
            let checked = hb_issuer.check(black_box(&p)).expect("live");
            let next = now_or_never(&waker, hb_issuer.renew(&checked, SESSION, &decision))
                .expect("renewed");
            current = next.ticket;
        })
    });
    g.bench_function("jsonwebtoken_hs256", |b| {
        b.iter(|| jsonwebtoken::decode::<JwtClaims>(black_box(&jwt), &jwt_key, &validation).is_ok())
    });
    g.finish();

    // The pieces of `queuegate_verify`, to attribute its cost.
    let mut g = c.benchmark_group("verify_parts");
    g.bench_function("decode", |b| {
        b.iter(|| ticket::decode(black_box(text.as_bytes())).is_ok())
    });
    let claims = decoded.claims().unwrap();
    g.bench_function("ticket_mac", |b| {
        b.iter(|| keys.verify(black_box(&decoded)).is_ok())
    });
    g.bench_function("binding", |b| {
        b.iter(|| keys.binding_matches(black_box(&claims), black_box(SESSION)))
    });
    g.bench_function("mac_and_binding", |b| {
        b.iter(|| keys.verify_bound(black_box(&decoded), black_box(Some(SESSION))))
    });
    g.bench_function("parse_claims", |b| {
        b.iter(|| black_box(&decoded).claims().is_ok())
    });
    let clock = MonotonicClock::new(SystemClock);
    g.bench_function("clock", |b| b.iter(|| clock.now_ms()));
    let manual = Verifier::new(
        keys.clone(),
        policy.clone().replay(ReplayMode::Off),
        ManualClock::new(SystemClock.now_ms()),
        store.clone(),
    )
    .unwrap();
    g.bench_function("verify_manual_clock", |b| {
        b.iter(|| manual.check(black_box(&presented)).is_ok())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_verify
}
criterion_main!(benches);
