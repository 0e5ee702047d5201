//! What the layer costs per request, against the bare inner service in the
//! same run: an admitted request (session replay check, in-memory store),
//! and refused ones (no ticket, a forged ticket, 100 KB of garbage), and a
//! `single_use` request that takes a hold and has it released (the
//! handler's side-effect-free refusal), so one ticket serves every
//! iteration.
//!
//! `cargo bench --bench layer_overhead`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Request, Response};
use queuegate::layer::{NoSideEffects, QueueGateLayer};
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy, Verifier,
};
use tower::{Layer, Service};

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn ready_now<F: Future>(f: F, cx: &mut Context<'_>) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("every future here is ready at once"),
    }
}

fn inner(_: Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>> {
    std::future::ready(Ok(Response::new("ok")))
}

/// A booking refused without side effects: the hold is released.
fn slot_taken(_: Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>> {
    let mut res = Response::new("slot taken");
    *res.status_mut() = http::StatusCode::CONFLICT;
    res.extensions_mut().insert(NoSideEffects);
    std::future::ready(Ok(res))
}

fn bench(c: &mut Criterion) {
    let clock = ManualClock::new(1_700_000_000_000);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("bench");
    let single_use = Verifier::new(
        keys.clone(),
        policy
            .clone()
            .scope("book")
            .replay(queuegate::ReplayMode::SingleUse),
        clock.clone(),
        store.clone(),
    )
    .unwrap();
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let verifier = Verifier::new(keys, policy, clock, store).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let ticket = issuer
        .join(b"s", ClientTime::Absent, &decision)
        .unwrap()
        .ticket;
    let mut forged = ticket.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let garbage = "A".repeat(100 * 1024);

    let f: fn(Request<()>) -> _ = inner;
    let mut bare = tower::service_fn(f);
    let mut gated = QueueGateLayer::new(verifier).layer(tower::service_fn(f));
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);

    // Header values over leaked static text: building and dropping a
    // request costs the same whatever the ticket's size, so the timings
    // show the layer's own work (the 100 KB is never copied per request).
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let (ticket, forged, garbage) = (leak(&ticket), leak(&forged), leak(&garbage));
    let request = |t: Option<&'static str>| {
        let mut b =
            Request::get("/book").header("cookie", HeaderValue::from_static("qg_session=s"));
        if let Some(t) = t {
            b = b.header("queue-ticket", HeaderValue::from_static(t));
        }
        b.body(()).unwrap()
    };

    let held: fn(Request<()>) -> _ = slot_taken;
    let mut holding = QueueGateLayer::new(single_use).layer(tower::service_fn(held));
    // The handler timeout's timer needs a tokio time driver (it is created,
    // never polled: the handler answers at once).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();

    let mut g = c.benchmark_group("layer");
    g.bench_function("bare_service", |b| {
        b.iter_batched(
            || request(Some(ticket)),
            |req| black_box(ready_now(bare.call(req), &mut cx)),
            criterion::BatchSize::SmallInput,
        )
    });
    for (name, t) in [
        ("admitted", Some(ticket)),
        ("rejected_missing", None),
        ("rejected_forged", Some(forged)),
        ("rejected_100kb_garbage", Some(garbage)),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(t),
                |req| black_box(ready_now(gated.call(req), &mut cx)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("single_use_hold_then_release", |b| {
        b.iter_batched(
            || request(Some(ticket)),
            |req| {
                let res = ready_now(holding.call(req), &mut cx).unwrap();
                assert_eq!(res.status(), http::StatusCode::CONFLICT);
                black_box(res)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
