//! The crowd: an open-loop load test of the booking demo
//! (`examples/reservation.rs`) over real HTTP on 127.0.0.1, with cheaters.
//!
//! ```sh
//! cargo build --release --example reservation --example crowd
//! target/release/examples/crowd --people 10000 --svg crowd.svg --json crowd.json
//! target/release/examples/crowd --help
//! ```
//!
//! It starts the demo as a separate process (so that the demo's resident
//! memory and CPU time can be read from `/proc/PID/`), then plays many
//! people exactly as the page's script does: join (keeping whatever
//! `qg_session` cookie `Set-Cookie` hands out), heart-beat at the
//! `retry_after_ms` it was given with `queue-client-time`, load the slots
//! and book once when admitted, and sometimes send a booking again as if
//! its answer had been lost. It is open-loop: arrivals and heartbeats are
//! sent on their schedule, whatever the answers to earlier requests are
//! doing. One timer heap holds every simulated person's next step and one
//! task (the driver) owns every person's state; a request is a short task
//! on a pooled hyper client (one pool per 127.0.0.x source address), not a
//! task per person.
//!
//! A share of the crowd cheats (see `--help`); every kind has the refusal
//! code the README names, and the run checks it. The run ends by itself
//! (everyone done, or `--max-secs`), prints a report (text, and JSON with
//! `--json`), draws a chart of the run with `--svg`, and exits with status 1
//! if a check failed: an honest person who did not book exactly once, an
//! admission out of place order, a cheater's booking, a cheater refused
//! with another code than expected, or any request that failed other than
//! by an expected refusal. Speed figures are reported, never checked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: crowd [flags]

The crowd (honest people and cheaters):
  --people N             people arriving, cheaters included (default 10000)
  --arrive-secs S        arrivals spread evenly over S seconds (default 10)
  --cheaters F           share of the crowd for EACH cheater kind (default 0.01)
  --share-KIND F         the share of one kind: airplane, fail-open, clock,
                         copy, double
  --bots N               bots that join --bot-joins times keeping their
                         cookie (default 2)
  --fresh-bots N         bots that join --bot-joins times with no cookie,
                         a new session each time (default 1)
  --bot-joins N          joins per bot (default 2000)
  --lost-share F         share of honest people who send their booking again
                         as if its answer was lost (default 0.05)
  --think-ms N           longest time from admission to booking (default 1500)
  --seed N               random seed (default 1)
The demo:
  --demo PATH            the demo binary (default: `reservation` next to
                         this program)
  --admit-per-sec N      passed to the demo (default 500)
  --liveness-ms N        passed to the demo (default: the demo's own)
  --demo-arg ARG         one more flag for the demo (repeat as needed)
  --instances N          demo processes to start (default 1); more than one
                         needs --redis or --redis-cluster (a build with
                         --features redis)
  --redis URL            passed to every demo: they share the room in Redis
  --redis-cluster URLS   the same on a Redis Cluster (comma-separated seed
                         nodes, redis://127.0.0.1:7000,...)
  --target URL           use a demo already running at URL (repeat for
                         several instances) instead of starting one
  --pid PID              with --target: the demo's process id, for memory
                         and CPU figures (repeat per instance)
The run:
  --max-secs N           the crowd's hard time limit (default 300)
  --timeout-ms N         a request without an answer after N ms fails
                         (default 10000)
  --max-conns N          requests in flight at once, over all connections
                         (default 2048); a request waits for a free one,
                         and the wait counts in its latency and timeout
  --sources N            127.0.0.x source addresses to spread connections
                         over when ports run short (default 1)
  --phase-rate N         requests/s in the CPU phases (default 400; 0 skips
                         the phases)
  --phase-secs N         seconds per CPU phase (default 3)
  --json PATH            write the report as JSON
  --svg PATH             draw the run over time (SVG)
  --forwarded-for        each person sends its own X-Forwarded-For address
                         (10.x.y.z; a bot keeps one), for a demo started with
                         --demo-arg=--trusted-proxy=127.0.0.0/8 and a
                         per-address join limit (--demo-arg=--joins-per-addr=N)
";

// ---------------------------------------------------------------- flags --

#[derive(Debug, Clone)]
struct Args {
    people: u32,
    arrive_secs: f64,
    shares: [f64; 5],
    bots: u32,
    fresh_bots: u32,
    bot_joins: u32,
    lost_share: f64,
    think_ms: u64,
    seed: u64,
    demo: Option<String>,
    admit_per_sec: String,
    liveness_ms: Option<u64>,
    demo_args: Vec<String>,
    instances: u32,
    redis: Option<String>,
    redis_cluster: Option<String>,
    targets: Vec<String>,
    pids: Vec<u32>,
    max_secs: u64,
    timeout_ms: u64,
    sources: u32,
    max_conns: u32,
    phase_rate: u64,
    phase_secs: u64,
    json: Option<String>,
    svg: Option<String>,
    forwarded_for: bool,
}

/// The cheater kinds with a share of the crowd, in `--share-KIND` order.
const CHEAT_KINDS: [Kind; 5] = [
    Kind::Airplane,
    Kind::FailOpen,
    Kind::Clock,
    Kind::Copier,
    Kind::Double,
];

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        people: 10_000,
        arrive_secs: 10.0,
        shares: [0.01; 5],
        bots: 2,
        fresh_bots: 1,
        bot_joins: 2000,
        lost_share: 0.05,
        think_ms: 1500,
        seed: 1,
        demo: None,
        admit_per_sec: "500".into(),
        liveness_ms: None,
        demo_args: Vec::new(),
        instances: 1,
        redis: None,
        redis_cluster: None,
        targets: Vec::new(),
        pids: Vec::new(),
        max_secs: 300,
        timeout_ms: 10_000,
        sources: 1,
        max_conns: 2048,
        phase_rate: 400,
        phase_secs: 3,
        json: None,
        svg: None,
        forwarded_for: false,
    };
    let mut share_set = [false; 5];
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        if flag == "--forwarded-for" {
            a.forwarded_for = true;
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{name}: expected a whole number, got {v:?}"))
        };
        let frac = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| format!("{name}: expected a share from 0 to 1, got {v:?}"))
        };
        match name.as_str() {
            "--people" => a.people = u32::try_from(num(&value)?).map_err(|e| e.to_string())?,
            "--arrive-secs" => {
                a.arrive_secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--arrive-secs: expected seconds, got {value:?}"))?
            }
            "--cheaters" => {
                let f = frac(&value)?;
                for (i, s) in a.shares.iter_mut().enumerate() {
                    if !share_set[i] {
                        *s = f;
                    }
                }
            }
            "--share-airplane" | "--share-fail-open" | "--share-clock" | "--share-copy"
            | "--share-double" => {
                let i = [
                    "--share-airplane",
                    "--share-fail-open",
                    "--share-clock",
                    "--share-copy",
                    "--share-double",
                ]
                .iter()
                .position(|n| *n == name)
                .expect("listed");
                a.shares[i] = frac(&value)?;
                share_set[i] = true;
            }
            "--bots" => a.bots = num(&value)? as u32,
            "--fresh-bots" => a.fresh_bots = num(&value)? as u32,
            "--bot-joins" => a.bot_joins = num(&value)?.max(1) as u32,
            "--lost-share" => a.lost_share = frac(&value)?,
            "--think-ms" => a.think_ms = num(&value)?,
            "--seed" => a.seed = num(&value)?,
            "--demo" => a.demo = Some(value),
            "--admit-per-sec" => a.admit_per_sec = value,
            "--liveness-ms" => a.liveness_ms = Some(num(&value)?),
            "--demo-arg" => a.demo_args.push(value),
            "--instances" => a.instances = num(&value)?.clamp(1, 16) as u32,
            "--redis" => a.redis = Some(value),
            "--redis-cluster" => a.redis_cluster = Some(value),
            "--target" => a.targets.push(value.trim_end_matches('/').to_owned()),
            "--pid" => a.pids.push(num(&value)? as u32),
            "--max-secs" => a.max_secs = num(&value)?.max(1),
            "--timeout-ms" => a.timeout_ms = num(&value)?.max(1),
            "--sources" => a.sources = num(&value)?.clamp(1, 250) as u32,
            "--max-conns" => a.max_conns = num(&value)?.clamp(2, 60_000) as u32,
            "--phase-rate" => a.phase_rate = num(&value)?,
            "--phase-secs" => a.phase_secs = num(&value)?.max(1),
            "--json" => a.json = Some(value),
            "--svg" => a.svg = Some(value),
            _ => return Err(format!("unknown flag {flag:?}\n\n{USAGE}")),
        }
    }
    if a.shares.iter().sum::<f64>() > 0.9 {
        return Err("the cheater shares add up to more than 0.9 of the crowd".into());
    }
    if a.redis.is_some() && a.redis_cluster.is_some() {
        return Err("--redis and --redis-cluster: give one of them".into());
    }
    if a.instances > 1 && a.redis.is_none() && a.redis_cluster.is_none() && a.targets.is_empty() {
        return Err(
            "--instances above 1 needs --redis URL or --redis-cluster URLS (the instances share the room)"
                .into(),
        );
    }
    Ok(a)
}

// ------------------------------------------------------------- helpers --

