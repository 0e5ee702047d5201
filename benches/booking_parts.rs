//! What the layer adds to a single-use booking beyond a session-checked
//! request, in process (issue 15: a booking's server CPU ÷ a minimal
//! request's ≤ 2.0).
//!
//! `cargo bench --bench booking_parts`
//!
//! One browser-like request (15 headers, as a page's `fetch` sends) through
//! three services over the same route, in interleaved rounds of thread CPU
//! time (`benches/common`):
//!
//! - `bare`: the route alone;
//! - `session`: the layer in a `session` scope (the demo's `/slots`);
//! - `single_use`: the layer in a `single_use` scope with the demo's hold
//!   and handler timeout (the demo's `/reserve`): the hold taken in the
//!   in-memory store, the handler's 200 commits it. Every request presents
//!   a ticket of its own chain (minted untimed, before the round).
//!
//! Then the parts a held request pays for that a session request does not:
//! the copy of the request's head kept for the rejection hook, the clone of
//! the `Verified`, and the handler-timeout timer (created and dropped
//! unpolled, as when the handler answers at once).

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::{interleaved, noop_waker, now_or_never, ratios, spread, ThreadCpuTime};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderValue, Request, Response, StatusCode};
use queuegate::layer::QueueGateLayer;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented,
    ReplayMode, Verifier,
};
use tower::{Layer, Service};

const T: i64 = 1_700_000_000_000;
const PER_ROUND: usize = 1_000;
const ROUNDS: usize = 60;

type Route = fn(Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>>;

fn route(_: Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>> {
    std::future::ready(Ok(Response::new("{\"reservation_id\":\"R-1\"}")))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A request as a browser's `fetch` sends it to the demo.
fn request(ticket: &'static str, now: &'static str) -> Request<()> {
    let s = HeaderValue::from_static;
    Request::post("/reserve")
        .header("host", s("127.0.0.1:8080"))
        .header("user-agent", s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"))
        .header("accept", s("*/*"))
        .header("accept-language", s("en-GB,en;q=0.9"))
        .header("accept-encoding", s("gzip, deflate, br, zstd"))
        .header("content-type", s("application/json"))
        .header("content-length", s("14"))
        .header("origin", s("http://127.0.0.1:8080"))
        .header("referer", s("http://127.0.0.1:8080/"))
        .header("sec-fetch-site", s("same-origin"))
        .header("sec-fetch-mode", s("cors"))
        .header("sec-fetch-dest", s("empty"))
        .header("cookie", s("qg_session=s"))
        .header("queue-client-time", s(now))
        .header("queue-ticket", s(ticket))
        .body(())
        .unwrap()
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let clock = ManualClock::new(T);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("bench");
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let session = Verifier::new(
        keys.clone(),
        policy.clone().scope("slots").replay(ReplayMode::Session),
        clock.clone(),
        store.clone(),
    )
    .unwrap();
    let single_use = Verifier::new(
        keys,
        policy
            .scope("reserve")
            .replay(ReplayMode::SingleUse)
            .hold(Duration::from_secs(15))
            .handler_timeout(Duration::from_secs(10)),
        clock,
        store,
    )
    .unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let mint = || {
        leak(
            issuer
                .join(b"s", ClientTime::Millis(T), &decision)
                .unwrap()
                .ticket,
        )
    };
    let now = leak(T.to_string());
    let one = mint();

    let f: Route = route;
    let mut bare = tower::service_fn(f);
    let mut sess = QueueGateLayer::new(session).layer(tower::service_fn(f));
    let mut held = QueueGateLayer::new(single_use.clone()).layer(tower::service_fn(f));
    let waker = noop_waker();
    // One call of service `k`; its status.
    let mut call = |k: usize, req: Request<()>| -> StatusCode {
        match k {
            0 => now_or_never(&waker, bare.call(req)).unwrap().status(),
            1 => now_or_never(&waker, sess.call(req)).unwrap().status(),
            _ => now_or_never(&waker, held.call(req)).unwrap().status(),
        }
    };
    let names = ["bare", "session", "single_use"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();

    // Each single-use request needs its own chain; the others reuse one.
    let tickets_for = |k: usize| -> Vec<&'static str> {
        (0..PER_ROUND)
            .map(|_| if k == 2 { mint() } else { one })
            .collect()
    };
    for (k, name) in names.iter().enumerate() {
        for t in tickets_for(k) {
            assert_eq!(call(k, request(t, now)), StatusCode::OK, "{name}");
        }
    }
    let per_request = interleaved(
        3,
        ROUNDS,
        |k| {
            tickets_for(k)
                .into_iter()
                .map(|t| request(t, now))
                .collect::<Vec<_>>()
        },
        |k, reqs| {
            for req in reqs {
                black_box(call(k, req));
            }
            PER_ROUND as u64
        },
    );
    for (k, name) in names.iter().enumerate() {
        let (lo, mid, hi) = spread(per_request[k].clone());
        println!(
            "booking_parts/{name}: median {mid:.0} CPU ns per request (p10–p90 {lo:.0}–{hi:.0})"
        );
    }
    for (what, a, b) in [("single_use ÷ session", 2, 1), ("session ÷ bare", 1, 0)] {
        let (lo, mid, hi) = spread(ratios(&per_request[a], &per_request[b]));
        println!("booking_parts: {what} = {mid:.3} (p10–p90 {lo:.3}–{hi:.3})");
    }

    let mut g = c.benchmark_group("booking_parts");
    for (k, name) in names.iter().enumerate() {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || request(if k == 2 { mint() } else { one }, now),
                |req| black_box(call(k, req)),
                BatchSize::SmallInput,
            )
        });
    }
    // The parts of a held request.
    let head = request(one, now).into_parts().0;
    g.bench_function("part_copy_request_head", |b| {
        b.iter(|| {
            let mut req = Request::new(());
            *req.method_mut() = head.method.clone();
            *req.uri_mut() = head.uri.clone();
            *req.headers_mut() = head.headers.clone();
            black_box(req)
        })
    });
    let verified = single_use
        .check(&Presented {
            ticket: Some(one.as_bytes()),
            binding: Some(b"s"),
            client_time: ClientTime::Millis(T),
        })
        .unwrap();
    g.bench_function("part_clone_verified", |b| {
        b.iter(|| black_box(black_box(&verified).clone()))
    });
    g.bench_function("part_timer_unpolled", |b| {
        b.iter(|| black_box(tokio::time::sleep(Duration::from_secs(10))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
