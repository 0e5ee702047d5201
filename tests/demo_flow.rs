//! The booking demo over real HTTP on 127.0.0.1: the whole flow, going
//! offline and coming back, a lost heartbeat response, the opening order.

mod demo_support;

use std::time::Duration;

use demo_support::reservation::Config;
use demo_support::*;

#[tokio::test]
async fn join_wait_admit_browse_and_book_once() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let page = demo.send("GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    for id in [
        "status",
        "position",
        "ahead",
        "wait",
        "progress",
        "book-form",
        "book-button",
        "reservation",
        "error",
        "rejoin",
    ] {
        assert!(
            page.body.contains(&format!("id=\"{id}\"")),
            "#{id} on the page"
        );
    }
    // Every call carries the client's clock; nothing is loaded from elsewhere.
    assert!(page
        .body
        .contains(r#""queue-client-time": String(Date.now())"#));
    assert!(!page.body.contains("src=\"http") && !page.body.contains("<link"));

    let mut other = Person::new();
    assert_eq!(other.join(&demo).await.status, 200);
    let mut me = Person::new();
    let r = me.join(&demo).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    for key in ["ticket", "position", "ahead", "admitted", "retry_after_ms"] {
        assert!(j.get(key).is_some(), "{key} in {j}");
    }
    assert_eq!(
        (j["position"].as_u64(), j["ahead"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(j["admitted"], false);
    assert!(me.cookie.is_some(), "the session cookie is set");

    // Waiting: heartbeats renew, the protected routes say not yet.
    for _ in 0..3 {
        let r = me.beat(&demo).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["admitted"], false);
    }
    let r = me.slots(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (429, "not_admitted"));

    // Admission starts: the front first, then me.
    demo.app.room.set_admit_per_sec(50.0).unwrap();
    me.beat_until_admitted(&demo).await;
    // Heart-beating on the booking form keeps it admitted.
    for _ in 0..2 {
        let r = me.beat(&demo).await;
        assert_eq!(r.status, 200);
        assert!(me.admitted());
    }
    let r = me.slots(&demo).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["slots"].as_array().unwrap().len() > 3);
    // Browsing is reusable within the chain.
    assert_eq!(me.slots(&demo).await.status, 200);

    let r = me.reserve(&demo).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["reservation_id"].as_str().unwrap().to_owned();
    // The same client retrying (its response was lost) gets the same booking.
    let again = me.reserve(&demo).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["reservation_id"], id.as_str());
    // Anyone else with that ticket is refused.
    let mut thief = me.clone();
    thief.cookie = Some("00112233445566778899aabbccddeeff".into());
    let r = thief.reserve(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (403, "binding_mismatch"));
    // Once booked the place in the room is gone.
    let r = me.beat(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (410, "ended"));

    assert_eq!(demo.metric("queuegate_room_admitted_total").await, 2);
    assert_eq!(demo.metric("queuegate_admissions_total").await, 3);
    assert_eq!(demo.rejections("not_admitted").await, 1);
    assert!(demo.metrics().await.contains("queuegate_waiting"));
}

#[tokio::test]
async fn airplane_mode_while_waiting_and_while_admitted() {
    let demo = start(&["--admit-per-sec", "0", "--liveness-ms", "1500"]).await;
    let mut me = Person::new();
    assert_eq!(me.join(&demo).await.status, 200);
    assert_eq!(me.beat(&demo).await.status, 200);
    let stale = me.clone();
    // Offline past the liveness deadline, then back with the stale ticket.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let mut back = stale.clone();
    let r = back.beat(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (403, "offline_resumed"));
    assert!(r.json()["detail"].as_str().unwrap().contains("rejoin"));
    // Rejoining works: a new chain at the back.
    let r = me.join(&demo).await;
    assert_eq!(r.status, 200);
    assert_ne!(me.ticket, stale.ticket);
    assert_eq!(me.beat(&demo).await.status, 200);

    // Admitted, on the booking form, then offline.
    demo.app.room.set_admit_per_sec(50.0).unwrap();
    me.beat_until_admitted(&demo).await;
    assert_eq!(me.slots(&demo).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let r = me.slots(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (403, "offline_resumed"));
    let r = me.reserve(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (403, "offline_resumed"));
    let mut again = me.clone();
    let r = again.beat(&demo).await;
    assert_eq!((r.status, r.code().as_str()), (403, "offline_resumed"));
    // Rejoin and book.
    assert_eq!(me.join(&demo).await.status, 200);
    if !me.admitted() {
        me.beat_until_admitted(&demo).await;
    }
    assert_eq!(me.reserve(&demo).await.status, 200);
    assert_eq!(demo.rejections("offline_resumed").await, 4);
}

#[tokio::test]
async fn a_lost_heartbeat_response_costs_nothing() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let mut me = Person::new();
    me.join(&demo).await;
    let position = me.position();
    // The same ticket twice at once (the first response was lost).
    let (mut a, mut b) = (me.clone(), me.clone());
    let (ra, rb) = tokio::join!(a.beat(&demo), b.beat(&demo));
    assert_eq!(
        (ra.status, rb.status),
        (200, 200),
        "{} / {}",
        ra.body,
        rb.body
    );
    assert_eq!(a.position(), position);
    assert_eq!(b.position(), position);
    // Whichever answer arrived carries on the chain.
    let r = b.beat(&demo).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.position(), position, "the place is kept");
    assert_eq!(demo.rejections("replayed").await, 0);
}