/// A small deterministic generator (SplitMix64): the crowd is the same for
/// the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Latency histogram in microseconds: 32 buckets per power of two (about
/// 3 % resolution), exact maximum.
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; 64 + 40 * 32],
            n: 0,
            max: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < 64 {
            return v as usize;
        }
        let e = 63 - u64::from(v.leading_zeros());
        let sub = (v >> (e - 5)) & 31;
        (64 + (e - 6) * 32 + sub) as usize
    }
    fn lower(i: usize) -> u64 {
        if i < 64 {
            return i as u64;
        }
        let k = (i - 64) as u64;
        (32 + k % 32) << (k / 32 + 1)
    }
    fn add(&mut self, us: u64) {
        let i = Self::index(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }
    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let want = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::lower(i + 1).saturating_sub(1).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------- HTTP --

/// One connection pool from one source address, with a bound on the
/// requests in flight through it (so on its connections): without one, a
/// stall in the demo makes the pool open a connection per waiting request
/// until file descriptors or ports run out, and the run measures that
/// instead of the room.
#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

fn clients(sources: u32, max_conns: u32) -> Vec<Http> {
    // At least two pools, so that the two copies of a double-presented
    // ticket certainly travel on two connections.
    let pools = sources.max(2);
    let per_pool = (max_conns / pools).max(1) as usize;
    (0..pools)
        .map(|i| {
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            // With one source the kernel picks the address and port at
            // `connect` (by the whole 4-tuple, cheap). An explicit source
            // address means a `bind` to port 0 first, which must find a
            // port free on that address for every destination: with tens
            // of thousands of sockets in TIME_WAIT it scans for long, on a
            // runtime thread, and the crowd stalls.
            if sources > 1 {
                let last = 1 + (i % sources) as u8;
                c.set_local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))));
            }
            Http {
                client: Client::builder(TokioExecutor::new())
                    // No cap on idle connections: when every connection
                    // is busy, the pool dials a new one and races it
                    // against the next one to come back; a cap would close
                    // the loser at once, and at thousands of requests a
                    // second that churn runs the source ports out
                    // (`bind` slows to a crawl, then fails). The permits
                    // bound the busy ones, so the total stays bounded.
                    .pool_idle_timeout(Duration::from_secs(120))
                    .build(c),
                in_flight: Arc::new(tokio::sync::Semaphore::new(per_pool)),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Join,
    Heartbeat,
    Slots,
    Reserve,
    Ping,
    Stats,
}

impl Route {
    const ALL: [Route; 6] = [
        Route::Join,
        Route::Heartbeat,
        Route::Slots,
        Route::Reserve,
        Route::Ping,
        Route::Stats,
    ];
    fn path(self) -> &'static str {
        match self {
            Route::Join => "/queue/join",
            Route::Heartbeat => "/queue/heartbeat",
            Route::Slots => "/slots",
            Route::Reserve => "/reserve",
            Route::Ping => "/ping",
            Route::Stats => "/stats",
        }
    }
    fn method(self) -> Method {
        match self {
            Route::Join | Route::Heartbeat | Route::Reserve => Method::POST,
            _ => Method::GET,
        }
    }
}

/// One request as a person's script would send it.
#[derive(Clone, Default)]
struct Call {
    cookie: Option<Arc<str>>,
    ticket: Option<Arc<str>>,
    /// The device clock's error (ms); `None`: no `queue-client-time`.
    skew_ms: Option<i64>,
    body: Option<String>,
    /// Sent by the page's script (a browser adds `Sec-Fetch-Site`).
    browser: bool,
    /// The client's own address as a proxy in front would name it.
    forwarded: Option<u32>,
    /// The join door's pass (`queue-door-pass`), on a join.
    pass: Option<Arc<str>>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// `qg_session=VALUE` from `Set-Cookie` (name and value as given,
    /// whatever VALUE's format), to send back in `Cookie`.
    session: Option<Arc<str>>,
    body: Value,
}

impl Reply {
    fn code(&self) -> String {
        match self.body.get("code").and_then(Value::as_str) {
            Some(c) => c.to_owned(),
            None => format!("http_{}", self.status),
        }
    }
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn str_field(&self, name: &str) -> Option<Arc<str>> {
        self.body.get(name).and_then(Value::as_str).map(Arc::from)
    }
}

async fn send(
    http: &Http,
    base: &str,
    route: Route,
    call: &Call,
    timeout: Duration,
) -> Result<Reply, String> {
    let mut b = Request::builder()
        .method(route.method())
        .uri(format!("{base}{}", route.path()));
    if call.browser {
        b = b.header("sec-fetch-site", "same-origin");
    }
    if let Some(n) = call.forwarded {
        let [_, x, y, z] = n.to_be_bytes();
        b = b.header("x-forwarded-for", format!("10.{x}.{y}.{z}"));
    }
    if let Some(skew) = call.skew_ms {
        b = b.header("queue-client-time", (wall_ms() + skew).to_string());
    }
    if let Some(c) = &call.cookie {
        b = b.header(header::COOKIE, &**c);
    }
    if let Some(t) = &call.ticket {
        b = b.header("queue-ticket", &**t);
    }
    if let Some(p) = &call.pass {
        b = b.header("queue-door-pass", &**p);
    }
    let body = match &call.body {
        Some(text) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(text.clone()))
        }
        None => Full::new(Bytes::new()),
    };
    let req = b.body(body).map_err(|e| format!("request: {e}"))?;
    let res = tokio::time::timeout(timeout, async {
        // The wait for a free connection is inside the timeout: a request
        // is late from the time its person sent it.
        let _permit = http.in_flight.acquire().await.map_err(|e| format!("{e}"))?;
        let res = http.client.request(req).await.map_err(|e| format!("{e}"))?;
        let status = res.status().as_u16();
        let session = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            // `qg_session=…`, or a prefixed name (`__Host-qg_session=…`).
            .find(|v| {
                v.split_once('=')
                    .is_some_and(|(k, _)| k.ends_with("qg_session"))
            })
            .map(Arc::from);
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok::<_, String>(Reply {
            status,
            session,
            body,
        })
    })
    .await
    .map_err(|_| "no answer before the timeout".to_owned())??;
    Ok(res)
}

// ------------------------------------------------------------- the demo --

struct Demo {
    bases: Vec<String>,
    pids: Vec<u32>,
    children: Vec<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn start_demo(a: &Args, queue: &str) -> Result<Demo, String> {
    if !a.targets.is_empty() {
        return Ok(Demo {
            bases: a.targets.clone(),
            pids: a.pids.clone(),
            children: Vec::new(),
        });
    }
    let bin = match &a.demo {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name(format!("reservation{}", std::env::consts::EXE_SUFFIX)),
    };
    if !bin.exists() {
        return Err(format!(
            "the demo binary {} is missing: build it first \
             (cargo build --release --example reservation), or pass --demo PATH",
            bin.display()
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| e.to_string())?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut demo = Demo {
        bases: Vec::new(),
        pids: Vec::new(),
        children: Vec::new(),
    };
    for _ in 0..a.instances {
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--admit-per-sec", &a.admit_per_sec])
            .args(["--queue", queue])
            .env("QUEUEGATE_SECRET", &secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(ms) = a.liveness_ms {
            cmd.args(["--liveness-ms", &ms.to_string()]);
        }
        if let Some(url) = &a.redis {
            cmd.args(["--redis", url]);
        }
        if let Some(seeds) = &a.redis_cluster {
            cmd.args(["--redis-cluster", seeds]);
        }
        cmd.args(&a.demo_args);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        demo.pids.push(child.id());
        demo.children.push(child);
        demo.bases.push(format!("http://127.0.0.1:{port}"));
    }
    Ok(demo)
}

async fn wait_ready(http: &Http, demo: &mut Demo) -> Result<(), String> {
    for base in demo.bases.clone() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = send(
                http,
                &base,
                Route::Ping,
                &Call::default(),
                Duration::from_secs(1),
            )
            .await
            {
                if r.status < 500 {
                    break;
                }
            }
            for c in &mut demo.children {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("the demo exited at start: {status}"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the demo at {base} did not answer within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Resident memory of `pid` in bytes (`VmRSS` in `/proc/PID/status`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The TCP connections `pid` holds open (its file descriptors that are
/// sockets; the listening socket is one of them).
fn open_sockets(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count();
    Some(n as u64)
}

/// CPU time of `pid` in microseconds: the sum of its threads' run time in
/// `/proc/PID/task/*/schedstat` (nanoseconds, so short phases are measured
/// finely), or user + system from `/proc/PID/stat` (clock ticks, 10 ms) if
/// schedstat is missing.
fn cpu_us(pid: u32) -> Option<u64> {
    let mut sum_ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                sum_ns += ns;
                any = true;
            }
        }
    }
    if any {
        return Some(sum_ns / 1000);
    }
    cpu_us_ticks(pid)
}

/// How many times the demo's threads were put on a CPU (the third field
/// of `/proc/PID/task/*/schedstat`): a request that wakes a second thread
/// shows here as more than one run per request.
fn cpu_runs(pid: u32) -> Option<u64> {
    let mut runs = 0u64;
    let mut any = false;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(n) = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u64>().ok())
        {
            runs += n;
            any = true;
        }
    }
    any.then_some(runs)
}

fn cpu_us_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // after the last ')'. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}

fn total<F: Fn(u32) -> Option<u64>>(pids: &[u32], f: F) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| f(*p)).sum()
}

// -------------------------------------------------------------- people --

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Honest,
    /// Goes offline past its liveness deadline, then resumes.
    Airplane,
    /// A fail-open script: books without a ticket or with its waiting one.
    FailOpen,
    /// A device clock an hour off.
    Clock,
    /// Presents an honest person's admitted ticket from another session.
    Copier,
    /// Presents its single-use ticket twice at once on two connections.
    Double,
    /// Joins again and again keeping its cookie.
    Bot,
    /// Joins again and again with no cookie: a new session each time.
    FreshBot,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Honest => "honest",
            Kind::Airplane => "airplane",
            Kind::FailOpen => "fail_open",
            Kind::Clock => "clock",
            Kind::Copier => "copy",
            Kind::Double => "double",
            Kind::Bot => "bot",
            Kind::FreshBot => "fresh_bot",
        }
    }
    /// The refusal codes this kind's cheat must meet (the README's).
    fn expected(self) -> &'static [&'static str] {
        match self {
            Kind::Honest => &[],
            Kind::Airplane => &["offline_resumed"],
            Kind::FailOpen => &["missing", "not_admitted"],
            Kind::Clock => &["clock_skew"],
            Kind::Copier => &["binding_mismatch"],
            Kind::Double => &["replayed", "in_progress"],
            // Any refusal of a bot's join is a good answer (a limiter's
            // `rate_limited`, a full room's `busy`...).
            Kind::Bot | Kind::FreshBot => &["*"],
        }
    }
    fn is_bot(self) -> bool {
        matches!(self, Kind::Bot | Kind::FreshBot)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    /// Done as expected (honest: booked; cheater: refused as expected).
    Done,
    /// Done otherwise (the reason is in the unexpected list).
    Wrong,
}

