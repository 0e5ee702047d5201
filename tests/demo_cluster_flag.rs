//! The demo's `--redis-cluster` flag: parsed beside `--redis` (one of the
//! two), never printed, refused by a build without Redis support or by the
//! in-memory build; with Redis, two demo instances share one Cluster.

mod demo_support;

use demo_support::reservation::Config;

const SEEDS: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

fn parse(flags: &[&str]) -> Result<Config, String> {
    Config::parse(flags.iter().map(|s| s.to_string()), None)
}

#[test]
fn the_flag_parses_and_is_refused_where_it_cannot_work() {
    let c = parse(&["--redis-cluster", SEEDS]).unwrap();
    assert_eq!(c.redis_cluster.as_ref().map(Vec::len), Some(3));
    assert!(parse(&["--redis-cluster", "127.0.0.1:7000"])
        .unwrap_err()
        .contains("redis:// URLs"));
    assert!(parse(&[
        "--redis",
        "redis://127.0.0.1:6379",
        "--redis-cluster",
        SEEDS
    ])
    .unwrap_err()
    .contains("one of them"));
    let secret = parse(&["--redis-cluster", "redis://:hunter2@127.0.0.1:7000"]).unwrap();
    assert!(!format!("{secret:?}").contains("hunter2"));
    // The synchronous, in-memory build refuses it.
    let err = demo_support::reservation::build(&c).err().unwrap();
    assert!(err.starts_with("--redis"), "{err}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_build_without_redis_refuses_it() {
    let c = parse(&["--redis-cluster", SEEDS]).unwrap();
    let err = demo_support::reservation::build_async(&c)
        .await
        .err()
        .unwrap();
    assert!(err.contains("--features redis"), "{err}");
}

/// Two demo instances on one Cluster: join on one, heartbeat and book on
/// the other; the ticket consumed there is `replayed` on the first, which
/// answers with the booking already made.
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn two_instances_on_one_cluster_share_the_room_and_single_use() {
    use demo_support::{start, Person};
    let queue = format!("qgt-demo-{}", queuegate::TicketId::random());
    let flags = ["--redis-cluster", SEEDS, "--queue", &queue];
    let a = start(&flags).await;
    let b = start(&flags).await;
    let mut me = Person::new();
    let r = me.join(&a).await;
    assert_eq!(r.status, 200, "{}", r.body);
    me.beat_until_admitted(&b).await;
    let booked = b
        .send("POST", "/reserve", &me.headers(true), r#"{"slot":"S24"}"#)
        .await;
    assert_eq!(booked.status, 200, "{}", booked.body);
    assert!(booked.json()["reservation_id"].is_string());
    let again = a
        .send("POST", "/reserve", &me.headers(true), r#"{"slot":"S25"}"#)
        .await;
    // Refused `replayed` by the layer (the consumption is shared), and
    // answered with the booking made on the other instance (the demo's
    // bookings live in the Cluster too): the same reservation.
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["replayed"], true, "{}", again.body);
    assert_eq!(
        again.json()["reservation_id"],
        booked.json()["reservation_id"]
    );
    assert_eq!(again.json()["slot"], "S24");
}
