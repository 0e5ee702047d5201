//! The demo's two routes for the load test (`examples/crowd.rs`): `GET
//! /ping`, the cheapest request, and `GET /stats`, the counts the crowd
//! reads to split memory between room state and replay store.

mod demo_support;

use demo_support::*;

#[tokio::test]
async fn ping_answers_pong_and_stats_count_what_the_room_holds() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let ping = demo.send("GET", "/ping", &[], "").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "pong"));

    let before = demo.send("GET", "/stats", &[], "").await.json();
    assert_eq!(before["waiting"], 0, "{before}");
    let mut people = Vec::new();
    for _ in 0..3 {
        let mut p = Person::new();
        assert_eq!(p.join(&demo).await.status, 200);
        people.push(p);
    }
    // A join records nothing in the replay store; the first renewal
    // records the chain's highest sequence.
    let joined = demo.send("GET", "/stats", &[], "").await.json();
    assert_eq!(joined["waiting"], 3, "{joined}");
    assert_eq!(joined["room_entries"], 3, "{joined}");
    for p in &mut people {
        assert_eq!(p.beat(&demo).await.status, 200);
    }
    let after = demo.send("GET", "/stats", &[], "").await.json();
    assert_eq!(after["waiting"], 3, "{after}");
    assert_eq!(after["admitted_total"], 0, "{after}");
    assert_eq!(after["reservations"], 0, "{after}");
    let records = after["replay_records"].as_u64().expect("in-memory store");
    assert_eq!(records, 3, "one replay record per renewed chain: {after}");
    let heap = |v: &serde_json::Value| v["replay_heap_bytes"].as_u64().expect("in-memory store");
    assert!(heap(&after) >= heap(&before), "{before} → {after}");
}
