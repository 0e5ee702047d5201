//! Every bypass of DESIGN.md's threat table against the demo's routes:
//! each refused with its code (problem+json) and counted in `/metrics`.

mod demo_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use demo_support::*;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy, SystemClock,
};

/// Mints an admitted ticket for `cookie` outside the demo, with the given
/// key, queue and clock (forgeries and tickets from another time).
fn mint<C: queuegate::Clock + Clone>(
    key_id: u8,
    secret: &[u8],
    queue: &str,
    clock: C,
    cookie: &str,
) -> String {
    let keys = Arc::new(KeyRing::new(key_id, secret).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new(queue),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3 * 3600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    issuer
        .join(cookie.as_bytes(), ClientTime::Absent, &decision)
        .unwrap()
        .ticket
}

#[tokio::test]
async fn every_bypass_is_refused_with_its_code_and_counted() {
    // A jump tolerance tighter than the demo's default (60 s), so the 20 s
    // jump below is `clock_jump` while staying far inside the skew limit.
    let demo = start(&["--admit-per-sec", "0", "--max-jump-ms", "5000"]).await;
    let secret = hex::decode(SECRET_HEX).unwrap();
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut expect = |r: Reply, status: u16, code: &'static str| {
        assert_eq!((r.status, r.code().as_str()), (status, code), "{}", r.body);
        *expected.entry(code).or_default() += 1;
    };

    // A waiting person, then admission, then an admitted person.
    let mut waiting = Person::new();
    waiting.join(&demo).await;
    demo.app.room.set_admit_per_sec(50.0).unwrap();
    let mut me = Person::new();
    me.join(&demo).await;
    me.beat_until_admitted(&demo).await;
    assert_eq!(me.slots(&demo).await.status, 200);
    let cookie = me.cookie.clone().unwrap();
    let ticket = me.ticket.clone().unwrap();
    let with = |t: &str| {
        vec![
            ("cookie", format!("qg_session={cookie}")),
            ("queue-ticket", t.to_owned()),
        ]
    };

    // T1: no ticket (the airplane-mode fail-open); a ticket in the query
    // string is ignored.
    for path in ["/slots", "/reserve"] {
        let method = if path == "/slots" { "GET" } else { "POST" };
        let r = demo
            .send(
                method,
                path,
                &[("cookie", format!("qg_session={cookie}"))],
                "",
            )
            .await;
        expect(r, 403, "missing");
    }
    let r = demo
        .send(
            "GET",
            &format!("/slots?queue-ticket={ticket}&ticket={ticket}"),
            &[("cookie", format!("qg_session={cookie}"))],
            "",
        )
        .await;
    expect(r, 403, "missing");

    // T2: garbage, truncated, re-encoded, oversized, two ticket headers, a
    // client time that is not a time.
    for bad in [
        "garbage".to_owned(),
        ticket[..ticket.len() - 3].to_owned(),
        format!("{ticket}="),
        ticket.replace('-', "+"),
        "A".repeat(6_000),
    ] {
        if bad == ticket {
            continue;
        }
        expect(
            demo.send("GET", "/slots", &with(&bad), "").await,
            400,
            "malformed",
        );
    }
    let mut two = with(&ticket);
    two.push(("queue-ticket", ticket.clone()));
    expect(demo.send("GET", "/slots", &two, "").await, 400, "malformed");
    expect(
        demo.send("POST", "/queue/heartbeat", &two, "").await,
        400,
        "malformed",
    );
    let mut bad_time = with(&ticket);
    bad_time.push(("queue-client-time", "yesterday".into()));
    expect(
        demo.send("GET", "/slots", &bad_time, "").await,
        400,
        "malformed",
    );

    // T3: an edited ticket; one signed with a wrong key; one naming a key
    // that is not in use.
    let mut edited = ticket.clone().into_bytes();
    let i = 30;
    edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    expect(
        demo.send("GET", "/slots", &with(&edited), "").await,
        403,
        "bad_signature",
    );
    let forged = mint(1, &[9u8; 32], QUEUE, SystemClock, &cookie);
    expect(
        demo.send("GET", "/slots", &with(&forged), "").await,
        403,
        "bad_signature",
    );
    expect(
        demo.send("POST", "/reserve", &with(&forged), "").await,
        403,
        "bad_signature",
    );
    let other_key = mint(2, &secret, QUEUE, SystemClock, &cookie);
    expect(
        demo.send("GET", "/slots", &with(&other_key), "").await,
        403,
        "unknown_key",
    );

    // T4: a waiting ticket on a protected route.
    let r = waiting.slots(&demo).await;
    assert!(r.headers.contains_key("retry-after"));
    expect(r, 429, "not_admitted");
    expect(waiting.reserve(&demo).await, 429, "not_admitted");

    // T5: a ticket past its expiry (minted two hours ago with the real key).
    let past = ManualClock::new(now_ms() - 2 * 3_600_000);
    let old = mint(1, &secret, QUEUE, past, &cookie);
    expect(
        demo.send("GET", "/slots", &with(&old), "").await,
        403,
        "expired",
    );

    // T7: an older copy of a renewed chain (a clone on a second device).
    let mut renewed = me.clone();
    renewed.beat(&demo).await;
    assert_eq!(renewed.slots(&demo).await.status, 200);
    expect(
        demo.send("GET", "/slots", &with(&ticket), "").await,
        409,
        "replayed",
    );
    expect(
        demo.send("POST", "/queue/heartbeat", &with(&ticket), "")
            .await,
        409,
        "replayed",
    );

    // T8: a clock far off; a clock moved since the ticket was issued.
    let mut skewed = renewed.clone();
    skewed.clock_offset_ms = 3_600_000;
    expect(skewed.slots(&demo).await, 403, "clock_skew");
    let mut early = Person::new();
    early.clock_offset_ms = -3_600_000;
    expect(early.join(&demo).await, 403, "clock_skew");
    let mut jumped = renewed.clone();
    jumped.clock_offset_ms = 20_000;
    expect(jumped.slots(&demo).await, 403, "clock_jump");

    // T9: someone else's ticket (another session, or none).
    let mut thief = renewed.clone();
    thief.cookie = Some("ffeeddccbbaa99887766554433221100".into());
    expect(thief.slots(&demo).await, 403, "binding_mismatch");
    expect(thief.reserve(&demo).await, 403, "binding_mismatch");
    thief.cookie = None;
    expect(thief.slots(&demo).await, 403, "binding_mismatch");

    // T10: a ticket of another queue.
    let foreign = mint(1, &secret, "concert-2021", SystemClock, &cookie);
    expect(
        demo.send("GET", "/slots", &with(&foreign), "").await,
        403,
        "wrong_queue",
    );

    // Single use: the booking is made once; a retry by the same client gets
    // the same booking (counted as a replay), never a second one.
    let first = renewed.reserve(&demo).await;
    assert_eq!(first.status, 200);
    let retry = renewed.reserve(&demo).await;
    assert_eq!(retry.status, 200);
    assert_eq!(
        retry.json()["reservation_id"],
        first.json()["reservation_id"]
    );
    *expected.entry("replayed").or_default() += 1;

    // The real person was never hurt by any of it.
    let text = demo.metrics().await;
    for code in [
        "missing",
        "malformed",
        "bad_signature",
        "unknown_key",
        "not_admitted",
        "expired",
        "offline_resumed",
        "replayed",
        "clock_skew",
        "clock_jump",
        "binding_mismatch",
        "wrong_queue",
        "store_unavailable",
    ] {
        let series = format!("queuegate_rejections_total{{code=\"{code}\"}}");
        assert!(text.contains(&series), "{series} is always listed");
        let want = expected.get(code).copied().unwrap_or(0);
        assert_eq!(demo.rejections(code).await, want, "{code}");
    }
    assert_eq!(
        expected.len(),
        11,
        "every code but offline_resumed (own test) and store_unavailable (memory state)"
    );
}