#[tokio::test]
async fn the_opening_order_is_not_the_join_order() {
    let demo = start(&["--admit-per-sec", "4", "--opens-in-ms", "3000"]).await;
    let mut people = Vec::new();
    for _ in 0..10 {
        let mut p = Person::new();
        let r = p.join(&demo).await;
        assert_eq!(r.status, 200);
        assert_eq!(p.position(), 0, "no place before the opening");
        assert!(p.last.as_ref().unwrap()["opens_in_ms"].as_u64().unwrap() > 0);
        people.push(p);
    }
    let r = people[0].slots(&demo).await;
    assert_eq!(r.code(), "not_admitted");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    // Rounds of heartbeats; note in which round each was admitted.
    let mut round_of = vec![None; people.len()];
    for round in 0..40 {
        for (i, p) in people.iter_mut().enumerate() {
            let r = p.beat(&demo).await;
            assert_eq!(r.status, 200, "{}", r.body);
            if p.admitted() && round_of[i].is_none() {
                round_of[i] = Some(round);
            }
        }
        if round_of.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let positions: Vec<u64> = people.iter().map(Person::position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=10).collect::<Vec<_>>());
    assert_ne!(positions, sorted, "places were drawn, not given by arrival");
    // Admission follows the drawn places, not arrival.
    for i in 0..10 {
        for j in 0..10 {
            if round_of[i].unwrap() < round_of[j].unwrap() {
                assert!(positions[i] < positions[j], "{positions:?} {round_of:?}");
            }
        }
    }
    // A late joiner is behind all of them.
    let mut late = Person::new();
    late.join(&demo).await;
    assert!(late.position() > 10);
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let parse = |args: &[&str]| Config::parse(args.iter().map(|s| s.to_string()), None).map(|_| ());
    let err = parse(&["--admit-per-sec", "fast"]).unwrap_err();
    assert!(err.contains("--admit-per-sec"), "{err}");
    assert!(parse(&["--addr", "nowhere"])
        .unwrap_err()
        .contains("--addr"));
    assert!(parse(&["--liveness-ms", "-5"])
        .unwrap_err()
        .contains("--liveness-ms"));
    assert!(parse(&["--secret", "abcd"]).unwrap_err().contains("64 hex"));
    assert!(parse(&["--frobnicate"])
        .unwrap_err()
        .contains("unknown flag"));
    assert!(parse(&["--queue"]).unwrap_err().contains("needs a value"));
    let err = Config::parse(vec![], Some("zz".repeat(40))).unwrap_err();
    assert!(err.contains("QUEUEGATE_SECRET"), "{err}");
    let c = Config::parse(vec![], None).unwrap();
    assert!(c.random_secret);
    assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
    // --redis parses but the Redis state is not built yet: a clear error.
    let c = Config::parse(
        ["--redis", "redis://127.0.0.1:6379"].map(String::from),
        None,
    )
    .unwrap();
    let err = demo_support::reservation::build(&c).err().unwrap();
    assert!(err.contains("not built yet"), "{err}");
}
