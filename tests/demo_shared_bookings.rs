//! Issue 11 item 7: with `--redis` or `--redis-cluster`, the demo's
//! bookings live in the shared store, so two instances behave as one
//! booking site: a booking made on one and retried on the other gets the
//! same reservation, never a second one; a copied ticket is refused; a
//! slot's seats are counted over every instance.
#![cfg(feature = "redis")]

mod demo_support;

use demo_support::reservation::SLOT_SEATS;
use demo_support::{start, Demo, Person};
use queuegate::TicketId;

const REDIS: &str = "redis://127.0.0.1:6379/";
const SEEDS: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

async fn stats(demo: &Demo) -> serde_json::Value {
    demo.send("GET", "/stats", &[], "").await.json()
}

async fn book(demo: &Demo, me: &Person, slot: &str) -> demo_support::Reply {
    let body = format!(r#"{{"slot":"{slot}"}}"#);
    demo.send("POST", "/reserve", &me.headers(true), &body)
        .await
}

/// What both stores must show. Returns the queue's key prefix.
async fn two_instances_book_as_one_site(store: &[&str]) -> String {
    let queue = format!("qgt-book-{}", TicketId::random());
    let mut flags = store.to_vec();
    flags.extend(["--queue", &queue]);
    let a = start(&flags).await;
    let b = start(&flags).await;

    // Join on A, heart-beat and book on B.
    let mut me = Person::new();
    assert_eq!(me.join(&a).await.status, 200);
    me.beat_until_admitted(&b).await;
    let first = book(&b, &me, "S24").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.json()["reservation_id"].as_str().unwrap().to_owned();
    assert!(first.json().get("replayed").is_none(), "{}", first.body);

    // The same session retries on A (its answer was lost), even asking
    // for another slot: the booking B made, marked replayed.
    for (demo, slot) in [(&a, "S24"), (&a, "S31"), (&b, "S11")] {
        let again = book(demo, &me, slot).await;
        assert_eq!(again.status, 200, "{}", again.body);
        let j = again.json();
        assert_eq!(j["reservation_id"], id.as_str(), "{}", again.body);
        assert_eq!(j["slot"], "S24");
        assert_eq!(j["replayed"], true);
    }

    // The ticket copied to another session: refused on either instance,
    // before the replay state is consulted.
    let mut thief = Person::new();
    assert_eq!(thief.join(&a).await.status, 200);
    thief.ticket = me.ticket.clone();
    for demo in [&a, &b] {
        let stolen = book(demo, &thief, "S24").await;
        assert_eq!(stolen.status, 403, "{}", stolen.body);
        assert_eq!(stolen.code(), "binding_mismatch");
    }

    // Another person books on A: both instances count two bookings.
    let mut other = Person::new();
    assert_eq!(other.join(&b).await.status, 200);
    other.beat_until_admitted(&a).await;
    let second = book(&a, &other, "S24").await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_ne!(second.json()["reservation_id"], id.as_str());
    for demo in [&a, &b] {
        assert_eq!(stats(demo).await["reservations"], 2);
    }
    format!("queuegate-demo-{queue}")
}

/// Fills slot `S12` in Redis by hand; a booking of it on either instance
/// is `slot_taken`, nothing written, and the person books S13 at once.
async fn a_full_slot_is_full_on_every_instance(store: &[&str]) {
    let queue = format!("qgt-seat-{}", TicketId::random());
    let mut flags = store.to_vec();
    flags.extend(["--queue", &queue]);
    let a = start(&flags).await;
    let b = start(&flags).await;
    let prefix = format!("queuegate-demo-{queue}");
    let fill = redis::cmd("SET")
        .arg(format!("{prefix}:seats:{{{prefix}:S12}}"))
        .arg(SLOT_SEATS)
        .clone();
    let _: () = if store[0] == "--redis" {
        fill.query_async(&mut redis().await).await.unwrap()
    } else {
        fill.query_async(&mut cluster().await).await.unwrap()
    };
    let mut me = Person::new();
    assert_eq!(me.join(&a).await.status, 200);
    me.beat_until_admitted(&a).await;
    for demo in [&a, &b] {
        let full = book(demo, &me, "S12").await;
        assert_eq!(full.status, 409, "{}", full.body);
        assert_eq!(full.json()["error"], "slot_taken");
    }
    let booked = book(&b, &me, "S13").await;
    assert_eq!(booked.status, 200, "{}", booked.body);
    assert_eq!(stats(&a).await["reservations"], SLOT_SEATS as u64 + 1);
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379")
}

async fn count_keys(pattern: &str) -> usize {
    let mut con = redis().await;
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn two_instances_on_one_redis_book_once_per_chain() {
    let prefix = two_instances_book_as_one_site(&["--redis", REDIS]).await;
    // In Redis itself: two bookings, 2 seats taken in S24.
    assert_eq!(count_keys(&format!("{prefix}:booking:*")).await, 2);
    let mut con = redis().await;
    let seats: u64 = redis::cmd("GET")
        .arg(format!("{prefix}:seats:{{{prefix}:S24}}"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(seats, 2);
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn a_slot_full_in_redis_is_full_on_every_instance() {
    a_full_slot_is_full_on_every_instance(&["--redis", REDIS]).await;
}

async fn cluster() -> redis::cluster_async::ClusterConnection {
    let seeds: Vec<&str> = SEEDS.split(',').collect();
    redis::cluster::ClusterClient::new(seeds)
        .unwrap()
        .get_async_connection()
        .await
        .expect("this test needs the Redis Cluster on 127.0.0.1:7000-7005")
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn two_instances_on_one_cluster_book_once_per_chain() {
    let prefix = two_instances_book_as_one_site(&["--redis-cluster", SEEDS]).await;
    let mut con = cluster().await;
    let seats: u64 = redis::cmd("GET")
        .arg(format!("{prefix}:seats:{{{prefix}:S24}}"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(seats, 2);
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_slot_full_on_the_cluster_is_full_on_every_instance() {
    a_full_slot_is_full_on_every_instance(&["--redis-cluster", SEEDS]).await;
}
