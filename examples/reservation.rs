//! The booking demo: a waiting room in front of a protected vaccination
//! booking service, the way the 2021 site should have worked.
//!
//! ```sh
//! cargo run --release --example reservation -- --help
//! ```
//!
//! | route | what it does |
//! |---|---|
//! | `GET /` | the waiting-room page |
//! | `POST /queue/join` | joins; sets cookie `qg_session` (a signed session id, the ticket's binding) unless the request carries a valid one |
//! | `POST /queue/heartbeat` | renews the chain (header `queue-ticket`) |
//! | `POST /queue/leave` | ends the session's place |
//! | `GET /queue/status` | place, people ahead and wait, read without renewing |
//! | `GET /queue/client.js` | the browser client shipped in the crate |
//! | `GET /slots` | protected, replay mode `session` |
//! | `POST /reserve` | protected, `single_use`, own scope |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness on local faults only (`queuegate::health`) |
//! | `GET /ping` | `pong`: the cheapest route, the load test's CPU floor |
//! | `GET /stats` | JSON counts for the load test (waiting, records, replay heap bytes) |
//! | `/admin`, `/admin/api/...` | the operator page and API (`queuegate::room::http::admin`), only with an admin token |
//!
//! State lives in this process (nothing survives a restart: people rejoin),
//! or, with `--redis URL` (build with `--features redis`), in Redis, shared
//! by every instance started with the same URL and secret: a client may
//! join on one instance and heart-beat or book on another. The bookings
//! live there too ([`bookings`]), so a booking retried on another instance
//! gets the same reservation. `--join-rate N` puts the crate's join door
//! (`queuegate::room::JoinDoor`) in front of the room.
//!
//! The `/queue/*` routes are the crate's own endpoints
//! (`queuegate::room::http::RoomService`), and the page runs the crate's
//! browser client (`/queue/client.js`): requests a browser sends for
//! another site are refused (`cross_site`), session ids are issued and
//! signed by the server, a valid session cookie is never replaced, and the
//! join hook sees the client's address through the trusted proxies. What
//! is left here is the booking site: its slots, its bookings, its page.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use queuegate::cookie::find_cookie;
use queuegate::error::StoreError;
#[cfg(feature = "redis")]
use queuegate::health::RedisTime;
use queuegate::health::{ClockCheck, ClockVerdict, Health, RedisReading};
use queuegate::layer::{NoSideEffects, QueueGateLayer};
use queuegate::replay::{
    Advance, AdvanceRequest, ReplayCheck, ReplayStore, ReplayVerdict, SettleHold,
};
use queuegate::room::http::admin::{Admin, LiveInputs};
use queuegate::room::http::{
    CrossSiteGuard, PeerAddr, PerAddressLimit, RoomEndpoints, RoomService, RoomSessions,
    SessionKeys, TrustedProxies,
};
use queuegate::room::{
    AdmissionRule, BeatRecord, ControlError, ControlSnapshot, ControlWrite, IssuedRecord, JoinDoor,
    JoinRecord, Joined, MemoryRoomState, Place, RoomState, RoomStats, WaitingRoom,
};
#[cfg(feature = "redis")]
use queuegate::{replay::RedisReplayStore, room::RedisRoomState};
use queuegate::{
    Clock, Issuer, KeyRing, MemoryReplayStore, Metrics, Policy, Rejection, ReplayMode,
    ReplayReason, SystemClock, TicketId, Verified, Verifier,
};
use serde_json::json;

#[path = "reservation/bookings.rs"]
pub mod bookings;
use bookings::Booked;

/// The session cookie the tickets are bound to.
pub const SESSION_COOKIE: &str = "qg_session";

const USAGE: &str = "\
usage: reservation [flags]

  --addr HOST:PORT        where to serve (default 127.0.0.1:3000)
  --queue NAME            queue name (default vaccine-53-54)
  --secret-file PATH      file holding the signing secret (64+ hex chars)
  --secret HEX            the secret itself (visible in the process list!)
                          (or set QUEUEGATE_SECRET; none given: a random key)
  --admit-per-sec N       people admitted per second (default 50; 0 pauses)
  --opens-in-ms N         the queue opens N ms after start (default 0: now)
  --liveness-ms N         the longest liveness deadline granted (default 300000;
                          near the front and admitted: the smaller of it and 75000)
  --session-ttl-ms N      time an admitted person has to book (default 600000)
  --max-skew-ms N         client clock skew tolerated (default 300000)
  --max-jump-ms N         client clock jump tolerated (default 60000)
  --max-delay-ms N        network delay bound for backward clock moves (default 10000)
  --redis URL             replay and room state in Redis, shared by every
                          instance with the same URL and secret (needs a
                          build with --features redis)
  --trusted-origin ORIGIN another site whose pages may join and heart-beat
                          (scheme://host[:port]; repeatable; default none)
  --trusted-proxy CIDR    a proxy in front whose X-Forwarded-For names the
                          client (repeatable; default none: the peer is the
                          client)
  --joins-per-addr N      joins per minute from one client address (IPv6:
                          per /64), counted by this process (default 0: no
                          limit)
  --redis-cluster URLS    the same on Redis Cluster: comma-separated seed
                          nodes, redis://127.0.0.1:7000,redis://127.0.0.1:7001
                          (needs --features redis)
  --admin-token-file PATH the operator's token (16+ chars) for /admin and
                          /admin/api (or set QUEUEGATE_ADMIN_TOKEN; neither
                          given: /admin is off and answers 404)
  --clock-offset-ms N     drills and tests only: run this instance with its
                          clock moved N ms (may be negative): its tickets,
                          verifiers, room and clock check (default 0)
  --join-rate N           the join door: joins per second through this
                          instance (burst: one second's worth); beyond it a
                          join gets a signed pass to come back at its time,
                          nothing stored (default 0: no door)
";

/// The demo's settings, from the command line. `Debug` prints neither the
/// secret nor the Redis URL (which may carry a password).
#[derive(Clone)]
pub struct Config {
    /// Where to serve.
    pub addr: SocketAddr,
    /// The queue's name.
    pub queue: String,
    /// The signing secret, and whether it was generated.
    pub secret: Vec<u8>,
    /// Whether the secret was generated at random.
    pub random_secret: bool,
    /// People per second.
    pub admit_per_sec: f64,
    /// Opening delay.
    pub opens_in_ms: u64,
    /// Longest liveness deadline.
    pub liveness_ms: u64,
    /// Admitted ticket lifetime.
    pub session_ttl_ms: u64,
    /// Clock tolerances.
    pub max_skew_ms: u64,
    /// Clock tolerances.
    pub max_jump_ms: u64,
    /// Clock tolerances.
    pub max_delay_ms: u64,
    /// Redis URL: shared state instead of this process's memory.
    pub redis: Option<String>,
    /// Other sites' origins allowed to join and heart-beat.
    pub trusted_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Joins per minute per client address (0: no limit).
    pub joins_per_addr: u32,
    /// Redis Cluster seed nodes (`--redis-cluster`).
    pub redis_cluster: Option<Vec<String>>,
    /// `--admin-token-file`: the operator's token (else
    /// `QUEUEGATE_ADMIN_TOKEN`; neither: no `/admin`).
    pub admin_token_file: Option<String>,
    /// `--clock-offset-ms`: a drill's wrong server clock (0: the system's).
    pub clock_offset_ms: i64,
    /// `--join-rate`: joins per second through this instance's door (0:
    /// no door).
    pub join_rate: f64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("queue", &self.queue)
            .field("secret", &"REDACTED")
            .field("random_secret", &self.random_secret)
            .field("admit_per_sec", &self.admit_per_sec)
            .field("opens_in_ms", &self.opens_in_ms)
            .field("liveness_ms", &self.liveness_ms)
            .field("session_ttl_ms", &self.session_ttl_ms)
            .field("max_skew_ms", &self.max_skew_ms)
            .field("max_jump_ms", &self.max_jump_ms)
            .field("max_delay_ms", &self.max_delay_ms)
            .field("redis", &self.redis.as_ref().map(|_| "REDACTED"))
            .field("trusted_origins", &self.trusted_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("joins_per_addr", &self.joins_per_addr)
            .field(
                "redis_cluster",
                &self.redis_cluster.as_ref().map(|n| n.len()),
            )
            .field("admin_token_file", &self.admin_token_file)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .field("join_rate", &self.join_rate)
            .finish()
    }
}

fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("{flag}: expected a whole number of milliseconds, got {value:?}"))
}

