//! The demo's `/healthz` and `/readyz` over real HTTP (issue 14 item 3):
//! built on `queuegate::health`, ready on local faults only.

mod demo_support;

use demo_support::*;

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let demo = start(&[]).await;
    let r = demo.send("GET", "/healthz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ok");
    let r = demo.send("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ready");

    // A failed start makes the instance unready; liveness stays.
    demo.app.health.start_failed("test: start failed");
    let r = demo.send("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["reason"], "start_failed");
    assert_eq!(demo.send("GET", "/healthz", &[], "").await.status, 200);
}

/// The clock check's gauges are on /metrics, named as the alerting rules
/// in deploy/ expect.
#[tokio::test]
async fn metrics_carry_the_clock_check() {
    let demo = start(&[]).await;
    let r = demo.send("GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("\nqueuegate_clock_suspect 0\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\nqueuegate_clock_references_disagree 0\n"));
}
