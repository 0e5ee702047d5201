//! A bounded flood over loopback: thousands of garbage and forged tickets
//! and repeated joins, while real clients keep their places and get
//! admitted; the garbage never grows the state.

mod demo_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use demo_support::*;

const FLOOD_REQUESTS: u64 = 3_000;
const FLOOD_WORKERS: u64 = 24;
const FLOOD_CAP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tickets_and_joins_changes_nothing_for_real_people() {
    let demo = Arc::new(start(&["--admit-per-sec", "0"]).await);
    let mut real = Vec::new();
    for _ in 0..3 {
        let mut p = Person::new();
        assert_eq!(p.join(&demo).await.status, 200);
        real.push(p);
    }
    // The attacker holds one session and rejoins with it over and over.
    let mut attacker = Person::new();
    attacker.join(&demo).await;
    let attacker_cookie = attacker.cookie.clone().unwrap();
    let real_ticket = real[0].ticket.clone().unwrap();
    let baseline = demo.metric("queuegate_store_entries").await;
    assert!(baseline >= 4, "four chains are held");

    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..FLOOD_WORKERS {
        let demo = demo.clone();
        let sent = sent.clone();
        let cookie = attacker_cookie.clone();
        let real_ticket = real_ticket.clone();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= FLOOD_REQUESTS || started.elapsed() > FLOOD_CAP {
                    break;
                }
                let session = ("cookie", format!("qg_session={cookie}"));
                let (method, path, headers, want): (_, _, Vec<(&str, String)>, &[u16]) =
                    match (n + w) % 5 {
                        0 => (
                            "GET",
                            "/slots",
                            vec![session, ("queue-ticket", format!("garbage-{n}"))],
                            &[400],
                        ),
                        1 => {
                            // A forged copy of a real ticket: one byte changed.
                            let mut t = real_ticket.clone().into_bytes();
                            let i = 20 + (n as usize % 60);
                            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
                            let t = String::from_utf8(t).unwrap();
                            (
                                "POST",
                                "/reserve",
                                vec![session, ("queue-ticket", t)],
                                &[403, 400],
                            )
                        }
                        2 => (
                            "POST",
                            "/queue/heartbeat",
                            vec![session, ("queue-ticket", "x".repeat(n as usize % 700))],
                            &[400, 403],
                        ),
                        // The same session rejoining from many connections
                        // at once: each rejoin re-mints the chain's ticket,
                        // and one that keeps losing the race to the others
                        // is told `busy` (503, retry in a moment).
                        3 => ("POST", "/queue/join", vec![session], &[200, 503]),
                        _ => (
                            // Someone else's (real) ticket.
                            "GET",
                            "/slots",
                            vec![session, ("queue-ticket", real_ticket.clone())],
                            // Waiting ticket (429) or, once admitted, not
                            // bound to this session (403).
                            &[403, 429],
                        ),
                    };
                let r = demo.send(method, path, &headers, "").await;
                assert!(want.contains(&r.status), "{path}: {} {}", r.status, r.body);
                seen.push(r.status);
            }
            seen.len()
        }));
    }

    // Meanwhile the real people keep heart-beating; admission starts halfway.
    let mut beats = 0;
    while workers.iter().any(|w| !w.is_finished()) && started.elapsed() < FLOOD_CAP {
        for p in real.iter_mut() {
            let r = p.beat(&demo).await;
            assert_eq!(r.status, 200, "a real client lost its place: {}", r.body);
        }
        beats += 1;
        if beats == 5 {
            demo.app.room.set_admit_per_sec(50.0).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answered = 0;
    for w in workers {
        answered += w.await.unwrap();
    }
    assert!(answered >= 1_000, "the flood ran ({answered} requests)");
    eprintln!(
        "flood: {answered} requests answered in {:?}, real heartbeat rounds: {beats}",
        started.elapsed()
    );

    // The real people kept their places and get through.
    let positions: Vec<u64> = real.iter().map(Person::position).collect();
    assert_eq!(positions, [1, 2, 3]);
    demo.app.room.set_admit_per_sec(50.0).unwrap();
    for p in real.iter_mut() {
        if !p.admitted() {
            p.beat_until_admitted(&demo).await;
        }
        assert_eq!(p.slots(&demo).await.status, 200);
    }
    // Garbage and repeated joins held nothing new; the real clients' own
    // replay records (one per chain checked) and the attacker's (a rejoin
    // re-mints the chain's ticket, advancing its one record) are the only
    // additions, however many joins the flood sent.
    let after = demo.metric("queuegate_store_entries").await;
    assert!(
        after <= baseline + 4,
        "store entries grew from {baseline} to {after}"
    );
    assert!(demo.rejections("malformed").await > 100);
    assert!(demo.rejections("bad_signature").await > 100);
    let stolen = demo.rejections("binding_mismatch").await + demo.rejections("not_admitted").await;
    assert!(stolen > 100);
}