fn secret_from_hex(source: &str, text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text.len() < 64 {
        return Err(format!(
            "{source}: the secret must be at least 64 hex characters (32 bytes), got {}",
            text.len()
        ));
    }
    queuegate::keys::decode_hex(text).map_err(|_| format!("{source}: the secret is not valid hex"))
}

impl Config {
    /// Parses flags (without the program name). `QUEUEGATE_SECRET` is read
    /// from `env_secret`.
    pub fn parse<I: IntoIterator<Item = String>>(
        args: I,
        env_secret: Option<String>,
    ) -> Result<Config, String> {
        let mut addr = "127.0.0.1:3000".to_owned();
        let mut queue = "vaccine-53-54".to_owned();
        let mut secret_file = None;
        let mut secret_hex = None;
        let mut admit = "50".to_owned();
        let (mut opens_in_ms, mut liveness_ms, mut session_ttl_ms) = (0, 300_000, 600_000);
        let (mut max_skew_ms, mut max_jump_ms, mut max_delay_ms) = (300_000, 60_000, 10_000);
        let mut redis = None;
        let (mut trusted_origins, mut trusted_proxies) = (Vec::new(), Vec::new());
        let mut joins_per_addr = 0;
        let mut redis_cluster: Option<Vec<String>> = None;
        let mut admin_token_file = None;
        let mut clock_offset_ms = 0i64;
        let mut join_rate = 0.0;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_owned());
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.clone(), None),
            };
            let known = [
                "--addr",
                "--queue",
                "--secret-file",
                "--secret",
                "--admit-per-sec",
                "--opens-in-ms",
                "--liveness-ms",
                "--session-ttl-ms",
                "--max-skew-ms",
                "--max-jump-ms",
                "--max-delay-ms",
                "--redis",
                "--trusted-origin",
                "--trusted-proxy",
                "--joins-per-addr",
                "--redis-cluster",
                "--admin-token-file",
                "--clock-offset-ms",
                "--join-rate",
            ];
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown flag {flag:?}\n\n{USAGE}"));
            }
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            match name.as_str() {
                "--addr" => addr = value,
                "--queue" => queue = value,
                "--secret-file" => secret_file = Some(value),
                "--secret" => secret_hex = Some(value),
                "--admit-per-sec" => admit = value,
                "--opens-in-ms" => opens_in_ms = number(&name, &value)?,
                "--liveness-ms" => liveness_ms = number(&name, &value)?,
                "--session-ttl-ms" => session_ttl_ms = number(&name, &value)?,
                "--max-skew-ms" => max_skew_ms = number(&name, &value)?,
                "--max-jump-ms" => max_jump_ms = number(&name, &value)?,
                "--max-delay-ms" => max_delay_ms = number(&name, &value)?,
                "--redis" => redis = Some(value),
                "--trusted-origin" => trusted_origins.push(value),
                "--trusted-proxy" => trusted_proxies.push(value),
                "--joins-per-addr" => {
                    joins_per_addr = value.parse().map_err(|_| {
                        format!("--joins-per-addr: expected a whole number, got {value:?}")
                    })?
                }
                "--redis-cluster" => {
                    redis_cluster = Some(value.split(',').map(|s| s.trim().to_owned()).collect())
                }
                "--admin-token-file" => admin_token_file = Some(value),
                "--clock-offset-ms" => {
                    clock_offset_ms = value.parse().map_err(|_| {
                        format!("--clock-offset-ms: expected a whole number of milliseconds (may be negative), got {value:?}")
                    })?
                }
                "--join-rate" => {
                    join_rate = value
                        .parse()
                        .ok()
                        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                        .ok_or_else(|| {
                            format!("--join-rate: expected a number 0 or more, got {value:?}")
                        })?;
                    if join_rate > 0.0 {
                        JoinDoor::new(join_rate).map_err(|e| format!("--join-rate: {e}"))?;
                    }
                }
                _ => unreachable!("checked above"),
            }
        }
        let addr: SocketAddr = addr.parse().map_err(|_| {
            format!("--addr: expected HOST:PORT such as 127.0.0.1:3000, got {addr:?}")
        })?;
        if queue.is_empty() || queue.len() > 100 {
            return Err("--queue: the name must be 1 to 100 characters".to_owned());
        }
        let admit_per_sec: f64 = admit
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| {
                format!("--admit-per-sec: expected a number 0 or more, got {admit:?}")
            })?;
        if liveness_ms < 100 {
            return Err("--liveness-ms: must be at least 100".to_owned());
        }
        if session_ttl_ms == 0 {
            return Err("--session-ttl-ms: must be more than 0".to_owned());
        }
        if let Some(url) = &redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!("--redis: expected a redis:// URL, got {url:?}"));
            }
        }
        // Checked here so a bad value is an error at start, with its flag.
        for o in &trusted_origins {
            guard()?
                .trusted_origin(o)
                .map_err(|e| format!("--trusted-origin {o:?}: {e}"))?;
        }
        for c in &trusted_proxies {
            TrustedProxies::new()
                .trust(c)
                .map_err(|e| format!("--trusted-proxy {c:?}: {e}"))?;
        }
        if let Some(nodes) = &redis_cluster {
            if redis.is_some() {
                return Err("--redis and --redis-cluster: give one of them".to_owned());
            }
            if let Some(bad) = nodes
                .iter()
                .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                return Err(format!(
                    "--redis-cluster: expected comma-separated redis:// URLs, got {bad:?}"
                ));
            }
        }
        let (secret, random_secret) = if let Some(path) = secret_file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("--secret-file {path}: cannot read it: {e}"))?;
            (secret_from_hex("--secret-file", &text)?, false)
        } else if let Some(hex) = env_secret.filter(|s| !s.is_empty()) {
            (secret_from_hex("QUEUEGATE_SECRET", &hex)?, false)
        } else if let Some(hex) = secret_hex {
            (secret_from_hex("--secret", &hex)?, false)
        } else {
            let mut key = vec![0u8; 32];
            getrandom::getrandom(&mut key).map_err(|e| format!("no random source: {e}"))?;
            (key, true)
        };
        Ok(Config {
            addr,
            queue,
            secret,
            random_secret,
            admit_per_sec,
            opens_in_ms,
            liveness_ms,
            session_ttl_ms,
            max_skew_ms,
            max_jump_ms,
            max_delay_ms,
            redis,
            trusted_origins,
            trusted_proxies,
            joins_per_addr,
            redis_cluster,
            admin_token_file,
            clock_offset_ms,
            join_rate,
        })
    }
}