struct Person {
    kind: Kind,
    /// Kind-specific choice (fail-open: no ticket / waiting ticket;
    /// airplane: offline while waiting / while admitted).
    variant: u8,
    skew_ms: i64,
    client: u16,
    cookie: Option<Arc<str>>,
    ticket: Option<Arc<str>>,
    position: u32,
    admitted: bool,
    admit_recv_us: u64,
    last_wait_send_us: u64,
    busy: bool,
    offline: bool,
    fate: Fate,
    lost_retry: bool,
    /// Copier for an honest owner, owner for a copier.
    partner: u32,
    ids: Vec<Arc<str>>,
    codes: Vec<String>,
    double_left: u8,
    joins_left: u32,
    places: u32,
    extra_places: u32,
    live_until_ms: i64,
    /// The join door's pass, until the join it was given for is made.
    pass: Option<Arc<str>>,
}

impl Person {
    fn new(kind: Kind) -> Self {
        Person {
            kind,
            variant: 0,
            skew_ms: 0,
            client: 0,
            cookie: None,
            ticket: None,
            position: 0,
            admitted: false,
            admit_recv_us: 0,
            last_wait_send_us: 0,
            busy: false,
            offline: false,
            fate: Fate::Pending,
            lost_retry: false,
            partner: NONE,
            ids: Vec::new(),
            codes: Vec::new(),
            double_left: 0,
            joins_left: 0,
            places: 0,
            extra_places: 0,
            live_until_ms: 0,
            pass: None,
        }
    }
    fn distinct_ids(&self) -> usize {
        let mut ids: Vec<&str> = self.ids.iter().map(|s| &**s).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

const NONE: u32 = u32::MAX;

/// The phase people's `--forwarded-for` addresses start here (10.128.0.0),
/// clear of the crowd's.
const PHASE_ADDRS: u32 = 0x0080_0000;

/// What a scheduled step or a finished request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Arrive,
    Beat,
    Slots,
    Book,
    /// The booking sent again, its answer "lost".
    BookAgain,
    /// One of the two copies of a double-presented ticket.
    Double,
    /// Back from airplane mode with the stale ticket.
    Resume,
    /// The copier presents the owner's ticket.
    Copy,
    /// The fail-open script books.
    FailOpen,
    BotJoin,
}

struct Done {
    who: u32,
    step: Step,
    /// The request as sent (for a resume: heartbeat or booking).
    route: Route,
    sent_us: u64,
    recv_us: u64,
    result: Result<Reply, String>,
}

/// Per second of the crowd phase.
#[derive(Default, Clone)]
struct Second {
    waiting: u64,
    admitted: u64,
    bookings: u64,
    refusals: BTreeMap<String, u64>,
}

#[derive(Default, Clone)]
struct RouteStats {
    hist: Option<Hist>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// The demo's memory before the crowd (after the idle and ping phases).
struct Warm {
    rss: Option<u64>,
    /// Its open sockets then.
    conns: Option<u64>,
}

/// What the sampler task reads every second from the demo.
#[derive(Clone, Default, Debug)]
struct Sample {
    at_s: f64,
    waiting: Option<u64>,
    admitted_total: Option<u64>,
    replay_records: Option<u64>,
    replay_heap_bytes: Option<u64>,
    rss: Option<u64>,
    /// The demo's open sockets.
    conns: Option<u64>,
}

// --------------------------------------------------------------- driver --

struct Driver {
    a: Args,
    t0: Instant,
    people: Vec<Person>,
    heap: BinaryHeap<Reverse<(u64, u32, Step)>>,
    tx: mpsc::UnboundedSender<Done>,
    http: Arc<Vec<Http>>,
    bases: Arc<Vec<String>>,
    rng: Rng,
    in_flight: usize,
    routes: BTreeMap<Route, RouteStats>,
    seconds: Vec<Second>,
    unexpected: u64,
    unexpected_examples: Vec<String>,
    requests: u64,
    pending: usize,
}

impl Driver {
    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn at(&mut self, due_us: u64, who: u32, step: Step) {
        self.heap.push(Reverse((due_us, who, step)));
    }

    fn second(&mut self, us: u64) -> &mut Second {
        let s = (us / 1_000_000) as usize;
        if self.seconds.len() <= s {
            self.seconds.resize(s + 1, Second::default());
        }
        &mut self.seconds[s]
    }

    fn unexpected(&mut self, who: u32, what: String) {
        self.unexpected += 1;
        if self.unexpected_examples.len() < 20 {
            let kind = self.people[who as usize].kind.name();
            self.unexpected_examples
                .push(format!("{kind} #{who}: {what}"));
        }
    }

    fn finish(&mut self, who: u32, fate: Fate) {
        let p = &mut self.people[who as usize];
        if p.fate == Fate::Pending {
            p.fate = fate;
            self.pending -= 1;
        }
    }

    fn fire(&mut self, who: u32, step: Step, route: Route, call: Call, client: usize) {
        let http = self.http.clone();
        let bases = self.bases.clone();
        let base = self.rng.below(bases.len() as u64) as usize;
        let tx = self.tx.clone();
        let t0 = self.t0;
        let timeout = Duration::from_millis(self.a.timeout_ms);
        self.in_flight += 1;
        self.requests += 1;
        tokio::spawn(async move {
            let sent_us = t0.elapsed().as_micros() as u64;
            let result = send(&http[client], &bases[base], route, &call, timeout).await;
            let recv_us = t0.elapsed().as_micros() as u64;
            let _ = tx.send(Done {
                who,
                step,
                route,
                sent_us,
                recv_us,
                result,
            });
        });
    }

    /// The call a person's page would make now.
    fn call(&self, who: u32, with_ticket: bool, body: Option<String>) -> Call {
        let p = &self.people[who as usize];
        Call {
            cookie: p.cookie.clone(),
            ticket: if with_ticket { p.ticket.clone() } else { None },
            skew_ms: Some(p.skew_ms),
            body,
            browser: !p.kind.is_bot(),
            forwarded: self.a.forwarded_for.then_some(who),
            pass: p.pass.clone(),
        }
    }

    fn slot_body(&mut self) -> String {
        let slot = format!("S{}{}", 1 + self.rng.below(3), 1 + self.rng.below(4));
        json!({ "slot": slot }).to_string()
    }

