//! `QueueGateBuilder::without_metrics`: the layer answers exactly as with
//! counting on, and counts nothing (no admission, no rejection, no offset);
//! a later `.metrics(...)` turns counting back on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use queuegate::layer::QueueGateLayer;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Metrics, Policy,
    Rejection, RejectionCode, Verifier,
};
use tower::{Layer, ServiceExt};

const T: i64 = 1_700_000_000_000;

struct Fixture {
    verifier: Verifier<ManualClock, MemoryReplayStore>,
    ticket: String,
}

fn fixture() -> Fixture {
    let clock = ManualClock::new(T);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("metrics-off");
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone()).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let ticket = issuer
        .join(b"me", ClientTime::Millis(T), &decision)
        .unwrap()
        .ticket;
    let verifier = Verifier::new(keys, policy, clock, store).unwrap();
    Fixture { verifier, ticket }
}

/// An admitted request with a client time, then one without a ticket:
/// the two statuses.
async fn two_requests(layer: &QueueGateLayer<ManualClock>, ticket: &str) -> [StatusCode; 2] {
    let mut out = [StatusCode::OK; 2];
    for (i, t) in [Some(ticket), None].into_iter().enumerate() {
        let mut b = Request::get("/book")
            .header("cookie", "qg_session=me")
            .header("queue-client-time", T.to_string());
        if let Some(t) = t {
            b = b.header("queue-ticket", t);
        }
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new("booked"))
        }));
        out[i] = svc.oneshot(b.body(()).unwrap()).await.unwrap().status();
    }
    out
}

#[tokio::test]
async fn a_layer_without_metrics_answers_the_same_and_counts_nothing() {
    let f = fixture();
    let counted = Metrics::new();
    let on = QueueGateLayer::builder(f.verifier.clone())
        .metrics(counted.clone())
        .build()
        .unwrap();
    let off = QueueGateLayer::builder(f.verifier.clone())
        .without_metrics()
        .build()
        .unwrap();

    let on_answers = two_requests(&on, &f.ticket).await;
    let off_answers = two_requests(&off, &f.ticket).await;
    assert_eq!(on_answers, [StatusCode::OK, Rejection::Missing.status()]);
    assert_eq!(off_answers, on_answers, "counting must not change answers");

    let s = counted.snapshot();
    assert_eq!(s.admissions, 1);
    assert_eq!(s.rejections(RejectionCode::Missing), 1);
    assert_eq!(s.offset_count, 1, "the passing request's clock is observed");

    let s = off.metrics().snapshot();
    assert_eq!(s.admissions, 0);
    assert_eq!(s.rejections_total(), 0);
    assert_eq!(s.offset_count, 0);
}

#[tokio::test]
async fn metrics_after_without_metrics_counts_again() {
    let f = fixture();
    let counted = Metrics::new();
    let layer = QueueGateLayer::builder(f.verifier.clone())
        .without_metrics()
        .metrics(counted.clone())
        .build()
        .unwrap();
    two_requests(&layer, &f.ticket).await;
    let s = counted.snapshot();
    assert_eq!((s.admissions, s.rejections_total()), (1, 1));
}