/// The demo is served over plain HTTP: its own origin is `http://` + Host.
fn guard() -> Result<CrossSiteGuard, String> {
    CrossSiteGuard::new("http").map_err(|e| e.to_string())
}

/// The demo's server clock: the system's, moved by `--clock-offset-ms` (a
/// drill's wrong clock; 0 otherwise). Everything in the instance reads
/// it: its tickets, verifiers, room, sweeps and clock check, so a drill
/// shows what one instance with a wrong clock does beside honest ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoClock {
    offset_ms: i64,
}

impl Clock for DemoClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms)
    }
}

/// How often the server-clock check runs (README "The server-clock
/// check"): an instance whose clock is the outlier turns unready within
/// one interval of the evidence arriving.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Where the clock check reads Redis `TIME` (round-trip corrected): the
/// Redis of `--redis`, or a seed node of `--redis-cluster`; in memory,
/// nowhere (the clients' median alone, which never makes it unready).
#[derive(Clone, Default)]
pub struct ClockReference {
    #[cfg(feature = "redis")]
    redis: Option<RedisTime>,
}

impl ClockReference {
    /// Connects to the first of `urls` that answers.
    #[cfg(feature = "redis")]
    async fn connect(flag: &str, urls: &[&str]) -> Result<Self, String> {
        let mut last = String::new();
        for url in urls {
            match RedisTime::connect(url).await {
                Ok(t) => return Ok(Self { redis: Some(t) }),
                // The error names the kind only, never the URL.
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "{flag}: cannot read Redis TIME for the clock check: {last}"
        ))
    }

    /// One reading against `clock`, or `None` (no Redis, or it did not
    /// answer in time: the check goes on with the clients' median).
    async fn read(&self, clock: &DemoClock) -> Option<RedisReading> {
        #[cfg(feature = "redis")]
        if let Some(t) = &self.redis {
            return t.read(clock).await.ok();
        }
        let _ = clock;
        None
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The demo's replay store: this process's memory, or Redis.
pub enum Replay {
    /// In this process.
    Memory(MemoryReplayStore),
    /// In Redis, shared by instances.
    #[cfg(feature = "redis")]
    Redis(RedisReplayStore),
}

impl Replay {
    /// Records held in memory (Redis expires its own).
    pub fn records(&self) -> usize {
        match self {
            Self::Memory(m) => m.len(),
            #[cfg(feature = "redis")]
            Self::Redis(_) => 0,
        }
    }

    fn purge(&self, now_ms: i64) {
        match self {
            Self::Memory(m) => m.purge(now_ms),
            #[cfg(feature = "redis")]
            Self::Redis(_) => {}
        }
    }
}

// The demo picks its store at run time, so it boxes the futures (one
// allocation next to a Redis round trip or a ready answer); a host that
// knows its store uses it directly.
impl ReplayStore for Replay {
    type CheckFuture = BoxFuture<ReplayVerdict>;
    type AdvanceFuture = BoxFuture<Advance>;
    type SettleFuture = BoxFuture<()>;

    fn epoch(&self) -> u32 {
        match self {
            Self::Memory(m) => m.epoch(),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.epoch(),
        }
    }

    fn epoch_of(&self, ticket_id: &TicketId) -> u32 {
        match self {
            Self::Memory(m) => m.epoch_of(ticket_id),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.epoch_of(ticket_id),
        }
    }

    fn checks_epoch(&self) -> bool {
        match self {
            Self::Memory(m) => m.checks_epoch(),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.checks_epoch(),
        }
    }

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        match self {
            Self::Memory(m) => Box::pin(m.check(c)),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.check(c),
        }
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        match self {
            Self::Memory(m) => Box::pin(m.advance(a)),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.advance(a),
        }
    }

    fn settle(&self, s: &SettleHold) -> Self::SettleFuture {
        match self {
            Self::Memory(m) => Box::pin(m.settle(s)),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.settle(s),
        }
    }
}

/// The demo's room state: this process's memory, or Redis.
pub enum Rooms {
    /// In this process.
    Memory(MemoryRoomState),
    /// In Redis, shared by instances.
    #[cfg(feature = "redis")]
    Redis(Box<RedisRoomState>),
}

// Each call copies its small inputs so the future borrows only `self`.
macro_rules! each_room {
    ($self:ident, $s:ident => $call:expr) => {
        async move {
            match $self {
                Rooms::Memory($s) => $call.await,
                #[cfg(feature = "redis")]
                Rooms::Redis($s) => $call.await,
            }
        }
    };
}

impl RoomState for Rooms {
    fn share_amnesty(&self, amnesty: Arc<queuegate::Amnesty>) {
        match self {
            Rooms::Memory(s) => s.share_amnesty(amnesty),
            #[cfg(feature = "redis")]
            Rooms::Redis(s) => s.share_amnesty(amnesty),
        }
    }

    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        let (queue, join, rule) = (queue.to_owned(), *join, *rule);
        each_room!(self, s => s.join(&queue, &join, &rule))
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        let (queue, beat, rule) = (queue.to_owned(), *beat, *rule);
        each_room!(self, s => s.beat(&queue, &beat, &rule))
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (queue, issued) = (queue.to_owned(), *issued);
        each_room!(self, s => s.record(&queue, &issued))
    }

