//! Server CPU per request: a hyper route behind the queuegate layer against
//! the same route bare, under a loopback load generator.
//!
//! Run: `cargo bench --bench http_overhead`
//!
//! Each server runs on one thread (a current-thread tokio runtime: accept,
//! HTTP parsing, the layer and the route all on that thread), so the thread's
//! CPU time (user + system, from the kernel's accounting) divided by the
//! requests it answered is its CPU per request (time spent descheduled is
//! not counted, but a busy machine still raises it: colder caches, fewer
//! requests per wake-up; see the A/A mode below). A second thread drives `QG_HTTP_CONNECTIONS` (default 4)
//! keep-alive HTTP/1.1 connections over 127.0.0.1 as fast as answers come
//! back. Both sides are measured in 8 short rounds (bare then layer, then
//! layer then bare, and so on; each round starts both servers afresh in
//! that order) of `QG_HTTP_SECS / 8` seconds each (default 8 s per side,
//! at most 10), after a short warm-up, and bounded to 5M requests per round.
//!
//! The request is what an admitted browser sends: the ticket in the
//! `queue-ticket` header and the session cookie it is bound to. The layer
//! runs its defaults: session replay check against the in-memory store, the
//! system clock, metrics counters.
//!
//! `QG_HTTP_AA=1` serves the bare route on both sides (an A/A run), to see
//! how far the ratio moves with no layer at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use queuegate::layer::QueueGateLayer;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, MemoryReplayStore, Policy, SystemClock, Verifier,
};
use tower::ServiceBuilder;

const SESSION: &str = "s3ssion-0123456789abcdef";
const MAX_REQUESTS_PER_ROUND: u64 = 5_000_000;
/// Short rounds in alternating order, so that a change in the machine's
/// load falls on both sides alike.
const ROUNDS: usize = 8;

/// The route: a small fixed answer, as cheap as a route can be, so the
/// ratio shows the layer's share at its largest.
async fn route(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"booked\n"))))
}

/// A CPU clock of the calling thread that other threads can read.
fn this_thread_cpu_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid for the calling thread and
    // `clock` is a valid place to write the id.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid failed");
    clock
}

fn read_cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec; `clock` is a live thread's CPU clock.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A server on its own thread: its address, its thread's CPU clock, and a
/// sender that stops it.
struct Server {
    addr: SocketAddr,
    cpu: libc::clockid_t,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn serve<S, B>(service: S) -> Server
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            ready_tx
                .send((listener.local_addr().unwrap(), this_thread_cpu_clock()))
                .unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let (tcp, _) = accepted.expect("accept");
                        tcp.set_nodelay(true).unwrap();
                        let service = TowerToHyperService::new(service.clone());
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        });
                    }
                }
            }
        });
    });
    let (addr, cpu) = ready_rx.recv().expect("the server started");
    Server {
        addr,
        cpu,
        stop,
        thread,
    }
}

/// Drives `connections` keep-alive connections until `stop`, counting
/// answered requests in `done`. Every answer must be 200 with the route's
/// body: a refused request would make the layer look cheap.
fn load(
    addr: SocketAddr,
    ticket: Arc<str>,
    connections: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut clients = Vec::new();
            for _ in 0..connections {
                let (ticket, stop, done) = (ticket.clone(), stop.clone(), done.clone());
                clients.push(tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    tcp.set_nodelay(true).unwrap();
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .expect("handshake");
                    tokio::spawn(conn);
                    let cookie = format!("qg_session={SESSION}");
                    while !stop.load(Ordering::Relaxed) {
                        let req = Request::get("/book")
                            .header("host", "127.0.0.1")
                            .header("queue-ticket", &*ticket)
                            .header("cookie", &cookie)
                            .body(Empty::<Bytes>::new())
                            .unwrap();
                        sender.ready().await.expect("connection open");
                        let res = sender.send_request(req).await.expect("answer");
                        let status = res.status();
                        let body = res.into_body().collect().await.expect("body").to_bytes();
                        assert!(
                            status == 200 && &body[..] == b"booked\n",
                            "refused: {status}"
                        );
                        if done.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS_PER_ROUND {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for c in clients {
                c.await.expect("client task");
            }
        });
    })
}

#[derive(Default, Clone, Copy)]
struct Tally {
    requests: u64,
    server_cpu: Duration,
    wall: Duration,
}