    fn run_step(&mut self, who: u32, step: Step) {
        let i = who as usize;
        let now = self.now_us();
        let p = &self.people[i];
        if p.fate != Fate::Pending && step != Step::BotJoin {
            return;
        }
        // One request at a time per person, as the page (a double's two
        // copies are fired together, on purpose).
        if p.busy && matches!(step, Step::Beat | Step::Book) {
            self.at(now + 50_000, who, step);
            return;
        }
        match step {
            Step::Arrive => {
                self.people[i].busy = true;
                let call = self.call(who, false, None);
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Join, call, c);
            }
            Step::BotJoin => {
                let p = &mut self.people[i];
                if p.joins_left == 0 {
                    return;
                }
                p.joins_left -= 1;
                // A cookie-keeping bot sends its first join alone, for the
                // cookie (variant 1 once that answer came).
                let first = p.variant == 0;
                let mut call = self.call(who, false, None);
                if self.people[i].kind == Kind::FreshBot {
                    call.cookie = None;
                }
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Join, call, c);
                // Open loop: the next join at its time, answered or not
                // (the cookie-keeping bot waits for its first cookie).
                let gap = (self.a.arrive_secs.max(1.0) * 1e6 / f64::from(self.a.bot_joins)) as u64;
                if !(first && self.people[i].kind == Kind::Bot) && self.people[i].joins_left > 0 {
                    self.at(now + gap, who, Step::BotJoin);
                }
            }
            Step::Beat => {
                let p = &self.people[i];
                if p.offline || p.ticket.is_none() {
                    return;
                }
                self.people[i].busy = true;
                let call = self.call(who, true, None);
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Heartbeat, call, c);
            }
            Step::Slots => {
                self.people[i].busy = true;
                let call = self.call(who, true, None);
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Slots, call, c);
            }
            Step::Book => {
                let p = &self.people[i];
                // An owner whose ticket was copied books after the copier
                // tried (so the copier's attempt meets a live chain).
                if p.partner != NONE
                    && p.kind == Kind::Honest
                    && self.people[p.partner as usize].fate == Fate::Pending
                {
                    self.at(now + 100_000, who, step);
                    return;
                }
                let body = self.slot_body();
                let call = self.call(who, true, Some(body));
                let c = self.people[i].client as usize;
                if self.people[i].kind == Kind::Double {
                    self.people[i].double_left = 2;
                    self.people[i].busy = true;
                    let other = (c + 1) % self.http.len();
                    self.fire(who, Step::Double, Route::Reserve, call.clone(), c);
                    self.fire(who, Step::Double, Route::Reserve, call, other);
                } else {
                    self.people[i].busy = true;
                    self.fire(who, step, Route::Reserve, call, c);
                }
            }
            Step::Resume => {
                let p = &mut self.people[i];
                p.offline = false;
                p.busy = true;
                let (route, body) = if p.admitted {
                    (Route::Reserve, Some(self.slot_body()))
                } else {
                    (Route::Heartbeat, None)
                };
                let call = self.call(who, true, body);
                let c = self.people[i].client as usize;
                self.fire(who, step, route, call, c);
            }
            Step::Copy => {
                let owner = self.people[i].partner as usize;
                let body = self.slot_body();
                let mut call = self.call(who, false, Some(body));
                call.ticket = self.people[owner].ticket.clone();
                self.people[i].busy = true;
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Reserve, call, c);
            }
            Step::FailOpen => {
                let with_ticket = self.people[i].variant == 1;
                let body = self.slot_body();
                let call = self.call(who, with_ticket, Some(body));
                self.people[i].busy = true;
                let c = self.people[i].client as usize;
                self.fire(who, step, Route::Reserve, call, c);
            }
            Step::BookAgain | Step::Double => unreachable!("fired directly"),
        }
    }

    /// A room answer (join or heartbeat) with a ticket: take it in.
    fn take_ticket(&mut self, who: u32, d: &Done, r: &Reply) -> bool {
        let Some(ticket) = r.str_field("ticket") else {
            self.unexpected(who, format!("{:?}: 200 without a ticket", d.route));
            return false;
        };
        let i = who as usize;
        if let Some(s) = &r.session {
            self.people[i].cookie = Some(s.clone());
        }
        let admitted = r.body.get("admitted").and_then(Value::as_bool) == Some(true);
        let position = r.body.get("position").and_then(Value::as_u64).unwrap_or(0) as u32;
        let live_until = live_until_ms(&ticket);
        let p = &mut self.people[i];
        p.ticket = Some(ticket);
        p.pass = None;
        if position != 0 {
            p.position = position;
        }
        if let Some(ms) = live_until {
            p.live_until_ms = ms;
        }
        if admitted && !p.admitted {
            p.admitted = true;
            p.admit_recv_us = d.recv_us;
            self.second(d.recv_us).admitted += 1;
        } else if !admitted && d.route == Route::Heartbeat {
            p.last_wait_send_us = p.last_wait_send_us.max(d.sent_us);
        }
        true
    }

    fn retry_after_us(r: &Reply) -> u64 {
        let ms = match r.body.get("retry_after_ms") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(1000),
            Some(Value::Null) => 2000, // admission paused: ask again later
            _ => 1000,
        };
        ms.max(100) * 1000
    }

    /// Admitted for the first time: load the slots, book after a think.
    fn on_admitted(&mut self, who: u32, now: u64) {
        let i = who as usize;
        let kind = self.people[i].kind;
        if kind == Kind::Airplane {
            // Offline with the admitted ticket (or, for the other half,
            // already offline while waiting).
            self.go_offline(who, now);
            return;
        }
        let partner = self.people[i].partner;
        if kind == Kind::Honest && partner != NONE {
            // The ticket leaks to the copier at once.
            let copier = &self.people[partner as usize];
            if copier.cookie.is_some() && !copier.busy && copier.fate == Fate::Pending {
                self.at(now, partner, Step::Copy);
            }
        }
        self.at(now, who, Step::Slots);
        let think = 200_000 + self.rng.below(self.a.think_ms.max(200) * 1000);
        self.at(now + think, who, Step::Book);
    }

    fn go_offline(&mut self, who: u32, now: u64) {
        let p = &mut self.people[who as usize];
        p.offline = true;
        // Past the ticket's own deadline (read from its claims, so that the
        // demo's deadlines can change), with a margin.
        let wait_ms = if p.live_until_ms > 0 {
            (p.live_until_ms - wall_ms()).max(0) as u64
        } else {
            self.a.liveness_ms.unwrap_or(30_000)
        };
        self.at(now + (wait_ms + 1500) * 1000, who, Step::Resume);
    }

    fn refusal(&mut self, who: u32, d: &Done, code: &str) {
        let recv = d.recv_us;
        *self
            .second(recv)
            .refusals
            .entry(code.to_owned())
            .or_default() += 1;
        self.people[who as usize].codes.push(code.to_owned());
    }

    fn on_done(&mut self, d: Done) {
        self.in_flight -= 1;
        let who = d.who;
        let i = who as usize;
        let lat = d.recv_us.saturating_sub(d.sent_us);
        {
            let rs = self.routes.entry(d.route).or_default();
            rs.hist.get_or_insert_with(Hist::new).add(lat);
            match &d.result {
                Ok(r) => *rs.statuses.entry(r.status).or_default() += 1,
                Err(_) => rs.errors += 1,
            }
        }
        if d.step != Step::Double || self.people[i].double_left <= 1 {
            self.people[i].busy = false;
        }
        let now = self.now_us();
        let kind = self.people[i].kind;
        let r = match d.result {
            Ok(ref r) => r,
            Err(ref e) => {
                self.unexpected(who, format!("{:?} failed: {e}", d.route));
                // The page keeps trying after a network error.
                match d.step {
                    Step::Arrive => self.at(now + 2_000_000, who, Step::Arrive),
                    Step::Beat => self.at(now + 2_000_000, who, Step::Beat),
                    Step::Book => self.at(now + 2_000_000, who, Step::Book),
                    Step::Double => {
                        self.people[i].double_left -= 1;
                        if self.people[i].double_left == 0 {
                            self.finish(who, Fate::Wrong);
                        }
                    }
                    Step::Slots | Step::BotJoin => {}
                    _ => self.finish(who, Fate::Wrong),
                }
                return;
            }
        };
        let code = if r.ok() { None } else { Some(r.code()) };
        if let Some(c) = &code {
            self.refusal(who, &d, c);
        }
        match d.step {
            Step::Arrive => {
                if let (Some("come_back"), Some(pass)) = (code.as_deref(), r.str_field("pass")) {
                    // The join door (the demo's --join-rate): back at the
                    // pass's time with the pass, as the page does; a new
                    // session keeps the cookie the answer set.
                    let p = &mut self.people[i];
                    p.pass = Some(pass);
                    if let Some(s) = &r.session {
                        p.cookie = Some(s.clone());
                    }
                    self.at(now + Self::retry_after_us(r) + 20_000, who, Step::Arrive);
                    return;
                }
                if let Some(c) = code {
                    if kind == Kind::Clock && c == "clock_skew" {
                        self.finish(who, Fate::Done);
                    } else if c == "busy" || c == "store_unavailable" {
                        self.unexpected(who, format!("join refused: {c}"));
                        self.at(
                            now + Self::retry_after_us(r).max(1_000_000),
                            who,
                            Step::Arrive,
                        );
                    } else {
                        self.unexpected(who, format!("join refused: {c}"));
                        self.finish(who, Fate::Wrong);
                    }
                    return;
                }
                if !self.take_ticket(who, &d, r) {
                    self.finish(who, Fate::Wrong);
                    return;
                }
                let admitted = self.people[i].admitted;
                match kind {
                    Kind::FailOpen => {
                        // No ticket at all, or the waiting one (if the join
                        // already admitted, the no-ticket variant).
                        if admitted {
                            self.people[i].variant = 0;
                        }
                        self.at(now, who, Step::FailOpen);
                        return;
                    }
                    Kind::Copier => {
                        // Its own session; it waits for the owner's ticket.
                        let owner = self.people[i].partner as usize;
                        if self.people[owner].admitted && self.people[owner].fate == Fate::Pending {
                            self.at(now, who, Step::Copy);
                        }
                        return;
                    }
                    Kind::Airplane if self.people[i].variant == 0 && !admitted => {
                        self.go_offline(who, now);
                        return;
                    }
                    _ => {}
                }
                if admitted {
                    self.on_admitted(who, now);
                }
                if !self.people[i].offline {
                    self.at(now + Self::retry_after_us(r), who, Step::Beat);
                }
            }
            Step::Beat => {
                if let Some(c) = code {
                    if kind == Kind::Clock && c == "clock_skew" {
                        self.finish(who, Fate::Done);
                    } else if c == "busy" || c == "store_unavailable" {
                        self.unexpected(who, format!("heartbeat refused: {c}"));
                        self.at(
                            now + Self::retry_after_us(r).max(1_000_000),
                            who,
                            Step::Beat,
                        );
                    } else {
                        self.unexpected(who, format!("heartbeat refused: {c}"));
                        self.finish(who, Fate::Wrong);
                    }
                    return;
                }
                let was = self.people[i].admitted;
                if !self.take_ticket(who, &d, r) {
                    self.finish(who, Fate::Wrong);
                    return;
                }
                if self.people[i].admitted && !was {
                    self.on_admitted(who, now);
                }
                if !self.people[i].offline {
                    self.at(now + Self::retry_after_us(r), who, Step::Beat);
                }
            }
            Step::Slots => {
                if let Some(c) = code {
                    if kind == Kind::Clock && c == "clock_skew" {
                        self.finish(who, Fate::Done);
                    } else {
                        self.unexpected(who, format!("slots refused: {c}"));
                    }
                }
            }
            Step::Book | Step::BookAgain => {
                if let Some(c) = code {
                    if kind == Kind::Clock && c == "clock_skew" {
                        self.finish(who, Fate::Done);
                    } else if d.step == Step::Book
                        && (c == "busy" || c == "store_unavailable" || c == "in_progress")
                    {
                        self.unexpected(who, format!("booking refused: {c}"));
                        self.at(
                            now + Self::retry_after_us(r).max(1_000_000),
                            who,
                            Step::Book,
                        );
                    } else {
                        self.unexpected(who, format!("{:?} refused: {c}", d.step));
                        self.finish(who, Fate::Wrong);
                    }
                    return;
                }
                let Some(id) = r.str_field("reservation_id") else {
                    self.unexpected(who, "booking 200 without reservation_id".into());
                    self.finish(who, Fate::Wrong);
                    return;
                };
                if d.step == Step::Book {
                    self.second(d.recv_us).bookings += 1;
                }
                self.people[i].ids.push(id);
                if kind == Kind::Clock {
                    // A skewed clock booked: the check below counts it.
                    self.finish(who, Fate::Wrong);
                    return;
                }
                if d.step == Step::Book && self.people[i].lost_retry {
                    // The answer was "lost": the same request again.
                    let call = self.call(who, true, Some(self.slot_body_same()));
                    let c = self.people[i].client as usize;
                    self.people[i].busy = true;
                    self.fire(who, Step::BookAgain, Route::Reserve, call, c);
                    return;
                }
                self.finish(who, Fate::Done);
            }
            Step::Double => {
                let p = &mut self.people[i];
                p.double_left -= 1;
                match &code {
                    None => match r.str_field("reservation_id") {
                        Some(id) => p.ids.push(id),
                        None => self.unexpected(who, "booking 200 without reservation_id".into()),
                    },
                    Some(c) if Kind::Double.expected().contains(&c.as_str()) => {}
                    Some(c) => self.unexpected(who, format!("double booking refused: {c}")),
                }
                let p = &self.people[i];
                if p.double_left == 0 {
                    let n = p.distinct_ids();
                    let refused_ok = p
                        .codes
                        .iter()
                        .all(|c| Kind::Double.expected().contains(&c.as_str()));
                    if n >= 1 {
                        self.second(d.recv_us).bookings += 1;
                    }
                    let fate = if n == 1 && refused_ok {
                        Fate::Done
                    } else {
                        Fate::Wrong
                    };
                    self.finish(who, fate);
                }
            }
            Step::Resume | Step::Copy | Step::FailOpen => {
                let fate = match &code {
                    Some(c) if kind.expected().contains(&c.as_str()) => Fate::Done,
                    Some(c) => {
                        self.unexpected(who, format!("{:?}: refused with {c}", d.step));
                        Fate::Wrong
                    }
                    None => {
                        if let Some(id) = r.str_field("reservation_id") {
                            self.people[i].ids.push(id);
                        }
                        self.unexpected(who, format!("{:?}: the cheat got {}", d.step, r.status));
                        Fate::Wrong
                    }
                };
                self.finish(who, fate);
            }
            Step::BotJoin => {
                let p = &mut self.people[i];
                if code.is_some() {
                    // A refused join: the answer the room owes a bot.
                } else if let Some(ticket) = r.str_field("ticket") {
                    let position = r.body.get("position").and_then(Value::as_u64).unwrap_or(0);
                    let live = live_until_ms(&ticket).unwrap_or(i64::MAX);
                    if kind == Kind::Bot {
                        if let Some(s) = &r.session {
                            p.cookie = Some(s.clone());
                        }
                        // A new place while its previous one still lived is
                        // an extra place (after its deadline, a new place
                        // is what an honest rejoin gets too).
                        let sent_ms = wall_ms() - ((now - d.sent_us) / 1000) as i64;
                        if p.places > 0
                            && position as u32 != p.position
                            && sent_ms < p.live_until_ms
                        {
                            p.extra_places += 1;
                        }
                    }
                    if p.places == 0 || position as u32 != p.position {
                        p.places += 1;
                    }
                    p.position = position as u32;
                    p.live_until_ms = live;
                }
                let first = self.people[i].variant == 0;
                self.people[i].variant = 1;
                if kind == Kind::Bot && first && self.people[i].joins_left > 0 {
                    let gap =
                        (self.a.arrive_secs.max(1.0) * 1e6 / f64::from(self.a.bot_joins)) as u64;
                    self.at(now + gap, who, Step::BotJoin);
                }
                if self.people[i].joins_left == 0 && self.people[i].fate == Fate::Pending {
                    let fate = if self.people[i].extra_places == 0 {
                        Fate::Done
                    } else {
                        Fate::Wrong
                    };
                    self.finish(who, fate);
                }
            }
        }
    }

    fn slot_body_same(&self) -> String {
        // The retried booking asks for the same kind of thing; the slot does
        // not matter, the demo answers with the booking already made.
        json!({ "slot": "S11" }).to_string()
    }

    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Done>) {
        let deadline = self.t0 + Duration::from_secs(self.a.max_secs);
        let mut next_second = 0u64;
        loop {
            let now = self.now_us();
            while now >= next_second * 1_000_000 {
                let waiting = self
                    .people
                    .iter()
                    .filter(|p| {
                        !p.kind.is_bot()
                            && p.ticket.is_some()
                            && !p.admitted
                            && !p.offline
                            && p.fate == Fate::Pending
                    })
                    .count() as u64;
                self.second(next_second * 1_000_000).waiting = waiting;
                next_second += 1;
            }
            while let Some(Reverse((due, who, step))) = self.heap.peek().copied() {
                if due > now {
                    break;
                }
                self.heap.pop();
                self.run_step(who, step);
            }
            while let Ok(d) = rx.try_recv() {
                self.on_done(d);
            }
            if self.pending == 0 && self.in_flight == 0 {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "crowd: --max-secs reached with {} people unfinished",
                    self.pending
                );
                break;
            }
            let next_due = self
                .heap
                .peek()
                .map(|Reverse((due, _, _))| *due)
                .unwrap_or(u64::MAX)
                .min(next_second * 1_000_000);
            let sleep_for = Duration::from_micros(next_due.saturating_sub(self.now_us()));
            tokio::select! {
                d = rx.recv() => if let Some(d) = d { self.on_done(d) },
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
        // Let the last answers land (bounded).
        let drain_until = Instant::now() + Duration::from_millis(self.a.timeout_ms + 1000);
        while self.in_flight > 0 && Instant::now() < drain_until {
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                self.on_done(d);
            }
        }
    }
}