    fn leave(
        &self,
        queue: &str,
        binding: &queuegate::ticket::Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (queue, binding) = (queue.to_owned(), *binding);
        each_room!(self, s => s.leave(&queue, &binding))
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let queue = queue.to_owned();
        each_room!(self, s => s.sweep(&queue, now_ms))
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        let queue = queue.to_owned();
        each_room!(self, s => s.stats(&queue, now_ms))
    }

    fn write_controls(
        &self,
        queue: &str,
        now_ms: i64,
        write: &ControlWrite,
    ) -> impl Future<Output = Result<Option<ControlSnapshot>, ControlError>> + Send {
        let (queue, write) = (queue.to_owned(), write.clone());
        each_room!(self, s => s.write_controls(&queue, now_ms, &write))
    }

    fn shared_controls(&self, queue: &str, seen: u64) -> Option<(u64, ControlSnapshot)> {
        match self {
            Rooms::Memory(s) => s.shared_controls(queue, seen),
            #[cfg(feature = "redis")]
            Rooms::Redis(s) => s.shared_controls(queue, seen),
        }
    }

    fn refresh_controls(
        &self,
        queue: &str,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (queue, rule) = (queue.to_owned(), *rule);
        each_room!(self, s => s.refresh_controls(&queue, &rule))
    }
}

type Room = WaitingRoom<DemoClock, Replay, Rooms, Option<PerAddressLimit>>;

/// Everything the handlers share.
pub struct App {
    /// The waiting room (shared with its endpoints).
    pub room: Arc<Room>,
    /// The replay store (shared with the layers).
    pub replay: Arc<Replay>,
    /// The counters.
    pub metrics: Metrics,
    /// Bookings by chain, so a retried booking gets the same answer (7
    /// bytes each: the id's random bytes and the slot's index; a
    /// `Reservation` with its two `String`s is made when answering).
    pub reservations: Mutex<HashMap<TicketId, bookings::Stored>>,
    /// Seats taken per slot (each has [`SLOT_SEATS`]).
    pub seats_taken: Mutex<HashMap<String, usize>>,
    /// With `--redis` or `--redis-cluster`: the bookings and seat counts
    /// live there instead of the two maps above (see [`bookings`]).
    pub shared_bookings: Option<bookings::Shared>,
    /// How many of the room's admissions the counter already shows.
    room_admitted_shown: Mutex<u64>,
    /// `/healthz` and `/readyz`, following the server-clock check.
    pub health: Health,
    /// The server-clock check: against Redis `TIME` (with `--redis` or
    /// `--redis-cluster`) and the clients' median.
    pub clock_check: Arc<ClockCheck>,
    /// This instance's clock (`--clock-offset-ms` moves it).
    pub clock: DemoClock,
    /// Where the clock check reads Redis `TIME`.
    pub clock_reference: ClockReference,
    /// The operator page and API, if an admin token was given.
    pub admin: Option<Admin>,
}

/// One booking.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Its id.
    pub id: String,
    /// The slot booked.
    pub slot: String,
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn base_policy(config: &Config) -> Policy {
    Policy::new(&config.queue)
        .max_skew(millis(config.max_skew_ms))
        .max_jump(millis(config.max_jump_ms))
        .max_delay(millis(config.max_delay_ms))
}

#[cfg(feature = "redis")]
const REDIS_NEEDS_CONNECT: &str = "--redis: Redis state is connected by `build_async`";
#[cfg(not(feature = "redis"))]
const REDIS_NEEDS_CONNECT: &str =
    "--redis: this build has no Redis support; rebuild with `--features redis`";
#[cfg(not(feature = "redis"))]
const CLUSTER_NEEDS_FEATURE: &str =
    "--redis-cluster: this build has no Redis support; rebuild with `--features redis`";

/// Builds the app and its router with in-memory state (`--redis` needs
/// [`build_async`]).
pub fn build(config: &Config) -> Result<(Arc<App>, Router), String> {
    if config.redis.is_some() || config.redis_cluster.is_some() {
        return Err(REDIS_NEEDS_CONNECT.to_owned());
    }
    build_with(
        config,
        Replay::Memory(MemoryReplayStore::new()),
        Rooms::Memory(MemoryRoomState::new()),
        ClockReference::default(),
        None,
    )
}

/// Builds the app and its router, connecting to Redis first if `--redis`
/// was given.
pub async fn build_async(config: &Config) -> Result<(Arc<App>, Router), String> {
    if let Some(nodes) = &config.redis_cluster {
        #[cfg(feature = "redis")]
        {
            // The replay store and the room state share one Cluster
            // connection (the store's shards and the room's keys carry
            // their own hash tags).
            let seeds: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let store = RedisReplayStore::cluster_builder(&seeds)
                .prefix(&format!("queuegate-demo-{}", config.queue))
                .connect()
                .await
                .map_err(|e| format!("--redis-cluster: cannot use the Redis Cluster: {e}"))?;
            let rooms = RedisRoomState::new(&store);
            // TIME is answered by any node: the first seed that answers.
            let reference = ClockReference::connect("--redis-cluster", &seeds).await?;
            let shared = bookings::Shared::connect_cluster(nodes, store.prefix(), slot_ids())
                .await
                .map_err(|e| format!("--redis-cluster: cannot use the Redis Cluster: {e}"))?;
            return build_with(
                config,
                Replay::Redis(store),
                Rooms::Redis(Box::new(rooms)),
                reference,
                Some(shared),
            );
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = nodes;
            return Err(CLUSTER_NEEDS_FEATURE.to_owned());
        }
    }
    let Some(url) = &config.redis else {
        return build(config);
    };
    #[cfg(feature = "redis")]
    {
        let store = RedisReplayStore::builder(url)
            .prefix(&format!("queuegate-demo-{}", config.queue))
            .connect()
            .await
            .map_err(|e| format!("--redis: cannot use Redis: {e}"))?;
        let rooms = RedisRoomState::new(&store);
        let reference = ClockReference::connect("--redis", &[url.as_str()]).await?;
        let shared = bookings::Shared::connect(url, store.prefix(), slot_ids())
            .await
            .map_err(|e| format!("--redis: cannot use Redis: {e}"))?;
        build_with(
            config,
            Replay::Redis(store),
            Rooms::Redis(Box::new(rooms)),
            reference,
            Some(shared),
        )
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(REDIS_NEEDS_CONNECT.to_owned())
    }
}

