//! The demo's `--redis-cluster` flag: parsed beside `--redis` (one of the
//! two), never printed, refused by a build without Redis support or by the
//! in-memory build; with Redis, two demo instances share one Cluster.

#[cfg(feature = "redis")]
mod cluster_support;
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
/// the other; the ticket consumed there is refused on the first, to its
/// holder (`replayed`, or the same booking again: never a second one) and
/// to anyone else, and on the instance that booked it as well.
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn two_instances_on_one_cluster_share_the_room_and_single_use() {
    use demo_support::{start, Person};
    let _turn = cluster::whole();
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
    let reservation = booked.json()["reservation_id"]
        .as_str()
        .expect("a reservation id")
        .to_owned();

    // The same client again, on the other instance and on the same one:
    // refused as `replayed`, or answered with the booking it made (a retry
    // whose answer was lost), never booked a second time.
    for (demo, slot) in [(&a, "S25"), (&b, "S26"), (&a, "S24")] {
        let again = demo
            .send(
                "POST",
                "/reserve",
                &me.headers(true),
                &format!(r#"{{"slot":"{slot}"}}"#),
            )
            .await;
        if again.status == 200 {
            let j = again.json();
            assert_eq!(j["replayed"], true, "{}", again.body);
            assert_eq!(j["reservation_id"], reservation.as_str(), "{}", again.body);
        } else {
            assert_eq!(
                (again.status, again.code().as_str()),
                (409, "replayed"),
                "{}",
                again.body
            );
        }
    }

    // Another client (a session of its own) presenting the consumed
    // ticket, on either instance: refused, nothing booked.
    let mut thief = Person::new();
    assert_eq!(thief.join(&a).await.status, 200);
    thief.ticket = me.ticket.clone();
    for demo in [&a, &b] {
        let stolen = thief.reserve(demo).await;
        assert_ne!(stolen.status, 200, "{}", stolen.body);
        assert!(
            ["binding_mismatch", "replayed"].contains(&stolen.code().as_str()),
            "{}",
            stolen.body
        );
        assert!(!stolen.body.contains("reservation_id"), "{}", stolen.body);
    }
}

/// Bad input changes nothing on the Cluster: a flood of garbage, truncated,
/// edited and other sessions' tickets, and of sessions the room never saw
/// (validly signed: unknown bindings), on both demo instances' queue and
/// booking routes, leaves the set of keys on every primary as it was.
///
/// The keys are the demo's (its prefix, `queuegate-demo-<queue>`, scanned
/// on every primary): the Cluster is shared with other tests, whose keys
/// come and go, so a whole-node `DBSIZE` could not tell.
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_flood_of_bad_input_creates_no_key_on_any_primary() {
    use demo_support::{start, Person, SECRET_HEX};
    use queuegate::room::http::SessionKeys;

    let _turn = cluster::whole();
    let queue = format!("qgt-flood-{}", queuegate::TicketId::random());
    let flags = ["--redis-cluster", SEEDS, "--queue", &queue];
    let a = start(&flags).await;
    let b = start(&flags).await;
    // Someone honest is in the room, admitted, and has booked: their
    // tickets are the material of the edits and thefts below.
    let mut honest = Person::new();
    assert_eq!(honest.join(&a).await.status, 200);
    honest.beat_until_admitted(&b).await;
    let waiting_ticket = {
        let mut w = Person::new();
        assert_eq!(w.join(&b).await.status, 200);
        w.ticket.clone().unwrap()
    };
    assert_eq!(honest.reserve(&a).await.status, 200);
    let real = honest.ticket.clone().unwrap();
    // Let the ticks settle (the tick's lease and the snapshot keys).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let prefix = format!("queuegate-demo-{queue}");
    let before = cluster::keys_on_primaries(&prefix);
    assert!(
        !before.is_empty(),
        "the demo keeps its state under {prefix}"
    );

    let sessions = SessionKeys::new(1, &hex::decode(SECRET_HEX).unwrap()).unwrap();
    let mut flipped = real.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let tickets = [
        real.clone(),
        waiting_ticket,
        flipped,
        real[..real.len() / 2].to_owned(),
        "garbage".to_owned(),
        "A".repeat(4_000),
        format!("{real}{real}"),
    ];
    let mut refused = 0;
    for i in 0..600 {
        // A session the room never saw, or none at all.
        let mut who = Person::new();
        if i % 3 != 0 {
            who.cookie = Some(sessions.mint());
        }
        who.ticket = Some(tickets[i % tickets.len()].clone());
        let demo = if i % 2 == 0 { &a } else { &b };
        for (method, path, with_ticket) in [
            ("POST", "/queue/heartbeat", true),
            ("POST", "/reserve", true),
            ("GET", "/queue/status", true),
            ("GET", "/slots", true),
            ("POST", "/queue/leave", false),
        ] {
            let r = demo
                .send(method, path, &who.headers(with_ticket), r#"{"slot":"S30"}"#)
                .await;
            if path != "/queue/leave" {
                assert!(
                    r.status >= 400 || path == "/slots" || path == "/queue/status",
                    "{path} served bad input: {} {}",
                    r.status,
                    r.body
                );
            }
            assert!(!r.body.contains("reservation_id"), "{}", r.body);
            refused += u64::from(r.status >= 400);
        }
    }
    assert!(refused >= 600 * 2, "the flood was refused ({refused})");
    let after = cluster::keys_on_primaries(&prefix);
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "bad input created keys: {new:?}");
}

/// The Cluster as these tests need it (`tests/cluster_support`).
#[cfg(feature = "redis")]
mod cluster {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::cluster_support as support;

    /// The shared turn (no failover test runs meanwhile), once the Cluster
    /// is whole; fails when it is absent.
    pub fn whole() -> support::Turn {
        let turn = support::shared_turn();
        support::wait_whole(Duration::from_secs(20));
        turn
    }

    /// Every key under `prefix` on every primary.
    pub fn keys_on_primaries(prefix: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for port in support::primaries() {
            let mut cursor = "0".to_owned();
            loop {
                let out = support::cli(
                    port,
                    &[
                        "scan",
                        &cursor,
                        "match",
                        &format!("{prefix}:*"),
                        "count",
                        "1000",
                    ],
                )
                .expect("the primary answers");
                let mut lines = out.lines();
                cursor = lines.next().expect("a cursor").trim().to_owned();
                keys.extend(lines.filter(|l| !l.is_empty()).map(str::to_owned));
                if cursor == "0" {
                    break;
                }
            }
        }
        keys
    }
}