fn live_until_ms(ticket: &str) -> Option<i64> {
    queuegate::ticket::decode(ticket.as_bytes())
        .ok()?
        .claims()
        .ok()
        .map(|c| c.live_until_ms)
}

/// Builds the crowd: kinds, arrival times, clock errors, partners.
fn build_crowd(a: &Args, rng: &mut Rng) -> (Vec<Person>, Vec<(u64, u32, Step)>) {
    let mut people = Vec::with_capacity(a.people as usize + 8);
    let mut steps = Vec::new();
    let span_us = (a.arrive_secs * 1e6) as u64;
    let n_clients = a.sources.max(2) as u64;
    for k in 0..a.people {
        let u = rng.unit();
        let mut acc = 0.0;
        let mut kind = Kind::Honest;
        for (j, share) in a.shares.iter().enumerate() {
            acc += share;
            if u < acc {
                kind = CHEAT_KINDS[j];
                break;
            }
        }
        let mut p = Person::new(kind);
        p.variant = (rng.next() & 1) as u8;
        // An honest device clock is a little off; the cheater's by an hour.
        p.skew_ms = rng.below(2001) as i64 - 1000;
        if kind == Kind::Clock {
            p.skew_ms = if p.variant == 0 {
                3_600_000
            } else {
                -3_600_000
            };
        }
        p.lost_retry = kind == Kind::Honest && rng.unit() < a.lost_share;
        p.client = rng.below(n_clients) as u16;
        let at = if a.people > 1 {
            span_us * u64::from(k) / u64::from(a.people - 1)
        } else {
            0
        };
        steps.push((at, k, Step::Arrive));
        people.push(p);
    }
    // Each copier gets an honest owner whose ticket leaks to it, and
    // arrives with the owner.
    let mut owners = (0..people.len())
        .filter(|&i| people[i].kind == Kind::Honest && !people[i].lost_retry)
        .collect::<Vec<_>>()
        .into_iter();
    for c in 0..people.len() {
        if people[c].kind != Kind::Copier {
            continue;
        }
        match owners.next() {
            Some(o) => {
                people[c].partner = o as u32;
                people[o].partner = c as u32;
                steps[c].0 = steps[o].0;
            }
            None => people[c].kind = Kind::Honest,
        }
    }
    for (n, kind) in [(a.bots, Kind::Bot), (a.fresh_bots, Kind::FreshBot)] {
        for _ in 0..n {
            let mut p = Person::new(kind);
            p.joins_left = a.bot_joins;
            p.client = rng.below(n_clients) as u16;
            let who = people.len() as u32;
            steps.push((rng.below(span_us.max(1) / 4 + 1), who, Step::BotJoin));
            people.push(p);
        }
    }
    (people, steps)
}

// ------------------------------------------------------------ CPU phases --

#[derive(Debug, Clone, Default)]
struct Phase {
    name: &'static str,
    requests: u64,
    ok: u64,
    refused: BTreeMap<String, u64>,
    errors: u64,
    secs: f64,
    cpu_us: Option<u64>,
    /// Thread runs (schedstat) during the phase.
    runs: Option<u64>,
}

struct PhasePeople {
    cookie: Vec<Option<Arc<str>>>,
    ticket: Vec<Option<Arc<str>>>,
    admitted: Vec<bool>,
    busy: Vec<bool>,
}

enum PhaseKind {
    Idle,
    Ping,
    Join,
    Heartbeat,
    Book,
}