fn build_with(
    config: &Config,
    replay: Replay,
    rooms: Rooms,
    clock_reference: ClockReference,
    shared_bookings: Option<bookings::Shared>,
) -> Result<(Arc<App>, Router), String> {
    let err = |e: queuegate::ConfigError| e.to_string();
    let clock = DemoClock {
        offset_ms: config.clock_offset_ms,
    };
    let keys = Arc::new(KeyRing::new(1, &config.secret).map_err(err)?);
    let replay = Arc::new(replay);
    let metrics = Metrics::new();
    let policy = base_policy(config);
    let issuer = Issuer::new(keys.clone(), policy.clone(), clock, replay.clone())
        .map_err(err)?
        .admitted_ttl(millis(config.session_ttl_ms));
    // The library's near deadline (75 s: a phone switching apps, a
    // throttled background tab), or less when the flag asks for less.
    let near = millis(config.liveness_ms.min(75_000));
    let mut room = WaitingRoom::builder(issuer, rooms)
        .admit_per_sec(config.admit_per_sec)
        .map_err(err)?
        .opens_at_ms(
            clock
                .now_ms()
                .saturating_add(i64::try_from(config.opens_in_ms).unwrap_or(i64::MAX)),
        )
        .liveness(near, millis(config.liveness_ms))
        .map_err(err)?
        // Waiting places have their own capacity: a join flood fills this,
        // never the admitted people's.
        .max_waiting(1_000_000)
        .join_hook(match config.joins_per_addr {
            0 => None,
            n => Some(PerAddressLimit::new(n, Duration::from_secs(60)).map_err(err)?),
        });
    if config.join_rate > 0.0 {
        room = room.door(JoinDoor::new(config.join_rate).map_err(err)?);
    }
    let room = room.build().map_err(err)?;
    let clock_check = Arc::new(ClockCheck::new());
    // Sessions are signed under their own purpose label from the same
    // secret: the demo never rotates its key.
    let guard = config
        .trusted_origins
        .iter()
        .try_fold(guard()?, |g, o| g.trusted_origin(o))
        .map_err(err)?;
    let sessions = RoomSessions::new(SessionKeys::new(1, &config.secret).map_err(err)?, guard);
    let proxies = config
        .trusted_proxies
        .iter()
        .try_fold(TrustedProxies::new(), |p, c| p.trust(c))
        .map_err(err)?;
    let room = Arc::new(room);
    // The room's endpoints, as the crate ships them.
    let endpoints: RoomService<_, _, _, _> = RoomEndpoints::new(room.clone(), sessions)
        .trusted_proxies(proxies)
        .metrics(metrics.clone())
        .build();
    let admin = Admin::from_sources(config.admin_token_file.as_deref().map(std::path::Path::new))?;
    let app = Arc::new(App {
        room,
        replay: replay.clone(),
        metrics: metrics.clone(),
        reservations: Mutex::new(HashMap::new()),
        seats_taken: Mutex::new(HashMap::new()),
        shared_bookings,
        room_admitted_shown: Mutex::new(0),
        health: Health::new().with_clock_check(clock_check.clone()),
        clock_check,
        clock,
        clock_reference,
        admin,
    });

    let slots_verifier = Verifier::new(
        keys.clone(),
        policy.clone().scope("slots").replay(ReplayMode::Session),
        clock,
        replay.clone(),
    )
    .map_err(err)?
    .with_amnesty(app.room.amnesty().clone());
    let slots_layer = QueueGateLayer::builder(slots_verifier)
        .metrics(metrics.clone())
        .build()
        .map_err(err)?;

    // A booking holds the person's turn for at most 15 s while it runs; the
    // handler is ended after 10 s, so a retry never runs beside it.
    let reserve_verifier = Verifier::new(
        keys,
        policy
            .scope("reserve")
            .replay(ReplayMode::SingleUse)
            .hold(BOOKING_HOLD)
            .handler_timeout(BOOKING_TIMEOUT),
        clock,
        replay,
    )
    .map_err(err)?
    .with_amnesty(app.room.amnesty().clone());
    // A booking retried by the same client is answered by
    // `booking_already_made`, outside the layer (the lookup may be a Redis
    // call, and the layer's `on_reject` hook is synchronous).
    let reserve_layer = QueueGateLayer::builder(reserve_verifier)
        .metrics(metrics)
        .build()
        .map_err(err)?;

    let router = ["join", "heartbeat", "leave", "status", "client.js"]
        .iter()
        .fold(Router::new(), |r, path| {
            r.route_service(&format!("/queue/{path}"), endpoints.clone())
        })
        .layer(axum::middleware::from_fn(peer_addr))
        .route("/", get(page))
        .route("/slots", get(slots).layer(slots_layer))
        .route(
            "/reserve",
            post(reserve)
                .layer(reserve_layer)
                .layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    booking_already_made,
                ))
                .layer(axum::middleware::from_fn(in_own_task)),
        )
        .route("/metrics", get(metrics_text))
        .route(
            "/healthz",
            get(|State(app): State<Arc<App>>| async move { app.health.healthz().map(Body::from) }),
        )
        .route(
            "/readyz",
            get(|State(app): State<Arc<App>>| async move { app.health.readyz().map(Body::from) }),
        )
        .route("/ping", get(|| async { "pong" }))
        .route("/stats", get(stats))
        .route("/admin", any(admin_route))
        .route("/admin/{*rest}", any(admin_route))
        .with_state(app.clone());
    Ok((app, router))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_response(status: StatusCode, value: impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_string(&value).expect("the demo's answers serialize");
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Runs a booking (the layer and the handler) in a task of its own.
///
/// hyper hands a request's body over through a channel whose reader wakes
/// the connection's task; read from inside that task's own poll, the wake
/// makes tokio reschedule the connection as a yield and wake an idle worker
/// thread to share the work: a second thread woken for every request with
/// a body, which at a fixed low rate cost a booking more CPU than all its
/// checks (BENCHMARKS.md, "The crowd"). From a task of its own the same
/// wake finds the connection idle and queues it on this worker. The
/// booking also runs to its end if the client goes away (its answer is
/// then the one a retry gets); a body cut short still fails as before.
async fn in_own_task(req: Request, next: Next) -> Response<Body> {
    match tokio::spawn(next.run(req)).await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Hands the connection's peer address to the room's endpoints
/// ([`PeerAddr`]); built with the crate's `axum` feature, they read axum's
/// `ConnectInfo` themselves.
async fn peer_addr(mut req: Request, next: Next) -> Response<Body> {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        req.extensions_mut().insert(PeerAddr(peer));
    }
    next.run(req).await
}

/// `bytes` random bytes in lower-case hex, in one allocation (the shared
/// store's reservation ids).
#[cfg(feature = "redis")]
fn random_hex(bytes: usize) -> String {
    let mut b = [0u8; 32];
    let b = &mut b[..bytes.min(32)];
    getrandom::getrandom(b).expect("the operating system's random source failed");
    hex(b)
}

/// `bytes` in lower-case hex, in one allocation.
fn hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * b.len());
    for &x in b.iter() {
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 15)]));
    }
    out
}

