//! A bounded flood over loopback (threats T7, T11): 5 000 requests from 32
//! concurrent keep-alive clients against an axum server on 127.0.0.1,
//! mixing garbage, forged, tampered, waiting, misbound, missing, replayed
//! and valid tickets. Every valid ticket is admitted exactly once, every
//! other request is refused with its own code, the layer's counters add up
//! to the requests sent, and the store does not grow for anything but the
//! valid tickets. Bounded in count and in time (20 s).

mod adversary;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use queuegate::layer::QueueGateLayer;
use queuegate::{ManualClock, MemoryReplayStore, Metrics, Policy, RejectionCode, ReplayMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use adversary::*;

const CLIENTS: usize = 32;
const VALID: usize = 300;
/// Each valid ticket is sent this many times: once admitted, then replayed.
const COPIES: usize = 3;
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// One request of the flood and what it must get.
#[derive(Clone)]
struct Job {
    ticket: Option<String>,
    session: String,
    /// `None` for a copy of a valid ticket: one copy gets 200, the others
    /// `replayed`, in whatever order the race decides.
    expected: Option<RejectionCode>,
    /// For valid copies: which valid ticket.
    valid_index: Option<usize>,
}

/// A small deterministic generator (xorshift64*), so that the flood is the
/// same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    f: Fixture<MemoryReplayStore>,
}