#[allow(clippy::too_many_arguments)]
/// Sends requests at a fixed rate (open loop) for `secs`, then waits for
/// the answers; reads the demo's CPU time around it.
async fn phase(
    name: &'static str,
    kind: PhaseKind,
    rate: u64,
    secs: u64,
    http: &[Http],
    bases: &[String],
    pids: &[u32],
    people: &Arc<Mutex<PhasePeople>>,
    timeout: Duration,
    forwarded: bool,
) -> Phase {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<Reply, String>)>();
    let cpu0 = total(pids, cpu_us);
    let runs0 = total(pids, cpu_runs);
    let start = Instant::now();
    let n_people = people.lock().unwrap().busy.len();
    let total_n = match kind {
        PhaseKind::Idle => 0,
        PhaseKind::Join | PhaseKind::Book => n_people as u64,
        _ => rate * secs,
    };
    let mut out = Phase {
        name,
        ..Phase::default()
    };
    let mut sent = 0u64;
    for n in 0..total_n {
        let due = start + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        while let Ok((j, res)) = rx.try_recv() {
            settle(&mut out, people, j, res);
        }
        let j = (n % n_people.max(1) as u64) as usize;
        let (route, call) = {
            let mut pp = people.lock().unwrap();
            match kind {
                PhaseKind::Ping => (Route::Ping, Call::default()),
                PhaseKind::Join => (
                    Route::Join,
                    Call {
                        skew_ms: Some(0),
                        browser: true,
                        forwarded: forwarded.then_some(PHASE_ADDRS + j as u32),
                        ..Call::default()
                    },
                ),
                PhaseKind::Heartbeat | PhaseKind::Book => {
                    let is_book = matches!(kind, PhaseKind::Book);
                    if pp.busy[j] || pp.ticket[j].is_none() || (is_book && !pp.admitted[j]) {
                        continue;
                    }
                    pp.busy[j] = true;
                    (
                        if is_book {
                            Route::Reserve
                        } else {
                            Route::Heartbeat
                        },
                        Call {
                            cookie: pp.cookie[j].clone(),
                            ticket: pp.ticket[j].clone(),
                            skew_ms: Some(0),
                            body: is_book.then(|| json!({"slot": "S11"}).to_string()),
                            browser: true,
                            forwarded: forwarded.then_some(PHASE_ADDRS + j as u32),
                            pass: None,
                        },
                    )
                }
                PhaseKind::Idle => unreachable!(),
            }
        };
        sent += 1;
        let http = http[n as usize % http.len()].clone();
        let base = bases[n as usize % bases.len()].clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let res = send(&http, &base, route, &call, timeout).await;
            let _ = tx.send((j, res));
        });
    }
    if matches!(kind, PhaseKind::Idle) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    drop(tx);
    while let Some((j, res)) = rx.recv().await {
        settle(&mut out, people, j, res);
    }
    out.requests = sent;
    out.secs = start.elapsed().as_secs_f64();
    out.cpu_us = match (cpu0, total(pids, cpu_us)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    out.runs = match (runs0, total(pids, cpu_runs)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    out
}

fn settle(out: &mut Phase, people: &Arc<Mutex<PhasePeople>>, j: usize, res: Result<Reply, String>) {
    let mut pp = people.lock().unwrap();
    let person = j < pp.busy.len();
    if person {
        pp.busy[j] = false;
    }
    match res {
        Err(_) => out.errors += 1,
        Ok(r) if r.ok() => {
            out.ok += 1;
            if !person {
                return;
            }
            if let Some(t) = r.str_field("ticket") {
                pp.ticket[j] = Some(t);
                if r.body.get("admitted").and_then(Value::as_bool) == Some(true) {
                    pp.admitted[j] = true;
                }
            }
            if let Some(s) = r.session {
                pp.cookie[j] = Some(s);
            }
        }
        Ok(r) => *out.refused.entry(r.code()).or_default() += 1,
    }
}

// --------------------------------------------------------------- report --

/// The run's checks: the assertions of the CI smoke run.
struct Checks {
    honest: u64,
    honest_booked_once: u64,
    out_of_order: u64,
    cheater_bookings: u64,
    cheaters_as_expected: bool,
    unexpected: u64,
}

/// The bookings a cheat gained: any for most kinds; for a double
/// presentation, those beyond the one booking its person is due.
fn gained(p: &Person) -> u64 {
    match p.kind {
        Kind::Honest => 0,
        Kind::Double => (p.distinct_ids() as u64).saturating_sub(1),
        _ => p.distinct_ids() as u64,
    }
}

impl Checks {
    fn of(people: &[Person], unexpected: u64) -> Checks {
        let honest: Vec<&Person> = people.iter().filter(|p| p.kind == Kind::Honest).collect();
        let cheaters = || people.iter().filter(|p| p.kind != Kind::Honest);
        Checks {
            honest: honest.len() as u64,
            honest_booked_once: honest.iter().filter(|p| p.distinct_ids() == 1).count() as u64,
            out_of_order: out_of_order(people),
            cheater_bookings: cheaters().map(gained).sum(),
            cheaters_as_expected: cheaters().all(|p| p.fate == Fate::Done && p.extra_places == 0),
            unexpected,
        }
    }

    fn list(&self) -> Vec<(&'static str, bool, String)> {
        vec![
            (
                "every honest person booked exactly once",
                self.honest_booked_once == self.honest,
                format!("{} of {}", self.honest_booked_once, self.honest),
            ),
            (
                "admissions out of place order: 0",
                self.out_of_order == 0,
                self.out_of_order.to_string(),
            ),
            (
                "cheaters' bookings: 0",
                self.cheater_bookings == 0,
                self.cheater_bookings.to_string(),
            ),
            (
                "every cheater refused with its expected code (bots: no extra live place)",
                self.cheaters_as_expected,
                self.cheaters_as_expected.to_string(),
            ),
            (
                "requests failed other than by expected refusals: 0",
                self.unexpected == 0,
                self.unexpected.to_string(),
            ),
        ]
    }
}

/// Admissions out of place order: a person P admitted (its first admitted
/// answer received at t) while someone with a smaller place, still live,
/// was told "waiting" by a heartbeat sent after t.
fn out_of_order(people: &[Person]) -> u64 {
    let mut v: Vec<(u32, u64, u64)> = people
        .iter()
        .filter(|p| !p.kind.is_bot() && p.position > 0)
        .map(|p| (p.position, p.admit_recv_us, p.last_wait_send_us))
        .collect();
    v.sort_unstable();
    let mut latest_wait_ahead = 0u64;
    let mut bad = 0;
    let mut k = 0;
    while k < v.len() {
        // Equal places (should not happen) are not "ahead" of each other.
        let mut e = k;
        while e < v.len() && v[e].0 == v[k].0 {
            e += 1;
        }
        for x in &v[k..e] {
            if x.1 > 0 && latest_wait_ahead > x.1 {
                bad += 1;
            }
        }
        for x in &v[k..e] {
            latest_wait_ahead = latest_wait_ahead.max(x.2);
        }
        k = e;
    }
    bad
}

/// A chart line: label, points, colour, width.
type Line = (String, Vec<(f64, f64)>, plotters::style::RGBAColor, u32);

fn chart(path: &str, seconds: &[Second], samples: &[Sample]) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(330);
    let t_max = (seconds.len().max(2)) as f64;
    let crowd_max = seconds.iter().map(|s| s.waiting).max().unwrap_or(0);
    let server_max = samples.iter().filter_map(|s| s.waiting).max().unwrap_or(0);
    let y_max = (crowd_max.max(server_max).max(1) as f64) * 1.1;
    let mut c = ChartBuilder::on(&top)
        .caption("People waiting", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("seconds into the crowd")
        .draw()
        .map_err(|x| e(&x))?;
    c.draw_series(LineSeries::new(
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, s.waiting as f64)),
        BLUE.stroke_width(2),
    ))
    .map_err(|x| e(&x))?
    .label("waiting, as the crowd sees it")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    c.draw_series(LineSeries::new(
        samples
            .iter()
            .filter_map(|s| Some((s.at_s, s.waiting? as f64))),
        BLACK.mix(0.6),
    ))
    .map_err(|x| e(&x))?
    .label("waiting, the demo's count (dead places until swept)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(|x| e(&x))?;

    let mut codes: Vec<String> = seconds
        .iter()
        .flat_map(|s| s.refusals.keys().cloned())
        .collect();
    codes.sort();
    codes.dedup();
    let server_rate_max = samples
        .windows(2)
        .filter_map(|w| Some(w[1].admitted_total?.saturating_sub(w[0].admitted_total?)))
        .max()
        .unwrap_or(0);
    let rate_max = seconds
        .iter()
        .map(|s| {
            s.admitted
                .max(s.bookings)
                .max(s.refusals.values().copied().max().unwrap_or(0))
        })
        .max()
        .unwrap_or(1)
        .max(server_rate_max)
        .max(1) as f64
        * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "Per second: admitted, bookings, refusals by code",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("seconds into the crowd")
        .draw()
        .map_err(|x| e(&x))?;
    let series = |f: &dyn Fn(&Second) -> u64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 0.5, f(s) as f64))
            .collect()
    };
    let mut lines: Vec<Line> = vec![
        (
            "admitted/s".into(),
            series(&|s| s.admitted),
            GREEN.to_rgba(),
            2,
        ),
        (
            "bookings/s".into(),
            series(&|s| s.bookings),
            BLUE.to_rgba(),
            2,
        ),
    ];
    // The demo's own admissions per second (the crowd sees an admission
    // only at the person's next heartbeat).
    let server_admitted: Vec<(f64, f64)> = samples
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (w[0].admitted_total?, w[1].admitted_total?);
            let dt = (w[1].at_s - w[0].at_s).max(0.001);
            Some((w[1].at_s, b.saturating_sub(a) as f64 / dt))
        })
        .collect();
    lines.push((
        "admitted/s, the demo's count".into(),
        server_admitted,
        BLACK.mix(0.6),
        1,
    ));
    for (k, code) in codes.iter().enumerate() {
        let code2 = code.clone();
        lines.push((
            format!("refused/s: {code}"),
            series(&move |s| s.refusals.get(&code2).copied().unwrap_or(0)),
            Palette99::pick(k + 3).to_rgba(),
            1,
        ));
    }
    for (label, points, color, width) in lines {
        c.draw_series(LineSeries::new(points, color.stroke_width(width)))
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

// ----------------------------------------------------------------- main --

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(msg) => {
            let help = msg.starts_with("usage:");
            eprintln!("{}{msg}", if help { "" } else { "error: " });
            std::process::exit(if help { 0 } else { 2 });
        }
    };
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    }
}