/// The slots' ids: clinic (1–3) then time (1–4), as [`open_slots`] lists
/// them. A booking checks its slot against this list; building the whole
/// list per booking was a third of a booking's CPU (issue 15).
const SLOT_IDS: [&str; 12] = [
    "S11", "S12", "S13", "S14", "S21", "S22", "S23", "S24", "S31", "S32", "S33", "S34",
];

/// The open slots: a fixed, plausible list.
fn open_slots() -> Vec<serde_json::Value> {
    let clinics = [
        "Jongno Health Centre",
        "Mapo Community Clinic",
        "Gangnam Severance",
    ];
    let times = ["09:00", "10:30", "13:00", "15:30"];
    let mut out = Vec::new();
    for (c, clinic) in clinics.iter().enumerate() {
        for (t, time) in times.iter().enumerate() {
            out.push(json!({
                "id": SLOT_IDS[c * times.len() + t],
                "clinic": clinic,
                "date": "2021-07-26",
                "time": time,
                "vaccine": "mRNA",
            }));
        }
    }
    out
}

/// The slot list's JSON, built once: it never changes.
static SLOTS_JSON: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| json!({ "slots": open_slots() }));

async fn slots(Extension(_v): Extension<Verified>) -> Response<Body> {
    json_response(StatusCode::OK, &*SLOTS_JSON)
}

/// Seats per slot: a full slot is refused as "slot taken". Its 12 slots
/// seat 1.2 million, so the crowd load test (up to a million people) books
/// everyone; a test fills a slot by hand to see the refusal.
pub const SLOT_SEATS: usize = 100_000;
/// How long a booking holds the person's turn while it runs.
pub const BOOKING_HOLD: Duration = Duration::from_secs(15);
/// How long a booking may run before the layer ends it.
pub const BOOKING_TIMEOUT: Duration = Duration::from_secs(10);

/// Books a slot. A full slot is a refusal free of side effects
/// ([`NoSideEffects`]): the person may pick another slot at once. The
/// booking is keyed by chain (the layer's idempotency key), so a retry
/// after a failure never books twice.
async fn reserve(
    State(app): State<Arc<App>>,
    Extension(v): Extension<Verified>,
    headers: HeaderMap,
    body: String,
) -> Response<Body> {
    // A missing, unknown or non-string slot books S11.
    let wanted = serde_json::from_str::<serde_json::Value>(&body).ok();
    let wanted = wanted
        .as_ref()
        .and_then(|b| b.get("slot"))
        .and_then(|s| s.as_str())
        .and_then(|w| SLOT_IDS.iter().copied().find(|id| *id == w));
    let slot = wanted.unwrap_or(SLOT_IDS[0]).to_owned();
    let booked = match bookings::book(&app, &v.claims.ticket_id, &slot).await {
        Ok(Booked::New(b) | Booked::Existing(b)) => b,
        Ok(Booked::SlotTaken) => {
            let mut res = json_response(
                StatusCode::CONFLICT,
                json!({"error": "slot_taken", "slot": slot}),
            );
            res.extensions_mut().insert(NoSideEffects);
            return res;
        }
        // Nothing was booked (a seat may stay counted, see `bookings`):
        // the person keeps the turn and may try again.
        Err(_) => {
            let mut res = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store_unavailable", "detail": "the booking could not be saved: please try again"}),
            );
            res.extensions_mut().insert(NoSideEffects);
            return res;
        }
    };
    // The booking is made: the place in the room is no longer needed.
    if let Some(session) = find_cookie(&headers, SESSION_COOKIE).value() {
        let _ = app.room.leave(session).await;
    }
    // The same JSON as `json!` would give (keys in order), without the map.
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        reservation_id: &'a str,
        slot: &'a str,
    }
    json_response(
        StatusCode::OK,
        Answer {
            reservation_id: &booked.id,
            slot: &booked.slot,
        },
    )
}