async fn serve() -> Server {
    let policy = Policy::new(QUEUE)
        .scope("reserve")
        .replay(ReplayMode::SingleUse);
    let f = Fixture::new(
        Arc::new(MemoryReplayStore::new()),
        policy,
        ManualClock::new(NOW_MS),
    );
    let metrics = Metrics::new();
    let layer = QueueGateLayer::builder(f.verifier.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let app = Router::new().route("/reserve", post(|| async { "booked" }).layer(layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, metrics, f }
}

/// Garbage of every kind, each with the one code it must get.
fn hostile_jobs(f: &Fixture<MemoryReplayStore>, rng: &mut Rng, n: usize) -> Vec<Job> {
    let valid_claims = |rng: &mut Rng| {
        let session = format!("h-{}", rng.next());
        let minted = f.admitted(session.as_bytes());
        (minted, session)
    };
    (0..n)
        .map(|i| {
            let job = |ticket: Option<String>, session: String, code| Job {
                ticket,
                session,
                expected: Some(code),
                valid_index: None,
            };
            match i % 8 {
                // Random text of a random length (never a ticket's).
                0 => {
                    // (An empty value is `missing`: a cleared cookie, an unset variable.)
                    let len = [1, 10, 175, 177, 400][rng.below(5)];
                    let text: String = (0..len)
                        .map(|_| char::from(b"abcXYZ019-_"[rng.below(11)]))
                        .collect();
                    job(Some(text), "x".into(), RejectionCode::Malformed)
                }
                // Well-encoded noise with our version, kind and key id: only
                // the MAC can refuse it.
                1 => {
                    let mut body: [u8; 132] = rng.bytes();
                    body[0] = 1;
                    body[1] = 1;
                    body[3] = KEY_ID;
                    let text = URL_SAFE_NO_PAD.encode(body);
                    job(Some(text), "x".into(), RejectionCode::BadSignature)
                }
                // Noise naming a key this server does not have.
                2 => {
                    let mut body: [u8; 132] = rng.bytes();
                    body[0] = 1;
                    body[1] = 1;
                    body[3] = 77;
                    let text = URL_SAFE_NO_PAD.encode(body);
                    job(Some(text), "x".into(), RejectionCode::UnknownKey)
                }
                // Forged: the right claims for a real session, the wrong secret.
                3 => {
                    let (minted, session) = valid_claims(rng);
                    let forged = sign_with(&[0x99; 32], &minted.claims);
                    job(Some(forged), session, RejectionCode::BadSignature)
                }
                // Tampered: one character of the tag changed.
                4 => {
                    let (minted, session) = valid_claims(rng);
                    let mut t = minted.ticket.into_bytes();
                    t[150] = if t[150] == b'A' { b'B' } else { b'A' };
                    let t = String::from_utf8(t).unwrap();
                    job(Some(t), session, RejectionCode::BadSignature)
                }
                // A real ticket presented by someone else.
                5 => {
                    let (minted, _) = valid_claims(rng);
                    job(
                        Some(minted.ticket),
                        "thief".into(),
                        RejectionCode::BindingMismatch,
                    )
                }
                // A waiting ticket on the protected route.
                6 => {
                    let session = format!("w-{}", rng.next());
                    let minted = f.join(session.as_bytes(), &wait(10, Duration::from_secs(60)));
                    job(Some(minted.ticket), session, RejectionCode::NotAdmitted)
                }
                // No ticket at all (the airplane-mode fail-open).
                _ => job(None, "x".into(), RejectionCode::Missing),
            }
        })
        .collect()
}

struct Outcome {
    job: Job,
    status: StatusCode,
    body: Vec<u8>,
}

/// Sends every job from `CLIENTS` keep-alive connections; each client takes
/// the next job from a shared queue.
async fn flood(addr: SocketAddr, jobs: Vec<Job>) -> Vec<Outcome> {
    let queue = Arc::new(Mutex::new(jobs));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let queue = queue.clone();
        let outcomes = outcomes.clone();
        clients.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            loop {
                let Some(job) = queue.lock().unwrap().pop() else {
                    break;
                };
                let mut req = Request::builder()
                    .method("POST")
                    .uri("/reserve")
                    .header("host", "127.0.0.1")
                    .header("cookie", format!("qg_session={}", job.session));
                if let Some(t) = &job.ticket {
                    req = req.header("queue-ticket", t);
                }
                let req = req.body(Empty::<Bytes>::new()).unwrap();
                sender.ready().await.unwrap();
                let res = sender.send_request(req).await.unwrap();
                let status = res.status();
                let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
                outcomes.lock().unwrap().push(Outcome { job, status, body });
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    Arc::try_unwrap(outcomes)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap()
}

fn code_in(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"code\":\"")? + 8;
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_of_mixed_tickets() {
    tokio::time::timeout(TIME_LIMIT, run_flood())
        .await
        .expect("the flood finished within its time limit");
}

async fn run_flood() {
    let server = serve().await;
    let f = &server.f;
    let mut rng = Rng(0x5eed_1234_abcd_0001);

    // Calibration: how many records one admission writes.
    let probe = f.admitted(b"probe");
    let outcomes = flood(
        server.addr,
        vec![Job {
            ticket: Some(probe.ticket),
            session: "probe".into(),
            expected: None,
            valid_index: None,
        }],
    )
    .await;
    assert_eq!(outcomes[0].status, StatusCode::OK);
    let per_admission = f.store.len();
    assert!(per_admission >= 1);

    // Phase 1: 2 000 hostile requests. Nothing may grow.
    let heap_before = f.store.heap_bytes();
    let hostile = hostile_jobs(f, &mut rng, 2_000);
    let outcomes = flood(server.addr, hostile).await;
    assert_eq!(outcomes.len(), 2_000);
    for o in &outcomes {
        let code = o.job.expected.unwrap();
        assert_eq!(o.status, code.status(), "{code}");
        assert_eq!(code_in(&o.body), Some(code.as_str()));
    }
    assert_eq!(
        f.store.len(),
        per_admission,
        "hostile requests grew the store"
    );
    assert_eq!(
        f.store.heap_bytes(),
        heap_before,
        "hostile requests grew the heap"
    );

    // Phase 2: 3 000 requests, valid tickets (each sent 3 times) shuffled
    // among more hostile ones.
    let valid: Vec<_> = (0..VALID)
        .map(|i| {
            let session = format!("v-{i}");
            (f.admitted(session.as_bytes()), session)
        })
        .collect();
    let mut jobs = hostile_jobs(f, &mut rng, 3_000 - VALID * COPIES);
    for (i, (minted, session)) in valid.iter().enumerate() {
        for _ in 0..COPIES {
            jobs.push(Job {
                ticket: Some(minted.ticket.clone()),
                session: session.clone(),
                expected: None,
                valid_index: Some(i),
            });
        }
    }
    rng.shuffle(&mut jobs);
    let sent = jobs.len() as u64;
    let outcomes = flood(server.addr, jobs).await;
    assert_eq!(outcomes.len() as u64, sent);

    let mut admitted = vec![0usize; VALID];
    let mut replayed = vec![0usize; VALID];
    for o in &outcomes {
        match (o.job.valid_index, o.job.expected) {
            (Some(i), _) => match o.status {
                StatusCode::OK => admitted[i] += 1,
                StatusCode::CONFLICT => {
                    // A copy that arrives while the first use still holds
                    // the chain is `in_progress`; after it committed,
                    // `replayed`. Either way it is refused.
                    let code = code_in(&o.body);
                    assert!(
                        code == Some("replayed") || code == Some("in_progress"),
                        "{code:?}"
                    );
                    replayed[i] += 1;
                }
                other => panic!("valid ticket {i} got {other}"),
            },
            (None, Some(code)) => {
                assert_eq!(o.status, code.status(), "{code}");
                assert_eq!(code_in(&o.body), Some(code.as_str()));
            }
            (None, None) => unreachable!(),
        }
    }
    assert!(
        admitted.iter().all(|&n| n == 1),
        "every valid ticket admitted exactly once"
    );
    assert!(replayed.iter().all(|&n| n == COPIES - 1));

    // The counters add up to the requests sent (1 probe + 2 000 + 3 000).
    let total = 1 + 2_000 + sent;
    let m = server.metrics.snapshot();
    assert_eq!(m.admissions, 1 + VALID as u64);
    assert_eq!(m.admissions + m.rejections_total(), total);
    assert_eq!(m.monitored_total(), 0);
    assert_eq!(
        m.rejections(RejectionCode::Replayed) + m.rejections(RejectionCode::InProgress),
        (VALID * (COPIES - 1)) as u64
    );
    // hostile_jobs cycles through its 8 kinds by index.
    let hostile_of = |code: RejectionCode| {
        let count = |n: usize| (0..n).filter(|i| kind_code(i % 8) == code).count() as u64;
        count(2_000) + count(3_000 - VALID * COPIES)
    };
    for code in [
        RejectionCode::Malformed,
        RejectionCode::BadSignature,
        RejectionCode::UnknownKey,
        RejectionCode::BindingMismatch,
        RejectionCode::NotAdmitted,
        RejectionCode::Missing,
    ] {
        assert!(hostile_of(code) >= 300);
        assert_eq!(m.rejections(code), hostile_of(code), "{code}");
    }

    // Only the valid tickets wrote records.
    assert_eq!(f.store.len(), per_admission * (1 + VALID));
}

fn kind_code(kind: usize) -> RejectionCode {
    match kind {
        0 => RejectionCode::Malformed,
        2 => RejectionCode::UnknownKey,
        1 | 3 | 4 => RejectionCode::BadSignature,
        5 => RejectionCode::BindingMismatch,
        6 => RejectionCode::NotAdmitted,
        _ => RejectionCode::Missing,
    }
}

/// A 1 MB header over TCP is refused by the HTTP server before the layer
/// sees it; nothing is counted as admitted and nothing is stored.
#[tokio::test]
async fn a_one_megabyte_header_over_tcp() {
    let server = serve().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /reserve HTTP/1.1\r\nhost: 127.0.0.1\r\nqueue-ticket: {}\r\ncontent-length: 0\r\n\r\n",
        "A".repeat(1 << 20)
    );
    // The server may close the connection before reading it all.
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{}",
        &text[..text.len().min(80)]
    );
    let m = server.metrics.snapshot();
    assert_eq!(m.admissions, 0);
    assert!(server.f.store.is_empty());
}