async fn run(a: Args) -> Result<bool, String> {
    let mut rng = Rng(a.seed);
    let queue = format!("crowd-{:08x}", rng.next() as u32 ^ std::process::id());
    let http = Arc::new(clients(a.sources, a.max_conns));
    let mut demo = start_demo(&a, &queue)?;
    wait_ready(&http[0], &mut demo).await?;
    let bases = Arc::new(demo.bases.clone());
    let pids = demo.pids.clone();
    let timeout = Duration::from_millis(a.timeout_ms);
    eprintln!(
        "crowd: {} people (+{} bots) against {} (queue {queue})",
        a.people,
        a.bots + a.fresh_bots,
        bases.join(", ")
    );

    // Phases before the crowd: idle (the CPU floor) and the minimal route,
    // which also warm the demo up before the warm memory reading.
    let phase_people = Arc::new(Mutex::new(PhasePeople {
        cookie: Vec::new(),
        ticket: Vec::new(),
        admitted: Vec::new(),
        busy: Vec::new(),
    }));
    let mut phases = Vec::new();
    let (rate, secs) = (a.phase_rate, a.phase_secs);
    if rate > 0 {
        for (name, kind) in [("idle", PhaseKind::Idle), ("ping", PhaseKind::Ping)] {
            let p = phase(
                name,
                kind,
                rate,
                secs,
                &http,
                &bases,
                &pids,
                &phase_people,
                timeout,
                a.forwarded_for,
            )
            .await;
            phases.push(p);
        }
    }
    let warm = Warm {
        rss: total(&pids, rss_bytes),
        conns: total(&pids, open_sockets),
    };
    let stats_warm = read_stats(&http[0], &bases[0]).await;

    // The sampler: the demo's own counts and its memory, once a second.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let t0 = Instant::now();
    let sampler = {
        let samples = samples.clone();
        let http = http[0].clone();
        let base = bases[0].clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let st = read_stats(&http, &base).await;
                let s = Sample {
                    at_s: t0.elapsed().as_secs_f64(),
                    waiting: st.waiting,
                    admitted_total: st.admitted_total,
                    replay_records: st.replay_records,
                    replay_heap_bytes: st.replay_heap_bytes,
                    rss: total(&pids, rss_bytes),
                    conns: total(&pids, open_sockets),
                };
                samples.lock().unwrap().push(s);
            }
        })
    };

    let (people, steps) = build_crowd(&a, &mut rng);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pending = people.len();
    let mut d = Driver {
        a: a.clone(),
        t0,
        people,
        heap: BinaryHeap::new(),
        tx,
        http: http.clone(),
        bases: bases.clone(),
        rng: Rng(a.seed ^ 0x5eed),
        in_flight: 0,
        routes: BTreeMap::new(),
        seconds: Vec::new(),
        unexpected: 0,
        unexpected_examples: Vec::new(),
        requests: 0,
        pending,
    };
    for (at, who, step) in steps {
        d.at(at, who, step);
    }
    d.run(&mut rx).await;
    let crowd_secs = t0.elapsed().as_secs_f64();
    sampler.abort();
    let samples = samples.lock().unwrap().clone();

    // Phases after the crowd: join people (not measured), then heartbeats
    // only, then bookings only, then the minimal route again.
    if rate > 0 {
        let k = (rate * secs) as usize;
        {
            let mut pp = phase_people.lock().unwrap();
            pp.cookie = vec![None; k];
            pp.ticket = vec![None; k];
            pp.admitted = vec![false; k];
            pp.busy = vec![false; k];
        }
        for (name, kind) in [
            ("join (setup, not measured)", PhaseKind::Join),
            ("heartbeat", PhaseKind::Heartbeat),
            ("reserve", PhaseKind::Book),
            // The floor again, so that a drift over the run (a busier
            // machine, a warmer process) shows and averages out.
            ("ping (again)", PhaseKind::Ping),
        ] {
            let p = phase(
                name,
                kind,
                rate,
                secs,
                &http,
                &bases,
                &pids,
                &phase_people,
                timeout,
                a.forwarded_for,
            )
            .await;
            phases.push(p);
        }
    }
    drop(demo);

    let report = report(&a, &d, crowd_secs, &samples, &warm, &stats_warm, &phases);
    println!("{}", report.0);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.1).unwrap())
            .map_err(|e| format!("--json {path}: {e}"))?;
    }
    if let Some(path) = &a.svg {
        chart(path, &d.seconds, &samples).map_err(|e| format!("--svg {path}: {e}"))?;
    }
    Ok(report.2)
}

#[derive(Default, Debug, Clone)]
struct Stats {
    waiting: Option<u64>,
    admitted_total: Option<u64>,
    replay_records: Option<u64>,
    replay_heap_bytes: Option<u64>,
}