/// The same client retrying a booking whose answer it lost (the layer
/// refused it `replayed`, reason `ConsumedBySameClient`, and put the
/// [`Rejection`] in the response's extensions): the booking it already
/// made, marked `"replayed": true`, from wherever the bookings live
/// (another instance may have made it). If the lookup finds nothing or
/// fails, the layer's refusal stands.
async fn booking_already_made(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response<Body> {
    let res = next.run(req).await;
    let Some(Rejection::Replayed {
        reason: ReplayReason::ConsumedBySameClient,
        ticket_id,
    }) = res.extensions().get::<Rejection>()
    else {
        return res;
    };
    match bookings::find(&app, ticket_id).await {
        Ok(Some(booked)) => json_response(
            StatusCode::OK,
            json!({"reservation_id": booked.id, "slot": booked.slot, "replayed": true}),
        ),
        _ => res,
    }
}

/// The ids of the open slots.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn slot_ids() -> Vec<String> {
    open_slots()
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// Brings the gauges, and the count of people whose turn came, up to date.
pub async fn refresh_gauges(app: &App) {
    if let Ok(stats) = app.room.stats().await {
        let mut shown = lock(&app.room_admitted_shown);
        while *shown < stats.admitted_total {
            app.metrics.record_room_admitted();
            *shown += 1;
        }
        drop(shown);
        app.metrics.set_waiting(stats.waiting);
        app.metrics
            .set_store_entries(stats.entries + app.replay.records() as u64);
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    refresh_gauges(&app).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render_prometheus()
            + &app.clock_check.render_prometheus()
            + &app.room.render_control_prometheus(),
    )
}

/// `/admin` and `/admin/api/...`: `queuegate::room::http::admin`, or 404
/// when no admin token was given.
async fn admin_route(
    State(app): State<Arc<App>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let Some(admin) = &app.admin else {
        let mut res = Response::new(Body::from("not found"));
        *res.status_mut() = StatusCode::NOT_FOUND;
        return res;
    };
    if uri.path() == "/admin/api/live" {
        refresh_gauges(&app).await;
    }
    let booked = bookings::count(&app).await.ok();
    let live = || LiveInputs {
        metrics: app.metrics.snapshot(),
        bookings: booked,
        clock: app.clock_check.last_report(),
        store_ok: None,
    };
    admin
        .respond(&app.room, &method, uri.path(), &headers, &body, live)
        .await
        .map(Body::from)
}

/// Counts for the load test (`examples/crowd.rs`): the room's figures and
/// what the in-memory replay store holds (records, allocated heap bytes), so
/// that resident memory can be split between room state and replay store.
async fn stats(State(app): State<Arc<App>>) -> Response<Body> {
    let room = app.room.stats().await.ok();
    let (records, heap_bytes) = match &*app.replay {
        Replay::Memory(m) => (Some(m.len()), Some(m.heap_bytes())),
        #[cfg(feature = "redis")]
        Replay::Redis(_) => (None, None),
    };
    json_response(
        StatusCode::OK,
        json!({
            "waiting": room.map(|s| s.waiting),
            "admitted_alive": room.map(|s| s.admitted_alive),
            "admitted_total": room.map(|s| s.admitted_total),
            "room_entries": room.map(|s| s.entries),
            "replay_records": records,
            "replay_heap_bytes": heap_bytes,
            "reservations": bookings::count(&app).await.ok(),
            "door_shed": app.room.door().map(|d| d.shed()),
            "door_honoured": app.room.door().map(|d| d.honoured()),
        }),
    )
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        Html(PAGE),
    )
}

/// Hands the heap's free pages back to the operating system, after each
/// sweep. glibc keeps memory freed in the middle of its heap resident (only
/// the top is trimmed by itself): what a crowd's connections, the places
/// swept and the tables outgrown leave behind would otherwise count in the
/// process's resident memory for good. `malloc_trim` releases whole free
/// pages (a walk of the free lists: milliseconds at a million people,
/// every 5 s). Other platforms and allocators: nothing.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own
    // free lists under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs the demo on `listener` until the process ends; sweeps dead places
/// every few seconds, and checks the server clock every
/// [`CLOCK_CHECK_INTERVAL`].
pub async fn serve(app: Arc<App>, router: Router, listener: tokio::net::TcpListener) {
    // Its own task: a sweep stuck on a store outage must not delay the
    // clock check (nor a slow TIME the sweep).
    let checker = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLOCK_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let redis = checker.clock_reference.read(&checker.clock).await;
            checker
                .clock_check
                .check(&checker.metrics.snapshot(), redis);
        }
    });
    // The room's settings, shared with the other instances on Redis: this
    // instance's changes written, the others' read, about every second
    // even while nobody heart-beats here.
    let syncer = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let _ = syncer.room.sync_controls().await;
        }
    });
    let sweeper = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            // Sweeping ends places whose deadlines passed on this
            // instance's clock: a clock an hour fast would end everyone's.
            // So the shared room is swept only once the last clock check
            // found every reference agreeing (a suspect clock, or one that
            // a reference disagrees with, waits: dead places linger a
            // while, which costs capacity, not people).
            let agreed = sweeper
                .clock_check
                .last_report()
                .is_some_and(|r| r.verdict == ClockVerdict::Consistent);
            if agreed {
                let _ = sweeper.room.sweep().await;
            }
            sweeper.replay.purge(sweeper.clock.now_ms());
            refresh_gauges(&sweeper).await;
            give_back_free_memory();
        }
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        eprintln!("server error: {e}");
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let config = match Config::parse(
        std::env::args().skip(1),
        std::env::var("QUEUEGATE_SECRET").ok(),
    ) {
        Ok(c) => c,
        Err(msg) => {
            let help = msg.starts_with("usage:");
            eprintln!("{}{msg}", if help { "" } else { "error: " });
            std::process::exit(if help { 0 } else { 2 });
        }
    };
    let (app, router) = match build_async(&config).await {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    };
    if config.random_secret {
        eprintln!(
            "warning: no secret given (--secret-file, QUEUEGATE_SECRET or --secret): \
             using a random key; tickets die with this process"
        );
    }
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.addr);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!(
        "queuegate demo: queue {:?}, {} people/s, serving http://{addr}/",
        config.queue, config.admit_per_sec
    );
    serve(app, router, listener).await;
}

