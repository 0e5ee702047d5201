//! What the layer's counters and client-clock histogram cost per request
//! (issue 14: "a same-binary A/B of the layer with the new metrics on and
//! off, with an A/A control in the same run: ratio ≤ 1.05").
//!
//! `cargo bench --bench metrics_overhead`
//!
//! Three layers over the same verifier, store and clock: `on` and
//! `on_again` (two layers built alike, counting: the A/A control) and `off`
//! (built with `QueueGateBuilder::without_metrics`). Two request mixes:
//!
//! - `admitted`: a passing request with a `queue-client-time` header, the
//!   tickets of 4,096 chains in turn (session replay check in the in-memory
//!   store). 4,096 chains over the 1,024 slots of the once-per-chain table
//!   mean nearly every request also lands in the offset histogram: the
//!   worst case for the metrics, where one busy chain would be observed
//!   only once.
//! - `rejected_forged`: a ticket with one tag byte flipped (the rejection
//!   counter).
//!
//! Two measurements in one run, both in thread CPU time
//! (`benches/common`): criterion's groups, and before them the bench's own
//! interleaved rounds — each round times 2,000 requests on each layer, in
//! a rotating order, so the neighbours' load drifts over all three alike —
//! printing the median per-request cost of each layer and the medians of
//! the per-round ratios `on ÷ off` and `on ÷ on_again` (A/A) with their
//! 10th–90th percentile spread.

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
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy, Verifier,
};
use tower::{Layer, Service};

const T: i64 = 1_700_000_000_000;
const CHAINS: usize = 4_096;
const PER_ROUND: usize = 2_000;
const ROUNDS: usize = 150;

fn route(_: Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>> {
    std::future::ready(Ok(Response::new("ok")))
}

type Route = fn(Request<()>) -> std::future::Ready<Result<Response<&'static str>, Infallible>>;

/// Which ticket the `i`-th request of a mix presents.
type TicketFor = Box<dyn Fn(usize) -> &'static str>;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A request carrying `ticket` (header values over leaked static text, so
/// building one costs the same whatever it carries).
fn request(ticket: &'static str, now: &'static str) -> Request<()> {
    Request::get("/book")
        .header("cookie", HeaderValue::from_static("qg_session=s"))
        .header("queue-client-time", HeaderValue::from_static(now))
        .header("queue-ticket", HeaderValue::from_static(ticket))
        .body(())
        .unwrap()
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let clock = ManualClock::new(T);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("bench");
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let verifier = Verifier::new(keys, policy, clock, store).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let tickets: &'static [&'static str] = (0..CHAINS)
        .map(|_| {
            leak(
                issuer
                    .join(b"s", ClientTime::Millis(T), &decision)
                    .unwrap()
                    .ticket,
            )
        })
        .collect::<Vec<_>>()
        .leak();
    let forged = {
        let mut t = tickets[0].as_bytes().to_vec();
        let i = t.len() - 10;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        leak(String::from_utf8(t).unwrap())
    };
    let now = leak(T.to_string());

    let f: Route = route;
    let on = QueueGateLayer::new(verifier.clone());
    let on_again = QueueGateLayer::new(verifier.clone());
    let off = QueueGateLayer::builder(verifier)
        .without_metrics()
        .build()
        .unwrap();
    let mut layers = [
        ("on", on.layer(tower::service_fn(f)), Some(on.metrics())),
        (
            "on_again",
            on_again.layer(tower::service_fn(f)),
            Some(on_again.metrics()),
        ),
        ("off", off.layer(tower::service_fn(f)), None),
    ];
    let waker = noop_waker();
    // The handler-timeout timer needs a time driver in reach (single-use
    // only; harmless here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();

    let mixes: [(&str, bool, TicketFor); 2] = [
        ("admitted", true, Box::new(move |i| tickets[i % CHAINS])),
        ("rejected_forged", false, Box::new(move |_| forged)),
    ];

    // The bench's own interleaved rounds.
    for (mix, passes, ticket) in &mixes {
        // One warm-up round of each, checking every answer.
        for (_, svc, _) in layers.iter_mut() {
            for i in 0..CHAINS {
                let res = now_or_never(&waker, svc.call(request(ticket(i), now))).unwrap();
                assert_eq!(res.status() == StatusCode::OK, *passes, "{mix}");
            }
        }
        let mut next = 0usize;
        let per_request = interleaved(
            3,
            ROUNDS,
            |_| {
                next += PER_ROUND;
                (0..PER_ROUND)
                    .map(|i| request(ticket(next + i), now))
                    .collect::<Vec<_>>()
            },
            |k, reqs| {
                let svc = &mut layers[k].1;
                for req in reqs {
                    black_box(now_or_never(&waker, svc.call(req)).ok());
                }
                PER_ROUND as u64
            },
        );
        let (ab_lo, ab, ab_hi) = spread(ratios(&per_request[0], &per_request[2]));
        let (aa_lo, aa, aa_hi) = spread(ratios(&per_request[0], &per_request[1]));
        let med = |k: usize| spread(per_request[k].clone()).1;
        println!(
            "metrics_overhead/{mix}: {ROUNDS} interleaved rounds of {PER_ROUND}, median CPU ns per request: on {:.1}, on_again {:.1}, off {:.1}",
            med(0),
            med(1),
            med(2),
        );
        println!(
            "metrics_overhead/{mix}: on ÷ off = {ab:.3} (p10–p90 {ab_lo:.3}–{ab_hi:.3}); A/A on ÷ on_again = {aa:.3} (p10–p90 {aa_lo:.3}–{aa_hi:.3})",
        );
    }
    for (name, _, metrics) in &layers {
        if let Some(m) = metrics {
            let s = m.snapshot();
            println!(
                "metrics_overhead: layer {name} counted {} admissions, {} rejections, {} clock offsets",
                s.admissions,
                s.rejections_total(),
                s.offset_count
            );
            assert!(s.admissions > 0 && s.rejections_total() > 0 && s.offset_count > 0);
        }
    }

    // The same comparison through criterion.
    for (mix, _, ticket) in &mixes {
        let mut g = c.benchmark_group(format!("metrics_overhead/{mix}"));
        for (name, svc, _) in layers.iter_mut() {
            let mut i = 0usize;
            g.bench_function(*name, |b| {
                b.iter_batched(
                    || {
                        i += 1;
                        request(ticket(i), now)
                    },
                    |req| black_box(now_or_never(&waker, svc.call(req)).ok()),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