/// The demo's `/stats` (its counts); a demo without it gives nothing.
async fn read_stats(http: &Http, base: &str) -> Stats {
    match send(
        http,
        base,
        Route::Stats,
        &Call::default(),
        Duration::from_secs(5),
    )
    .await
    {
        Ok(r) if r.ok() => Stats {
            waiting: r.body.get("waiting").and_then(Value::as_u64),
            admitted_total: r.body.get("admitted_total").and_then(Value::as_u64),
            replay_records: r.body.get("replay_records").and_then(Value::as_u64),
            replay_heap_bytes: r.body.get("replay_heap_bytes").and_then(Value::as_u64),
        },
        _ => Stats::default(),
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

#[allow(clippy::too_many_lines)]
fn report(
    a: &Args,
    d: &Driver,
    crowd_secs: f64,
    samples: &[Sample],
    warm: &Warm,
    stats_warm: &Stats,
    phases: &[Phase],
) -> (String, Value, bool) {
    use std::fmt::Write;
    let mut t = String::new();
    let people = &d.people;
    let humans = people.iter().filter(|p| !p.kind.is_bot()).count();
    let bookings: u64 = people.iter().map(|p| p.distinct_ids() as u64).sum();
    let _ = writeln!(t, "crowd report");
    let _ = writeln!(
        t,
        "  people simulated: {humans} (+{} bots joining {} times each), {:.1} s, {} requests, {:.0} requests/s",
        a.bots + a.fresh_bots,
        a.bot_joins,
        crowd_secs,
        d.requests,
        d.requests as f64 / crowd_secs.max(0.001)
    );
    let _ = writeln!(t, "  bookings made: {bookings}");

    // Latency by route.
    let _ = writeln!(t, "  latency by route (the crowd phase):");
    let mut routes_json = serde_json::Map::new();
    for route in Route::ALL {
        let Some(rs) = d.routes.get(&route) else {
            continue;
        };
        let h = rs.hist.clone().unwrap_or_else(Hist::new);
        let _ = writeln!(
            t,
            "    {:<17} {:>8} requests  p50 {:>9}  p99 {:>9}  max {:>9}  statuses {:?}{}",
            route.path(),
            h.n,
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.max),
            rs.statuses,
            if rs.errors > 0 {
                format!("  failed {}", rs.errors)
            } else {
                String::new()
            }
        );
        routes_json.insert(
            route.path().into(),
            json!({
                "requests": h.n, "p50_us": h.quantile(0.5), "p99_us": h.quantile(0.99),
                "max_us": h.max, "statuses": rs.statuses, "failed": rs.errors,
            }),
        );
    }

    // Memory per waiting person.
    let peak = samples
        .iter()
        .filter(|s| s.waiting.is_some() && s.rss.is_some())
        .max_by_key(|s| s.waiting.unwrap_or(0));
    let mut memory = json!(null);
    match (peak, warm.rss) {
        (Some(s), Some(rss_warm)) if s.waiting.unwrap_or(0) > 0 => {
            let n = s.waiting.unwrap_or(0);
            let rss = s.rss.unwrap_or(0);
            let per = (rss as f64 - rss_warm as f64) / n as f64;
            let replay = match (s.replay_heap_bytes, stats_warm.replay_heap_bytes) {
                (Some(now), Some(then)) => Some((now as f64 - then as f64) / n as f64),
                _ => None,
            };
            let _ = writeln!(
                t,
                "  resident memory: warm {:.1} MiB at 0 waiting ({} sockets open); {:.1} MiB at {n} waiting \
                 ({:.0} s in, {} sockets open) → {per:.0} bytes per waiting person",
                rss_warm as f64 / 1048576.0,
                warm.conns.map_or("?".into(), |c| c.to_string()),
                rss as f64 / 1048576.0,
                s.at_s,
                s.conns.map_or("?".into(), |c| c.to_string()),
            );
            if let Some(r) = replay {
                let _ = writeln!(
                    t,
                    "    of which replay store (its heap bytes, {} records) {r:.0} B, room state and the rest {:.0} B",
                    s.replay_records.unwrap_or(0),
                    per - r
                );
            }
            memory = json!({
                "rss_warm_bytes": rss_warm, "rss_bytes": rss, "waiting": n, "at_s": s.at_s,
                "sockets_warm": warm.conns, "sockets_at_sample": s.conns,
                "bytes_per_waiting": per, "replay_store_bytes_per_waiting": replay,
                "replay_records": s.replay_records,
                "room_and_rest_bytes_per_waiting": replay.map(|r| per - r),
            });
        }
        _ => {
            let _ = writeln!(
                t,
                "  resident memory: not measured (no pid or no waiting sample)"
            );
        }
    }

    // Cheaters.
    let _ = writeln!(t, "  outcomes by kind:");
    let mut kinds_json = serde_json::Map::new();
    let all_kinds = [
        Kind::Honest,
        Kind::Airplane,
        Kind::FailOpen,
        Kind::Clock,
        Kind::Copier,
        Kind::Double,
        Kind::Bot,
        Kind::FreshBot,
    ];
    for kind in all_kinds {
        let of: Vec<&Person> = people.iter().filter(|p| p.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let mut codes: BTreeMap<&str, u64> = BTreeMap::new();
        for p in &of {
            for c in &p.codes {
                *codes.entry(c.as_str()).or_default() += 1;
            }
        }
        let booked: u64 = of.iter().map(|p| p.distinct_ids() as u64).sum();
        let as_expected = of
            .iter()
            .filter(|p| p.fate == Fate::Done && p.extra_places == 0)
            .count();
        let unfinished = of.iter().filter(|p| p.fate == Fate::Pending).count();
        let gained: u64 = of.iter().map(|p| gained(p)).sum();
        let mut line = format!(
            "    {:<10} {:>6}: as expected {as_expected}, unfinished {unfinished}, bookings {booked}",
            kind.name(),
            of.len()
        );
        if kind != Kind::Honest {
            let _ = write!(
                line,
                " (gained by cheating {gained}), expected refusals {:?}",
                kind.expected()
            );
        }
        let _ = write!(line, ", refusals {codes:?}");
        let mut extra = json!(null);
        if kind.is_bot() {
            let places: u64 = of.iter().map(|p| u64::from(p.places)).sum();
            let extra_places: u64 = of.iter().map(|p| u64::from(p.extra_places)).sum();
            let _ = write!(
                line,
                ", places got {places}, extra live places {extra_places}"
            );
            extra = json!({"places": places, "extra_live_places": extra_places});
        }
        let _ = writeln!(t, "{line}");
        kinds_json.insert(
            kind.name().into(),
            json!({
                "people": of.len(), "as_expected": as_expected, "unfinished": unfinished,
                "bookings": booked, "gained_by_cheating": gained,
                "expected_refusals": kind.expected(), "refusals": codes, "bots": extra,
            }),
        );
    }

    // CPU phases.
    let idle_rate = phases
        .iter()
        .find(|p| p.name == "idle")
        .and_then(|p| Some(p.cpu_us? as f64 / p.secs));
    let mut phases_json = Vec::new();
    let mut per_req: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut phase_failures = 0u64;
    if !phases.is_empty() {
        let _ = writeln!(
            t,
            "  server CPU per request by phase (fixed rate {}/s, {} s each):",
            a.phase_rate, a.phase_secs
        );
    }
    for p in phases {
        let raw = p.cpu_us.map(|c| c as f64 / p.requests.max(1) as f64);
        let net = match (p.cpu_us, idle_rate) {
            (Some(c), Some(idle)) => {
                Some((c as f64 - idle * p.secs).max(0.0) / p.requests.max(1) as f64)
            }
            _ => None,
        };
        if p.name != "idle" && !p.name.starts_with("join") {
            phase_failures += p.errors + p.refused.values().sum::<u64>();
        }
        if let (Some(r), Some(n)) = (raw, net) {
            per_req.insert(p.name, (r, n));
        }
        let runs = p
            .runs
            .filter(|_| p.requests > 0)
            .map(|r| r as f64 / p.requests as f64);
        let _ = writeln!(
            t,
            "    {:<27} {:>6} requests ({} ok, refused {:?}, failed {}) in {:.1} s, CPU {} → {} per request ({} net of idle), {} thread runs per request",
            p.name,
            p.requests,
            p.ok,
            p.refused,
            p.errors,
            p.secs,
            p.cpu_us.map(us).unwrap_or_else(|| "?".into()),
            raw.map(|v| us(v as u64)).unwrap_or_else(|| "?".into()),
            net.map(|v| us(v as u64)).unwrap_or_else(|| "?".into()),
            runs.map(|r| format!("{r:.2}")).unwrap_or_else(|| "?".into()),
        );
        phases_json.push(json!({
            "name": p.name, "requests": p.requests, "ok": p.ok, "refused": p.refused,
            "failed": p.errors, "secs": p.secs, "cpu_us": p.cpu_us,
            "cpu_us_per_request": raw, "cpu_us_per_request_net_of_idle": net,
            "thread_runs": p.runs, "thread_runs_per_request": runs,
        }));
    }
    let mut ratios = serde_json::Map::new();
    let pings: Vec<(f64, f64)> = ["ping", "ping (again)"]
        .iter()
        .filter_map(|n| per_req.get(n).copied())
        .collect();
    if !pings.is_empty() {
        // The floor: the mean of the ping phases before and after.
        let ping_raw = pings.iter().map(|p| p.0).sum::<f64>() / pings.len() as f64;
        let ping_net = pings.iter().map(|p| p.1).sum::<f64>() / pings.len() as f64;
        for name in ["heartbeat", "reserve"] {
            if let Some(&(raw, net)) = per_req.get(name) {
                let _ = writeln!(
                    t,
                    "    {name} ÷ ping (mean of the ping phases): {:.2} (net of idle {:.2})",
                    raw / ping_raw,
                    if ping_net > 0.0 {
                        net / ping_net
                    } else {
                        f64::NAN
                    }
                );
                ratios.insert(
                    format!("{name}_over_ping"),
                    json!({"raw": raw / ping_raw, "net_of_idle": if ping_net > 0.0 { Some(net / ping_net) } else { None }}),
                );
            }
        }
    }

    let list = Checks::of(people, d.unexpected + phase_failures).list();
    let _ = writeln!(t, "  checks:");
    let mut pass = true;
    let mut checks_json = Vec::new();
    for (name, ok, value) in &list {
        pass &= ok;
        let _ = writeln!(
            t,
            "    [{}] {name}: {value}",
            if *ok { "ok" } else { "FAIL" }
        );
        checks_json.push(json!({"check": name, "ok": ok, "value": value}));
    }
    for ex in &d.unexpected_examples {
        let _ = writeln!(t, "      unexpected: {ex}");
    }
    let _ = writeln!(t, "  result: {}", if pass { "PASS" } else { "FAIL" });
    let json = json!({
        "people": humans,
        "bots": a.bots + a.fresh_bots,
        "bot_joins": a.bot_joins,
        "crowd_secs": crowd_secs,
        "requests": d.requests,
        "requests_per_sec": d.requests as f64 / crowd_secs.max(0.001),
        "bookings": bookings,
        "routes": routes_json,
        "memory": memory,
        "kinds": kinds_json,
        "phases": phases_json,
        "cpu_ratios": ratios,
        "checks": checks_json,
        "unexpected_examples": d.unexpected_examples,
        "pass": pass,
        "settings": {
            "admit_per_sec": a.admit_per_sec, "liveness_ms": a.liveness_ms,
            "arrive_secs": a.arrive_secs, "instances": d.bases.len(),
            "redis": a.redis.is_some(), "redis_cluster": a.redis_cluster.is_some(), "seed": a.seed,
        },
    });
    (t, json, pass)
}

#[cfg(test)]
mod tests {
    //! The checks themselves: a broken room must fail them (the smoke run
    //! in CI relies on it).
    use super::*;

    fn person(kind: Kind, position: u32, admit_recv_us: u64, last_wait_send_us: u64) -> Person {
        let mut p = Person::new(kind);
        p.position = position;
        p.admit_recv_us = admit_recv_us;
        p.last_wait_send_us = last_wait_send_us;
        p.fate = Fate::Done;
        if kind == Kind::Honest {
            p.ids.push(Arc::from(format!("R-{position}")));
        }
        p
    }

    fn passes(people: &[Person], unexpected: u64) -> Vec<bool> {
        Checks::of(people, unexpected)
            .list()
            .into_iter()
            .map(|(_, ok, _)| ok)
            .collect()
    }

    #[test]
    fn a_sound_run_passes_every_check() {
        let mut people = vec![
            person(Kind::Honest, 1, 1_000, 500),
            person(Kind::Honest, 2, 2_000, 1_500),
            person(Kind::Copier, 3, 0, 0),
            person(Kind::Double, 4, 3_000, 2_500),
        ];
        people[3].ids.push(Arc::from("R-4"));
        people[3].ids.push(Arc::from("R-4")); // the same booking again
        assert_eq!(passes(&people, 0), vec![true; 5]);
    }

    #[test]
    fn an_admission_out_of_place_order_fails() {
        // Place 2 admitted at t = 1000 µs; place 1, still live, was told
        // "waiting" by a heartbeat sent at t = 1500 µs.
        let people = vec![
            person(Kind::Honest, 1, 3_000, 1_500),
            person(Kind::Honest, 2, 1_000, 500),
        ];
        assert_eq!(out_of_order(&people), 1);
        assert!(!passes(&people, 0)[1]);
        // A heartbeat sent before the admission is not a violation.
        let people = vec![
            person(Kind::Honest, 1, 3_000, 900),
            person(Kind::Honest, 2, 1_000, 500),
        ];
        assert_eq!(out_of_order(&people), 0);
    }

    #[test]
    fn a_cheater_booking_fails() {
        let mut copier = person(Kind::Copier, 3, 0, 0);
        copier.ids.push(Arc::from("R-x"));
        copier.fate = Fate::Wrong;
        let people = vec![person(Kind::Honest, 1, 1_000, 0), copier];
        let ok = passes(&people, 1);
        assert!(!ok[2], "cheater's booking");
        assert!(!ok[3], "refused otherwise than expected");
        assert!(!ok[4], "an unexpected answer");
    }

    #[test]
    fn a_double_presentation_that_books_twice_fails() {
        let mut double = person(Kind::Double, 4, 3_000, 0);
        double.ids.push(Arc::from("R-1"));
        double.ids.push(Arc::from("R-2"));
        assert!(!passes(&[double], 0)[2]);
    }

    #[test]
    fn an_honest_person_without_a_booking_or_with_two_fails() {
        let mut none = person(Kind::Honest, 1, 1_000, 0);
        none.ids.clear();
        assert!(!passes(&[none], 0)[0]);
        let mut two = person(Kind::Honest, 1, 1_000, 0);
        two.ids.push(Arc::from("R-other"));
        assert!(!passes(&[two], 0)[0]);
    }

    #[test]
    fn a_bot_with_a_second_live_place_fails() {
        let mut bot = person(Kind::Bot, 9, 0, 0);
        bot.extra_places = 1;
        assert!(!passes(&[bot], 0)[3]);
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Hist::new();
        for v in 1..=10_000u64 {
            h.add(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 9_900.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.max, 10_000);
    }
}
