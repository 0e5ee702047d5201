//! Issue 11 item 5 over real HTTP against the demo: the join door
//! (`--join-rate`). A join flood beyond the rate is answered with signed
//! passes ("come back at T") and writes nothing; a person who comes back
//! at T joins; a forged or altered pass is refused and changes nothing.

mod demo_support;

use std::time::Duration;

use demo_support::{start, Demo, Person, Reply};

const PASS: &str = "queue-door-pass";

async fn stats(demo: &Demo) -> serde_json::Value {
    demo.send("GET", "/stats", &[], "").await.json()
}

/// A join with `pass`.
async fn join_with(demo: &Demo, me: &mut Person, pass: &str) -> Reply {
    let mut h = me.headers(false);
    h.push((PASS, pass.to_owned()));
    let r = demo.send("POST", "/queue/join", &h, "").await;
    if r.status == 200 {
        me.ticket = r.json()["ticket"].as_str().map(str::to_owned);
        me.last = Some(r.json());
    }
    r
}

/// Checks a come-back answer; returns its pass and wait (ms).
fn come_back(r: &Reply) -> (String, u64) {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.code(), "come_back");
    let j = r.json();
    let wait = j["retry_after_ms"].as_u64().unwrap();
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(secs, wait.div_ceil(1000));
    (j["pass"].as_str().unwrap().to_owned(), wait)
}

/// Floods the door of `demo` (1 join/s) with `n` newcomers after one join
/// has used the burst: every one gets a pass (and its session cookie),
/// nothing reaches the room. Returns the people with their passes and
/// waits, in arrival order.
async fn flood(demo: &Demo, n: usize) -> Vec<(Person, String, u64)> {
    let mut first = Person::new();
    assert_eq!(first.join(demo).await.status, 200);
    let mut shed = Vec::new();
    for _ in 0..n {
        let mut p = Person::new();
        let r = p.join(demo).await;
        let (pass, wait) = come_back(&r);
        assert!(
            p.cookie.is_some(),
            "a new session keeps its id for the pass"
        );
        shed.push((p, pass, wait));
    }
    // First come, first served: the waits grow with the arrival order.
    for w in shed.windows(2) {
        assert!(w[1].2 + 1_500 >= w[0].2, "{} then {}", w[0].2, w[1].2);
    }
    assert!(shed.last().unwrap().2 >= (n as u64 - 2) * 1_000);
    shed
}

/// Every way of getting a pass wrong: refused, nothing changes.
async fn forged_passes_are_refused(demo: &Demo, owner: &Person, pass: &str) {
    let mut altered = pass.to_owned().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let mut thief = Person::new();
    // Its own session first (a join without a cookie would get a new one).
    let _ = thief.join(demo).await;
    let cases = [
        (owner.clone(), altered.clone()),
        (owner.clone(), "A".repeat(44)),
        (owner.clone(), "not a pass".to_owned()),
        (thief.clone(), pass.to_owned()),
    ];
    for (mut who, p) in cases {
        let r = join_with(demo, &mut who, &p).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.code(), "bad_pass");
    }
}

#[tokio::test]
async fn a_flood_at_the_door_writes_nothing_and_passes_come_back_in_order() {
    let demo = start(&["--join-rate", "1"]).await;
    let shed = flood(&demo, 30).await;
    let s = stats(&demo).await;
    assert_eq!(
        s["waiting"].as_u64().unwrap() + s["admitted_alive"].as_u64().unwrap(),
        1
    );
    assert_eq!(s["door_shed"], 30);
    let (owner, pass, wait) = &shed[0];
    forged_passes_are_refused(&demo, owner, pass).await;

    // Early: the same pass again, still nothing written.
    let mut me = owner.clone();
    let early = join_with(&demo, &mut me, pass).await;
    let (again, _) = come_back(&early);
    assert_eq!(&again, pass);
    let s = stats(&demo).await;
    assert_eq!(
        s["waiting"].as_u64().unwrap() + s["admitted_alive"].as_u64().unwrap(),
        1
    );

    // At its time: in, with a place; then heart-beats as anyone does.
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    let r = join_with(&demo, &mut me, pass).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(me.position(), 2);
    let beat = me.beat(&demo).await;
    assert_eq!(beat.status, 200, "{}", beat.body);
    assert_eq!(stats(&demo).await["door_honoured"], 1);
    // The pass again in its window: the same place, never a second.
    let r = join_with(&demo, &mut me, pass).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(me.position(), 2);
}

#[tokio::test]
async fn without_the_flag_there_is_no_door() {
    let demo = start(&[]).await;
    for _ in 0..20 {
        assert_eq!(Person::new().join(&demo).await.status, 200);
    }
    assert!(stats(&demo).await["door_shed"].is_null());
    assert!(demo_support::reservation::Config::parse(
        ["--join-rate", "-1"].map(String::from),
        None
    )
    .is_err());
}

/// On Redis: the flood creates no key at all (counted before and after),
/// and a pass handed out by one instance goes through the other.
#[cfg(feature = "redis")]
#[tokio::test]
#[ignore = "needs Redis"]
async fn a_flood_at_the_door_creates_no_redis_keys() {
    let queue = format!("qgt-door-{}", queuegate::TicketId::random());
    let flags = [
        "--redis",
        "redis://127.0.0.1:6379/",
        "--queue",
        &queue,
        "--join-rate",
        "1",
    ];
    let a = start(&flags).await;
    let b = start(&flags).await;
    let keys = || count_keys(format!("queuegate-demo-{queue}*"));
    let mut first = Person::new();
    assert_eq!(first.join(&a).await.status, 200);
    let before = keys().await;
    assert!(before > 0);
    let mut shed = Vec::new();
    for _ in 0..200 {
        let mut p = Person::new();
        let r = p.join(&a).await;
        let (pass, wait) = come_back(&r);
        shed.push((p, pass, wait));
    }
    let (owner, pass, wait) = &shed[0];
    forged_passes_are_refused(&a, owner, pass).await;
    assert_eq!(
        keys().await,
        before,
        "the flood and the forgeries wrote nothing"
    );

    // The first pass, at its time, through the other instance.
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    let mut me = owner.clone();
    let r = join_with(&b, &mut me, pass).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(keys().await > before);
    assert_eq!(me.position(), 2);
}

#[cfg(feature = "redis")]
async fn count_keys(pattern: String) -> usize {
    let mut con = redis::Client::open("redis://127.0.0.1:6379/")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379");
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
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