/// One round against `server`: warm up, then measure for `secs`.
fn round(server: &Server, ticket: &Arc<str>, connections: usize, secs: f64) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let client = load(
        server.addr,
        ticket.clone(),
        connections,
        stop.clone(),
        done.clone(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, n0, t0) = (
        read_cpu_clock(server.cpu),
        done.load(Ordering::Relaxed),
        Instant::now(),
    );
    let until = t0 + Duration::from_secs_f64(secs);
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (cpu1, n1, t1) = (
        read_cpu_clock(server.cpu),
        done.load(Ordering::Relaxed),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    client.join().expect("load generator");
    Tally {
        requests: n1 - n0,
        server_cpu: cpu1 - cpu0,
        wall: t1 - t0,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not name this
    // benchmark skips it, as criterion's benches do.
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"http_overhead".contains(&filter) {
            return;
        }
    }
    let secs_per_side: f64 = std::env::var("QG_HTTP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0_f64)
        .clamp(1.0, 10.0);
    let connections: usize = std::env::var("QG_HTTP_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_usize)
        .clamp(1, 64);

    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("vaccine-53-54");
    let issuer = Issuer::new(keys.clone(), policy.clone(), SystemClock, store.clone()).unwrap();
    let decision = JoinDecision {
        position: 1,
        live_for: Duration::from_secs(3_600),
        estimated_wait: Duration::ZERO,
        admit: true,
    };
    let ticket: Arc<str> = issuer
        .join(SESSION.as_bytes(), ClientTime::Absent, &decision)
        .unwrap()
        .ticket
        .into();
    let verifier = Verifier::new(keys, policy, SystemClock, store).unwrap();

    // `QG_HTTP_AA=1` runs two bare servers instead (an A/A run): the
    // ratio it prints is the measurement's own bias and noise.
    let aa = std::env::var("QG_HTTP_AA").is_ok_and(|v| v == "1");
    // Both servers are started afresh for each round, in the opposite order
    // each time: a first-started server (thread placement, warm caches)
    // must not favour one side.
    let start_both = |bare_first: bool| {
        let bare = || serve(tower::service_fn(route));
        let gated = || {
            if aa {
                serve(tower::service_fn(route))
            } else {
                serve(
                    ServiceBuilder::new()
                        .layer(QueueGateLayer::new(verifier.clone()))
                        .service_fn(route),
                )
            }
        };
        if bare_first {
            let b = bare();
            (b, gated())
        } else {
            let g = gated();
            (bare(), g)
        }
    };

    println!(
        "http_overhead: {connections} keep-alive connections over loopback, \
         {secs_per_side} s per side in {ROUNDS} rounds of alternating order"
    );
    let mut sides = [Tally::default(); 2];
    for round_no in 0..ROUNDS {
        let bare_first = round_no % 2 == 0;
        let (bare, gated) = start_both(bare_first);
        let order = if bare_first { [0, 1] } else { [1, 0] };
        for i in order {
            let server = if i == 0 { &bare } else { &gated };
            let t = round(server, &ticket, connections, secs_per_side / ROUNDS as f64);
            sides[i].requests += t.requests;
            sides[i].server_cpu += t.server_cpu;
            sides[i].wall += t.wall;
        }
        for server in [bare, gated] {
            let _ = server.stop.send(());
            server.thread.join().expect("server thread");
        }
    }
    let per_request = |t: &Tally| t.server_cpu.as_nanos() as f64 / t.requests.max(1) as f64;
    let second = if aa {
        "bare again (A/A)"
    } else {
        "behind the layer"
    };
    for (name, t) in [("bare route", &sides[0]), (second, &sides[1])] {
        println!(
            "  {name:<17} {:>9} requests  {:>8.0} req/s  server CPU {:>6.2} µs/request",
            t.requests,
            t.requests as f64 / t.wall.as_secs_f64(),
            per_request(t) / 1_000.0,
        );
    }
    let (b, g) = (per_request(&sides[0]), per_request(&sides[1]));
    println!(
        "  second ÷ first, server CPU per request: {:.3} ({:+.2} µs per request{})",
        g / b,
        (g - b) / 1_000.0,
        if aa {
            "; A/A: no layer on either side"
        } else {
            "; target ≤ 1.05"
        }
    );
}