/// The waiting-room page: inline HTML and style; its script is a small
/// module on top of the crate's browser client (`/queue/client.js`).
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vaccination booking — waiting room</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; }
  h1 { font-size: 1.4rem; }
  .card { border: 1px solid #ccc; border-radius: .5rem; padding: 1rem 1.2rem; margin: 1rem 0; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .3rem 1rem; margin: 0; }
  dt { color: #555; }
  progress { width: 100%; height: 1.2rem; }
  #error { color: #a40000; }
  [hidden] { display: none !important; }
  button { font-size: 1rem; padding: .4rem 1rem; }
</style>
</head>
<body>
<h1>COVID-19 vaccination booking (ages 53–54)</h1>
<p>You are in the waiting room. Keep this page open: it checks in with the
queue by itself. Going offline or closing the page loses your place.</p>

<div class="card">
  <p id="status" aria-live="polite" aria-atomic="true">Joining the queue…</p>
  <dl>
    <dt>Your place</dt><dd id="position">–</dd>
    <dt>People ahead</dt><dd id="ahead">–</dd>
    <dt>Estimated wait</dt><dd id="wait">–</dd>
  </dl>
  <progress id="progress" max="100" value="0" aria-label="Progress through the queue"></progress>
</div>

<form id="book-form" class="card" hidden>
  <p>It is your turn. Choose a slot and book it.</p>
  <label for="slot">Slot</label>
  <select id="slot" name="slot"></select>
  <button id="book-button" type="submit">Book</button>
</form>

<p id="reservation" class="card" role="status" hidden></p>
<p id="error" role="alert" hidden></p>
<button id="rejoin" type="button" hidden>Rejoin the queue</button>

<script type="module">
import { WaitingRoom } from '/queue/client.js';

const $ = (id) => document.getElementById(id);
let firstAhead = null;
let formShown = false;
let spoken = '';
// The newest admitted ticket this page was given, kept after the place
// ends so `call` (below) can show what the server says to a stale one.
let lastTicket = null;
// A ticket set by hand (`ticket = '…'` in the console): the page sends it
// from then on, to show what the server does with a copied ticket.
let planted = null;

function words(ms) {
  if (ms === null || ms === undefined) return "admission is paused";
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 60) return "about " + s + " s";
  return "about " + Math.round(s / 60) + " min";
}

// Screen readers hear #status (aria-live): it changes when the place does,
// not on every heartbeat.
function say(text) {
  if (text !== spoken) $("status").textContent = spoken = text;
}

const room = new WaitingRoom({
  base: '/queue',
  onUpdate(s) {
    if (room.ticket) lastTicket = room.ticket;
    $("error").hidden = true;
    if (s.state === 'joining') return say("Joining the queue…");
    if (s.position === 0) {
      say("The queue opens in " + words(s.opensInMs) + ". Everyone who arrives before then gets a random place.");
      $("position").textContent = "drawn at the opening";
      $("ahead").textContent = "–";
      $("wait").textContent = words(s.estimatedWaitMs);
      $("progress").value = 0;
      return;
    }
    $("position").textContent = String(s.position);
    $("ahead").textContent = String(s.ahead);
    $("wait").textContent = s.admitted ? "none" : words(s.estimatedWaitMs);
    if (firstAhead === null || s.ahead > firstAhead) firstAhead = s.ahead;
    $("progress").value = s.admitted ? 100
      : firstAhead === 0 ? 90 : Math.round(100 * (firstAhead - s.ahead) / firstAhead);
    say(s.admitted ? "It is your turn: book below."
      : "You are number " + s.position + " in line, " + s.ahead + " ahead of you.");
  },
  onAdmitted(a) {
    lastTicket = a.ticket;
    if (!formShown) loadSlots().catch((e) => fail(e.message));
  },
  onRetrying(r) {
    // Sent back by the join door: not an error, the page joins by itself.
    if (r.reason === 'door') return say(r.text);
    $("error").textContent = r.text; $("error").hidden = false;
  },
  onOffline(o) { $("error").textContent = o.text; $("error").hidden = false; },
  onRefused(r) { fail(r.text); },
  // Closed by the operator (sold out, event over): their message, no rejoin.
  onClosed(r) { fail(r.text, true); },
});

function fail(text, closed = false) {
  say(closed ? "The queue is closed." : "You are no longer in the queue.");
  // The old place is gone: do not leave it on screen as if it still held.
  for (const id of ["position", "ahead", "wait"]) $(id).textContent = "–";
  $("progress").value = 0;
  $("error").textContent = text;
  $("error").hidden = false;
  $("rejoin").hidden = closed;
  $("book-form").hidden = true;
}

async function loadSlots() {
  formShown = true;
  const res = await room.fetch("/slots");
  const data = await res.json();
  if (!res.ok) throw new Error(data.detail || ("The server answered " + res.status));
  const sel = $("slot");
  sel.replaceChildren();
  for (const s of data.slots) {
    const o = document.createElement("option");
    o.value = s.id;
    o.textContent = s.date + " " + s.time + " — " + s.clinic;
    sel.appendChild(o);
  }
  if (room.state === 'admitted') $("book-form").hidden = false;
}

// A heartbeat carries the planted ticket, if any (see `planted`).
const send = window.fetch.bind(window);
window.fetch = (input, init) => {
  const h = init && init.headers;
  if (planted && h && !(h instanceof Headers) && h["queue-ticket"]) {
    init = { ...init, headers: { ...h, "queue-ticket": planted } };
  }
  return send(input, init);
};
Object.defineProperty(window, "ticket", {
  get: () => planted ?? room.ticket ?? lastTicket,
  set: (t) => { planted = t; },
});

// A protected call with the page's ticket, for the booking form and the
// console: `call("POST", "/reserve", { slot: "S12" })`. Throws the
// server's plain words, with `code` and `retryAfter`.
async function call(method, path, body) {
  const headers = { "queue-client-time": String(Date.now()) };
  if (window.ticket) headers["queue-ticket"] = window.ticket;
  if (body) headers["content-type"] = "application/json";
  const res = await send(path, { method, headers, credentials: "same-origin", cache: "no-store",
                                 body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.detail) || ("The server answered " + res.status));
    err.code = data && (data.code || data.error);
    err.retryAfter = data && data.retry_after;
    throw err;
  }
  return data;
}
window.call = call;
// Heart-beat now (the console, or a test that just corrected the clock).
window.beat = () => room.beat();

$("book-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("book-button").disabled = true;
  try {
    const r = await call("POST", "/reserve", { slot: $("slot").value });
    // Booked: the place is no longer needed.
    room.leave();
    $("book-form").hidden = true;
    say("Booked.");
    $("reservation").textContent = "Your reservation number is " + r.reservation_id + " (slot " + r.slot + ").";
    $("reservation").hidden = false;
  } catch (e) {
    // A full slot or a booking still running keeps the turn: stay on the
    // form (the heartbeat goes on) and say what to do; so does a booking
    // that got no answer (it may be retried: it never books twice).
    if (e.code === "slot_taken") {
      $("error").textContent = "That slot was just taken: please pick another one.";
    } else if (e.code === "in_progress" || !e.code) {
      $("error").textContent = e.message;
    } else {
      // Refused: the place is gone.
      room.leave();
      fail(e.message);
      return;
    }
    $("error").hidden = false;
  } finally {
    $("book-button").disabled = false;
  }
});

$("rejoin").addEventListener("click", () => {
  for (const id of ["error", "rejoin", "reservation", "book-form"]) $(id).hidden = true;
  firstAhead = null; formShown = false; planted = null; lastTicket = null;
  room.join();
});
room.join();
</script>
</body>
</html>
"##;
