//! The room's state in Redis or Redis Cluster (feature `redis`): every
//! instance of a room that uses the same Redis and prefix shares places,
//! the serving counter, the admission bucket and the settings.
//!
//! # Key layout (version [`LAYOUT`])
//!
//! Per person, under the person's own hash tag (so heartbeats spread over
//! every primary of a Cluster):
//!
//! - `<prefix>:rp:{<binding>}:<queue id>`: a hash with the chain's id,
//!   place, status (`j` joining, `p` pre-queue, `w` waiting, `a`
//!   admitted), liveness deadline and the latest ticket's chain facts
//!   (`sequence:joined:expires:admitted-from:epoch`; the epoch was
//!   appended without a layout bump, see `format_facts`); it expires by
//!   itself a minute after its deadline.
//!
//! Per queue, under the queue's hash tag `{<queue id>}` (one slot), few
//! keys touched by O(1) or O(log n) commands and bounded batches only:
//!
//! - `…:layout` the layout version; `…:meta` counters (last place, tokens,
//!   admitted total, sweep cursor, opened); `…:settings` the shared
//!   settings, one field each (rate and burst, pause, admitted and
//!   waiting caps, opening time, closing with its message, amnesty
//!   window: see `lua/queue_settings.lua`; the last three fields came
//!   after layout 2 was set and did not change it, since a build that
//!   does not know them ignores them and corrupts nothing);
//!   `…:waiting` (place → binding), `…:pre` (random draw →
//!   binding), `…:admitted` (deadline → binding) sorted sets; `…:blocks`
//!   live counts per block of 1,024 places; `…:lease` the tick's lease.
//!
//! # What touches what
//!
//! - A heartbeat: one `HMGET` on the person's key (and the engine's
//!   record of the next ticket: one script there). "People ahead" comes
//!   from the instance's [`Snapshot`](cache::Snapshot) of the queue (see
//!   [`cache`] for the bound), refreshed by the instance's tick.
//! - A join: one script on the person's slot (the binding's live chain, or
//!   a placeholder so a concurrent join gets "busy"), one on the queue's
//!   slot (O(log n): the next place, or a random draw in the pre-queue),
//!   one on the person's slot (the place).
//! - The tick, at most once a second per instance (by the operations'
//!   clock): every instance reads a snapshot; the one instance holding the
//!   lease also admits. It picks at most [`BATCH`] admitted chains whose
//!   deadline passed, pre-queue entries to place (the opening, in draw
//!   order, a batch per tick) and waiting places after the sweep's cursor,
//!   asks each person's slot whether the chain lives, then admits up to the
//!   bucket's tokens from the front in place order (on one Redis
//!   pipelined on its one connection; on a Cluster one person after
//!   another, each admission answered before the next is sent; the batch
//!   ended by the first that fails), skipping at most [`BATCH`] dead
//!   places per tick for free. What the people's slots said goes back to
//!   the queue's slot in parts of at most [`APPLY_CHUNK`] entries, one
//!   short script each; only the last part refills the bucket and picks
//!   the front.
//!
//! So no script ever loops over the queue, no script on the queue's slot
//! acts on more than [`APPLY_CHUNK`] entries, and the queue's slot sees a
//! bounded number of commands per tick whatever the queue's depth.

mod cache;
pub(crate) mod conn;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ::redis::Value;
use futures_util::future::join_all;

use self::cache::Snapshot;
use self::conn::{ClusterConn, Conn, Lua};
use super::control::{ControlError, ControlSnapshot, Setting};
use super::schedule::{os_random_u64, AdmissionRule};
use super::state::{
    BeatRecord, ChainFacts, ControlWrite, IssuedRecord, JoinRecord, Joined, Place, RoomState,
    RoomStats,
};
use crate::amnesty::Amnesty;
use crate::error::StoreError;
use crate::replay::RedisReplayStore;
use crate::ticket::{Binding, QueueId, TicketId};

/// The key layout and script version this build reads and writes. A queue
/// whose `…:layout` key holds another version is refused with
/// [`StoreError::Backend`] naming both versions, never touched.
pub const LAYOUT: &str = "2";

/// The most entries one tick checks per list (expired admitted chains,
/// pre-queue entries to place, waiting places to sweep), the most places
/// it admits and the most dead front places it skips.
pub const BATCH: usize = 1000;

/// The most list entries (of the up to 3 × [`BATCH`] a tick looked at) one
/// call of the tick's apply script acts on: a tick sends its entries in
/// parts, so no script on the queue's slot runs long (an opening's part
/// places at most this many people) while a tick still does a whole
/// batch of work.
pub const APPLY_CHUNK: usize = 250;

/// How often (by the operations' clock) an instance refreshes its snapshot
/// and, holding the lease, runs the admission tick.
const TICK_MS: i64 = 1_000;

/// How long the tick's lease lasts without renewal (Redis's clock).
const LEASE_MS: u64 = 2_000;

/// How long a person's record outlives its deadline.
const SLACK_MS: i64 = 60_000;

/// After a tick of this instance failed (the store did not answer), its
/// ticks only read and drop nobody, and a deadline that passed is not
/// judged, until a tick succeeds again and for this long after it: an
/// amnesty declared through another instance during the outage reaches
/// the store within a second of its return (the instance that holds it
/// writes it then), and must be read before anyone is dropped. Counted
/// from the store's return, not from the failure: an outage longer than
/// this must not use the hold up while the store is still down.
const RECOVERY_MS: i64 = 3_000;

const PRELUDE: &str = include_str!("lua/queue_prelude.lua");

fn person(body: &str) -> Lua {
    Lua::new(body.to_owned())
}

fn queue_script(body: &str) -> Lua {
    Lua::new(format!("{PRELUDE}\n{body}"))
}

struct Scripts {
    claim: Lua,
    place: Lua,
    drop: Lua,
    get: Lua,
    record: Lua,
    leave: Lua,
    admit: Lua,
    check: Lua,
    join: Lua,
    queue_leave: Lua,
    stats: Lua,
    range: Lua,
    forget: Lua,
    snapshot: Lua,
    settings: Lua,
    tick_begin: Lua,
    tick_apply: Lua,
    tick_admit: Lua,
}

impl Scripts {
    fn new() -> Self {
        Self {
            claim: person(include_str!("lua/person_claim.lua")),
            place: person(include_str!("lua/person_place.lua")),
            drop: person(include_str!("lua/person_drop.lua")),
            get: person(include_str!("lua/person_get.lua")),
            record: person(include_str!("lua/person_record.lua")),
            leave: person(include_str!("lua/person_leave.lua")),
            admit: person(include_str!("lua/person_admit.lua")),
            check: person(include_str!("lua/person_check.lua")),
            join: queue_script(include_str!("lua/queue_join.lua")),
            queue_leave: queue_script(include_str!("lua/queue_leave.lua")),
            stats: queue_script(include_str!("lua/queue_stats.lua")),
            range: queue_script(include_str!("lua/queue_range.lua")),
            forget: queue_script(include_str!("lua/queue_forget.lua")),
            snapshot: queue_script(include_str!("lua/queue_snapshot.lua")),
            settings: queue_script(include_str!("lua/queue_settings.lua")),
            tick_begin: queue_script(include_str!("lua/queue_tick_begin.lua")),
            tick_apply: queue_script(include_str!("lua/queue_tick_apply.lua")),
            tick_admit: queue_script(include_str!("lua/queue_tick_admit.lua")),
        }
    }
}

/// Five of a queue's settings shared by every instance (the waiting cap,
/// the closing and the amnesty are shared too, written by the engine:
/// [`RoomState::write_controls`]): read by the tick, so a change made
/// through any instance takes effect everywhere within about a second. An
/// instance's own configuration only seeds them when the queue is first
/// used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomSettings {
    /// People admitted per second.
    pub admit_per_sec: f64,
    /// The most admissions saved up while nobody waits.
    pub burst: f64,
    /// The most admitted chains alive at once.
    pub max_admitted: Option<u64>,
    /// When the queue opens (ms since the epoch).
    pub opens_at_ms: i64,
    /// Whether admission is paused.
    pub paused: bool,
}

impl RoomSettings {
    fn of(rule: &AdmissionRule) -> Self {
        Self {
            admit_per_sec: finite(rule.per_sec),
            burst: finite(rule.burst),
            max_admitted: rule.max_admitted,
            opens_at_ms: rule.opens_at_ms,
            paused: false,
        }
    }

    /// The five values as `queue_settings.lua` takes them, then three
    /// empty ones (the settings this type does not carry are kept).
    fn args(&self) -> [String; 8] {
        [
            format!("{:?}", self.admit_per_sec),
            format!("{:?}", self.burst),
            self.max_admitted
                .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX))
                .to_string(),
            self.opens_at_ms.to_string(),
            u8::from(self.paused).to_string(),
            String::new(),
            String::new(),
            String::new(),
        ]
    }

    fn parse(items: &[Value]) -> Result<Option<Self>, StoreError> {
        let [per_sec, burst, max_admitted, opens_at, paused, ..] = items else {
            return Err(bad_answer());
        };
        let per_sec = text(per_sec)?;
        if per_sec.is_empty() {
            return Ok(None);
        }
        let num = |v: &Value| -> Result<f64, StoreError> {
            text(v)?.parse::<f64>().map_err(|_| bad_answer())
        };
        let max = text(max_admitted)?
            .parse::<i64>()
            .map_err(|_| bad_answer())?;
        Ok(Some(Self {
            admit_per_sec: per_sec.parse().map_err(|_| bad_answer())?,
            burst: num(burst)?,
            max_admitted: u64::try_from(max).ok(),
            opens_at_ms: text(opens_at)?.parse().map_err(|_| bad_answer())?,
            paused: text(paused)? == "1",
        }))
    }
}

/// Why shared settings were not changed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The opening time has passed: it can no longer move.
    #[error("the queue has opened already: its opening time can no longer move")]
    OpeningPassed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-1e15, 1e15)
    }
}

/// What an instance keeps per queue.
#[derive(Default)]
struct Local {
    snap: Snapshot,
    /// The operations' clock at the last tick.
    last_tick_ms: Option<i64>,
    /// The latest operation time seen (for records' lifetimes).
    last_now_ms: Option<i64>,
    /// The settings this instance last passed on (seeded or set).
    last_settings: Option<RoomSettings>,
    /// A tick is due at the next operation (an admitted slot was freed).
    nudge: bool,
    /// One of this instance's operations is running the tick: joins go on
    /// with the snapshot they have instead of starting another (each tick
    /// asks up to [`BATCH`] people's slots, so a burst of concurrent joins
    /// each ticking cost the square of the burst); see `maybe_tick`.
    ticking: bool,
    /// One of this instance's ticks is doing the lease holder's work
    /// (checks and admissions, on a Cluster one after another: see
    /// `admit_front`):
    /// another tick of this instance meanwhile only reads the snapshot
    /// and the shared settings, instead of repeating that work over the
    /// same front (each heartbeat that finds a tick due ticks).
    leading: bool,
    /// The shared settings as last read (by the tick or a write).
    shared: Option<ControlSnapshot>,
    /// Grows whenever `shared` changes (from [`Inner::shared_no`]).
    shared_no: u64,
    /// The engine writes this queue's settings
    /// ([`RoomState::write_controls`]): the operations' rules seed and set
    /// nothing.
    engine: bool,
    /// When a tick of this instance last failed (see [`RECOVERY_MS`]).
    failed_at_ms: Option<i64>,
    /// When a tick first succeeded after a failure (see [`RECOVERY_MS`]).
    recovered_at_ms: Option<i64>,
}

impl Local {
    /// Keeps `shared` if it is new; its number is the next of `counter`
    /// (one counter for every queue of the state, so "nothing changed
    /// since `seen`" needs no lock).
    fn saw(&mut self, shared: Option<ControlSnapshot>, counter: &AtomicU64) {
        if shared.is_some() && shared != self.shared {
            self.shared = shared;
            self.shared_no = counter.fetch_add(1, Ordering::Relaxed) + 1;
        }
    }

    /// Whether this instance's ticks only read and drop nobody: a tick
    /// failed and none has succeeded since, or the first success was less
    /// than [`RECOVERY_MS`] ago.
    fn recovering(&self, now_ms: i64) -> bool {
        // Failing: no tick has succeeded since the last one failed.
        let failing = self
            .failed_at_ms
            .is_some_and(|f| self.last_tick_ms.map_or(true, |ok| ok < f));
        failing
            || self
                .recovered_at_ms
                .is_some_and(|r| now_ms < r.saturating_add(RECOVERY_MS) && now_ms >= r)
    }

    fn live_ms(&self, now_ms: i64) -> i64 {
        match self.shared.as_ref().and_then(|s| s.amnesty) {
            Some((from, until)) if now_ms < until => now_ms.min(from.saturating_sub(1)),
            _ => now_ms,
        }
    }
}

/// Clears a flag of a queue's [`Local`] ([`Local::ticking`],
/// [`Local::leading`]) when the tick ends, fails or is dropped.
struct Clears<'a> {
    queues: &'a Mutex<HashMap<String, Local>>,
    queue: &'a str,
    flag: fn(&mut Local) -> &mut bool,
}

impl Drop for Clears<'_> {
    fn drop(&mut self) {
        if let Some(local) = lock(self.queues).get_mut(self.queue) {
            *(self.flag)(local) = false;
        }
    }
}

struct Inner {
    conn: Conn,
    prefix: String,
    timeout: Duration,
    /// This instance's id for the tick's lease.
    id: String,
    scripts: Scripts,
    queues: Mutex<HashMap<String, Local>>,
    /// The room's amnesty, once shared ([`RoomState::share_amnesty`]).
    amnesty: OnceLock<Arc<Amnesty>>,
    /// The number of the latest shared settings read, of any queue.
    shared_no: AtomicU64,
}

/// The room's state in Redis or Redis Cluster (feature `redis`), shared by
/// every instance that uses the same Redis and prefix: a client may join
/// on one instance and heart-beat on another.
///
/// Every operation costs the same at place 1 and at place 5,000,000: a
/// heartbeat is one script on its person's slot, a join three short
/// scripts, and admission runs on a tick (at most once a second per
/// instance, by the operations' clock) that does bounded work; see the
/// module source for the key layout. Differences from
/// [`MemoryRoomState`](super::MemoryRoomState):
///
/// - Admission happens on the tick, not on every operation: at most a
///   second later (an empty room still admits its first arrival at once,
///   and a [`leave`](RoomState::leave) makes the next operation tick).
/// - "People ahead" is exact at a join, and from a heartbeat an overcount
///   bounded as documented in the `cache` module (never an undercount):
///   less than 1,024 plus what the room removed in the last second plus
///   the dead not yet reached by the front or the sweep.
/// - The settings are shared by every instance: rate, pause, both caps,
///   opening time, closing and the amnesty window. A
///   [`WaitingRoom`](super::WaitingRoom) writes them
///   ([`RoomState::write_controls`]: its configuration seeds them, its
///   library calls change them) and adopts the values each tick reads
///   ([`RoomState::shared_controls`]), so a change through any instance
///   holds everywhere within about a second. Used without the engine, the
///   rule an operation brings seeds rate, pause, admitted cap and opening
///   time when the queue is first used and writes what changed; see
///   [`RoomSettings`]. A moved opening time is refused once the opening
///   time has passed.
/// - Liveness honours the shared amnesty window (and the room's own
///   [`Amnesty`], [`RoomState::share_amnesty`]): the tick, the sweep, a
///   heartbeat and a rejoin keep a place whose deadline it forgives. For
///   3 s after a failed tick the instance drops nobody, so an amnesty
///   declared elsewhere during a store outage is read first.
/// - The opening draws places in the order of a random number each
///   pre-queue join got when it arrived; the tick places them in batches.
#[derive(Clone)]
pub struct RedisRoomState {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisRoomState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRoomState")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("cluster", &matches!(self.inner.conn, Conn::Cluster(_)))
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisRoomState`] with a connection of its own. `Debug`
/// does not print the URLs.
#[must_use]
pub struct RedisRoomStateBuilder {
    nodes: Vec<String>,
    cluster: bool,
    prefix: String,
    timeout: Duration,
}

impl fmt::Debug for RedisRoomStateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRoomStateBuilder")
            .field("nodes", &self.nodes.len())
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisRoomStateBuilder {
    /// The key prefix (default `queuegate`). Must not contain `{` or `}`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The timeout of each call (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects (to the Cluster: reads its topology from the seed nodes).
    pub async fn connect(self) -> Result<RedisRoomState, StoreError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(
                "invalid prefix: must be non-empty, without `{` or `}`".into(),
            ));
        }
        if self.timeout.is_zero() || self.nodes.is_empty() {
            return Err(StoreError::Backend(
                "invalid settings: a positive timeout and at least one node".into(),
            ));
        }
        let conn = if self.cluster {
            Conn::Cluster(ClusterConn::connect(&self.nodes, self.timeout).await?)
        } else {
            let client = ::redis::Client::open(self.nodes[0].as_str()).map_err(conn::backend)?;
            let config = ::redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout)
                .set_number_of_retries(1)
                .set_max_delay(200);
            let manager = tokio::time::timeout(
                self.timeout * 4,
                ::redis::aio::ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(conn::backend)?;
            Conn::Single(manager)
        };
        Ok(RedisRoomState::with(conn, self.prefix, self.timeout))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bad_answer() -> StoreError {
    StoreError::Backend("redis room script answer".into())
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad_answer),
        _ => Err(bad_answer()),
    }
}

fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad_answer()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Okay => Ok("OK".into()),
        Value::Nil => Ok(String::new()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(bad_answer()),
    }
}

fn items(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(bad_answer()),
    }
}

/// `binding, score` pairs as Redis returns them `WITHSCORES`.
fn pairs(v: &Value) -> Result<Vec<(String, String)>, StoreError> {
    let Value::Array(items) = v else {
        return Err(bad_answer());
    };
    items
        .chunks(2)
        .map(|c| match c {
            [b, s] => Ok((text(b)?, text(s)?)),
            _ => Err(bad_answer()),
        })
        .collect()
}

fn parse_ticket_id(hex: &str) -> Option<TicketId> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TicketId(id))
}

/// A person's record as the scripts return it.
struct Record {
    tid: String,
    place: u64,
    status: String,
    live: i64,
    facts: String,
}

impl Record {
    fn parse(items: &[Value]) -> Result<Self, StoreError> {
        let [tid, place, status, live, facts] = items else {
            return Err(bad_answer());
        };
        Ok(Self {
            tid: text(tid)?,
            place: u64::try_from(int(place)?).map_err(|_| bad_answer())?,
            status: text(status)?,
            live: int(live)?,
            facts: text(facts)?,
        })
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl RedisRoomState {
    /// A room state on the connection, key prefix and timeout of `store`
    /// (a single Redis).
    pub fn new(store: &RedisReplayStore) -> Self {
        Self::with(
            store.connection(),
            store.prefix().to_owned(),
            store.call_timeout(),
        )
    }

    /// A room state with its own connection to the single Redis at `url`.
    pub fn builder(url: &str) -> RedisRoomStateBuilder {
        RedisRoomStateBuilder {
            nodes: vec![url.to_owned()],
            cluster: false,
            prefix: "queuegate".into(),
            timeout: Duration::from_millis(500),
        }
    }

    /// A room state on the Redis Cluster reached through `seeds` (some of
    /// its nodes' URLs, `redis://127.0.0.1:7000`).
    pub fn cluster_builder(seeds: &[&str]) -> RedisRoomStateBuilder {
        RedisRoomStateBuilder {
            nodes: seeds.iter().map(|s| (*s).to_owned()).collect(),
            cluster: true,
            prefix: "queuegate".into(),
            timeout: Duration::from_millis(500),
        }
    }

    fn with(conn: Conn, prefix: String, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                prefix,
                timeout,
                id: TicketId::random().to_string(),
                scripts: Scripts::new(),
                queues: Mutex::new(HashMap::new()),
                amnesty: OnceLock::new(),
                shared_no: AtomicU64::new(0),
            }),
        }
    }

    /// The queue's shared settings (`None` before the queue's first use).
    pub async fn settings(&self, queue: &str) -> Result<Option<RoomSettings>, StoreError> {
        let reply = self
            .inner
            .queue_eval(
                &self.inner.scripts.settings,
                queue,
                wall_ms(),
                &std::iter::once("get".to_owned())
                    .chain(std::iter::repeat(String::new()).take(8))
                    .collect::<Vec<_>>(),
            )
            .await?;
        RoomSettings::parse(items(reply)?.get(1..).ok_or_else(bad_answer)?)
    }

    /// Changes the queue's shared settings for every instance (within about
    /// a second). Moving the opening time once it has passed is refused,
    /// and then nothing changes.
    pub async fn set_settings(
        &self,
        queue: &str,
        settings: &RoomSettings,
    ) -> Result<(), SettingsError> {
        let mut args = vec!["set".to_owned()];
        args.extend(settings.args());
        let reply = self
            .inner
            .queue_eval(&self.inner.scripts.settings, queue, wall_ms(), &args)
            .await?;
        let reply = items(reply)?;
        match reply.first().map(int) {
            Some(Ok(0)) => {
                let mut map = lock(&self.inner.queues);
                let local = map.entry(queue.to_owned()).or_default();
                local.nudge = true;
                Ok(())
            }
            Some(Ok(1)) => Err(SettingsError::OpeningPassed),
            _ => Err(bad_answer().into()),
        }
    }

    /// Deletes the queue's own keys (tests, deliberate resets). People's
    /// records expire by themselves.
    pub async fn clear(&self, queue: &str) -> Result<(), StoreError> {
        let keys = self.inner.queue_keys(queue);
        self.inner
            .conn
            .query(::redis::cmd("UNLINK").arg(&keys[..]), self.inner.timeout)
            .await
            .map(|_| ())
    }

    /// Runs the tick for `queue` now if it is due (tests and benches).
    #[doc(hidden)]
    pub async fn tick_now(&self, queue: &str, rule: &AdmissionRule) -> Result<(), StoreError> {
        lock(&self.inner.queues)
            .entry(queue.to_owned())
            .or_default()
            .nudge = true;
        self.inner.maybe_tick(queue, rule, false).await.map(|_| ())
    }
}

impl Inner {
    fn queue_keys(&self, queue: &str) -> [String; 8] {
        let base = format!("{}:room:{{{}}}", self.prefix, QueueId::from_name(queue));
        [
            "layout", "meta", "settings", "waiting", "pre", "admitted", "blocks", "lease",
        ]
        .map(|k| format!("{base}:{k}"))
    }

    fn person_key(&self, queue: &str, binding: &Binding) -> String {
        format!(
            "{}:rp:{{{}}}:{}",
            self.prefix,
            binding,
            QueueId::from_name(queue)
        )
    }

    /// Runs a script on the queue's slot; refuses a queue of another layout.
    async fn queue_eval(
        &self,
        script: &Lua,
        queue: &str,
        now_ms: i64,
        extra: &[String],
    ) -> Result<Value, StoreError> {
        let mut args = Vec::with_capacity(2 + extra.len());
        args.push(LAYOUT.to_owned());
        args.push(now_ms.to_string());
        args.extend_from_slice(extra);
        let reply = self
            .conn
            .eval(script, &self.queue_keys(queue), &args, self.timeout)
            .await?;
        if let Value::Array(items) = &reply {
            if let [Value::Int(-1), found] = items.as_slice() {
                let found = text(found).unwrap_or_default();
                let message = format!(
                    "the room state in Redis has key layout version {found:?}, this build knows {LAYOUT:?}: refusing to touch it (finish the rolling upgrade, or drain the queue)"
                );
                #[cfg(feature = "tracing")]
                tracing::error!(queue = %queue, "{message}");
                return Err(StoreError::Backend(message));
            }
        }
        Ok(reply)
    }

    async fn person_eval(
        &self,
        script: &Lua,
        key: &str,
        args: &[String],
    ) -> Result<Value, StoreError> {
        self.conn
            .eval(
                script,
                std::slice::from_ref(&key.to_owned()),
                args,
                self.timeout,
            )
            .await
    }

    /// The time to judge liveness by at `now_ms`: earlier while an
    /// amnesty lasts, the shared one as last read or the room's own.
    fn live_ms(&self, queue: &str, now_ms: i64) -> i64 {
        let shared = lock(&self.queues)
            .get(queue)
            .map_or(now_ms, |l| l.live_ms(now_ms));
        let own = self
            .amnesty
            .get()
            .map_or(now_ms, |a| a.liveness_now(now_ms));
        shared.min(own)
    }

    /// Writes the engine's settings ([`RoomState::write_controls`]).
    async fn write_controls(
        &self,
        queue: &str,
        now_ms: i64,
        write: &ControlWrite,
    ) -> Result<ControlSnapshot, ControlError> {
        let v = &write.values;
        let wanted = controls_args(v, write.burst);
        let mut args = vec![if write.seed { "seed" } else { "set" }.to_owned()];
        for (setting, value) in SETTING_FIELDS.iter().zip(wanted.clone()) {
            let write_it = write.seed
                || setting.is_some_and(|s| write.changed.contains(&s))
                // The burst goes with the rate.
                || (setting.is_none() && write.changed.contains(&Setting::AdmitPerSec));
            args.push(if write_it { value } else { String::new() });
        }
        let reply = items(
            self.queue_eval(&self.scripts.settings, queue, now_ms, &args)
                .await?,
        )?;
        let code = int(reply.first().ok_or_else(bad_answer)?)?;
        let values = reply.get(1..).ok_or_else(bad_answer)?;
        let shared = parse_controls(values)?.ok_or_else(bad_answer)?;
        if write.seed && values.iter().map(text).collect::<Result<Vec<_>, _>>()? != wanted {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                queue = %queue,
                "this instance's room settings differ from the queue's shared settings; the shared ones apply"
            );
        }
        let mut map = lock(&self.queues);
        let local = map.entry(queue.to_owned()).or_default();
        local.engine = true;
        local.saw(Some(shared.clone()), &self.shared_no);
        match code {
            0 => Ok(shared),
            1 => Err(ControlError::OpeningPassed),
            _ => Err(bad_answer().into()),
        }
    }

    fn note_now(&self, queue: &str, now_ms: i64) {
        let mut map = lock(&self.queues);
        let local = map.entry(queue.to_owned()).or_default();
        local.last_now_ms = Some(local.last_now_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// Seeds or writes the shared settings when this instance's rule is
    /// new or changed, then ticks if due. Returns whether it ticked.
    ///
    /// `join`: the caller is a join, which judges nobody's liveness and
    /// may go on with the snapshot while another operation of this
    /// instance ticks (a burst of joins would otherwise each tick, and
    /// each tick asks up to [`BATCH`] people's slots: the burst's square).
    /// A heartbeat always ticks itself when a tick is due: it judges its
    /// person by the shared settings (an amnesty declared through another
    /// instance during a store outage), which only a tick reads (one that
    /// overlaps another tick of this instance reads just those and the
    /// snapshot: see `tick`).
    async fn maybe_tick(
        &self,
        queue: &str,
        rule: &AdmissionRule,
        join: bool,
    ) -> Result<bool, StoreError> {
        let wanted = RoomSettings::of(rule);
        let (mode, last_settings) = {
            let mut map = lock(&self.queues);
            let local = map.entry(queue.to_owned()).or_default();
            local.last_now_ms = Some(
                local
                    .last_now_ms
                    .map_or(rule.now_ms, |t| t.max(rule.now_ms)),
            );
            let mode = match local.last_settings {
                _ if local.engine => None,
                None => Some("seed"),
                Some(last) if last != wanted => Some("set"),
                Some(_) => None,
            };
            let due = mode.is_some()
                || local.nudge
                || match local.last_tick_ms {
                    None => true,
                    Some(t) => rule.now_ms >= t.saturating_add(TICK_MS) || rule.now_ms < t,
                };
            if !due || (join && local.ticking) {
                return Ok(false);
            }
            local.ticking = true;
            (mode, local.last_settings)
        };
        let _ticking = Clears {
            queues: &self.queues,
            queue,
            flag: |l| &mut l.ticking,
        };
        if let Some(mode) = mode {
            // Only what this instance changed is written: its other
            // settings (say an opening time of its own) stay as shared.
            let mut args = wanted.args();
            if let Some(last) = last_settings {
                for (arg, old) in args.iter_mut().zip(last.args()) {
                    if *arg == old {
                        arg.clear();
                    }
                }
            }
            let mut all = vec![mode.to_owned()];
            all.extend(args);
            let reply = self
                .queue_eval(&self.scripts.settings, queue, rule.now_ms, &all)
                .await?;
            let reply = items(reply)?;
            let shared = RoomSettings::parse(reply.get(1..).ok_or_else(bad_answer)?)?;
            if shared.is_some_and(|s| {
                s.opens_at_ms != wanted.opens_at_ms || (mode == "seed" && s != wanted)
            }) {
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    queue = %queue,
                    "this instance's room settings differ from the queue's shared settings; the shared ones apply"
                );
            }
            lock(&self.queues)
                .entry(queue.to_owned())
                .or_default()
                .last_settings = Some(wanted);
        }
        if let Err(e) = self.tick(queue, rule.now_ms).await {
            lock(&self.queues)
                .entry(queue.to_owned())
                .or_default()
                .failed_at_ms = Some(rule.now_ms);
            return Err(e);
        }
        let mut map = lock(&self.queues);
        let local = map.entry(queue.to_owned()).or_default();
        let was_failing = local
            .failed_at_ms
            .is_some_and(|f| local.last_tick_ms.map_or(true, |ok| ok < f));
        if was_failing {
            local.recovered_at_ms = Some(rule.now_ms);
        }
        local.last_tick_ms = Some(rule.now_ms);
        local.nudge = false;
        Ok(true)
    }

    /// Asks each person's slot whether the chain behind an entry lives.
    async fn check_all(
        &self,
        queue: &str,
        status: &str,
        entries: &[(String, String)],
        with_place: bool,
        now_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let calls = entries.iter().map(|(b, score)| async move {
            let Some(binding) = parse_binding(b) else {
                return Ok((0, 0));
            };
            let place = if with_place {
                score.clone()
            } else {
                "-1".into()
            };
            let reply = self
                .person_eval(
                    &self.scripts.check,
                    &self.person_key(queue, &binding),
                    &[status.to_owned(), place, now_ms.to_string()],
                )
                .await?;
            let reply = items(reply)?;
            let code = int(reply.first().ok_or_else(bad_answer)?)?;
            let live = reply.get(1).map(int).transpose()?.unwrap_or(0);
            Ok::<_, StoreError>((code, live))
        });
        join_all(calls).await.into_iter().collect()
    }

    /// One tick: the lease holder's bounded admission work, then every
    /// instance's snapshot. Only the snapshot (with the shared settings)
    /// while the instance recovers from a failed tick, or while another
    /// tick of this instance does the lease holder's work: that work,
    /// admissions one after another, lasts about a round trip per
    /// admission, and every heartbeat finding a tick due meanwhile would
    /// otherwise repeat it over the same front.
    async fn tick(&self, queue: &str, now_ms: i64) -> Result<(), StoreError> {
        let read_only = {
            let mut map = lock(&self.queues);
            let local = map.entry(queue.to_owned()).or_default();
            let read_only = local.recovering(now_ms) || local.leading;
            if !read_only {
                local.leading = true;
            }
            read_only
        };
        if read_only {
            return self.refresh(queue, now_ms).await;
        }
        let _leading = Clears {
            queues: &self.queues,
            queue,
            flag: |l| &mut l.leading,
        };
        let begin = items(
            self.queue_eval(
                &self.scripts.tick_begin,
                queue,
                now_ms,
                &[
                    self.id.clone(),
                    LEASE_MS.to_string(),
                    BATCH.to_string(),
                    self.live_ms(queue, now_ms).to_string(),
                ],
            )
            .await?,
        )?;
        if int(begin.first().ok_or_else(bad_answer)?)? == 1 {
            let [_, expired, pre, sweep, live_at] = begin.as_slice() else {
                return Err(bad_answer());
            };
            // Liveness is judged at `live_at`: now, or earlier while an
            // amnesty (this instance's or the shared one) lasts.
            let live_at = int(live_at)?.min(now_ms);
            let (expired, pre, sweep) = (pairs(expired)?, pairs(pre)?, pairs(sweep)?);
            let (e, p, s) = futures_util::join!(
                self.check_all(queue, "a", &expired, false, live_at),
                self.check_all(queue, "p", &pre, false, live_at),
                self.check_all(queue, "w", &sweep, true, live_at),
            );
            let (e, p, s) = (e?, p?, s?);
            let expired: Vec<[String; 3]> = expired
                .iter()
                .zip(&e)
                .map(|((b, score), (code, live))| {
                    // A deadline an amnesty forgives stays listed (after
                    // now: looked at again once the amnesty has ended).
                    let live = if *code == 1 {
                        (*live).max(now_ms + 1)
                    } else {
                        0
                    };
                    [b.clone(), score.clone(), live.to_string()]
                })
                .collect();
            // The opening places in draw order: nothing from the first
            // join still being set up on (it waits for the next tick).
            let pre: Vec<[String; 3]> = pre
                .iter()
                .zip(&p)
                .take_while(|(_, (code, _))| *code != 2)
                .map(|((b, draw), (code, _))| [b.clone(), draw.clone(), code.to_string()])
                .collect();
            // A join being set up counts as alive.
            let swept: Vec<[String; 3]> = sweep
                .iter()
                .zip(&s)
                .map(|((b, place), (code, _))| {
                    let alive = if *code == 0 { "0" } else { "1" };
                    [b.clone(), place.clone(), alive.to_owned()]
                })
                .collect();
            // A full batch: the next tick sweeps on after its last place;
            // a short one: the sweep starts again from the front.
            let cursor = match sweep.last() {
                Some((_, place)) if sweep.len() >= BATCH => place.clone(),
                _ => "0".to_owned(),
            };
            let mut left = [&expired[..], &pre[..], &swept[..]];
            loop {
                let mut room = APPLY_CHUNK;
                let mut args = vec![
                    self.id.clone(),
                    BATCH.to_string(),
                    BATCH.to_string(),
                    String::new(),
                ];
                for section in &mut left {
                    let (part, rest) = section.split_at(section.len().min(room));
                    room -= part.len();
                    args.push(part.len().to_string());
                    args.extend(part.iter().flatten().cloned());
                    *section = rest;
                }
                let finish = left.iter().all(|s| s.is_empty());
                if finish {
                    args[3].clone_from(&cursor);
                }
                let apply = items(
                    self.queue_eval(&self.scripts.tick_apply, queue, now_ms, &args)
                        .await?,
                )?;
                if int(apply.first().ok_or_else(bad_answer)?)? != 1 {
                    // The lease was lost: another instance ticks now.
                    break;
                }
                let placed = pairs(apply.get(1).ok_or_else(bad_answer)?)?;
                self.place_drawn(queue, &placed).await?;
                if finish {
                    let [_, _, n, front] = apply.as_slice() else {
                        return Err(bad_answer());
                    };
                    let n = usize::try_from(int(n)?).unwrap_or(0);
                    self.admit_front(queue, n, &pairs(front)?, live_at).await?;
                    break;
                }
            }
        }
        self.refresh(queue, now_ms).await
    }

    /// Gives the people the opening just placed their places.
    async fn place_drawn(
        &self,
        queue: &str,
        placed: &[(String, String)],
    ) -> Result<(), StoreError> {
        let calls = placed.iter().filter_map(|(b, place)| {
            let binding = parse_binding(b)?;
            Some(async move {
                self.person_eval(
                    &self.scripts.place,
                    &self.person_key(queue, &binding),
                    &["w".into(), place.clone(), "p".into()],
                )
                .await
            })
        });
        for r in join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// Admits up to `n` live people from `front` in place order, so that
    /// nobody is admitted while a live person with a smaller place still
    /// waits. A chunk of places is checked at once on the people's slots
    /// (a check admits nobody; the dead are skipped for free), then the
    /// live ones are admitted in place order: on one Redis pipelined on its
    /// one connection (Redis runs them in the order sent); on a Cluster one
    /// after another, each admission answered (and re-checked on the
    /// person's slot) before the next is sent, since the people's slots
    /// are on different primaries and admissions sent together could land
    /// out of order. Each chunk's outcome is recorded before the next
    /// chunk is checked. The first error
    /// or unknown outcome ends the batch, so nobody behind a place whose
    /// admission failed is admitted before it; that place stays for the
    /// next tick. People found admitted already (by an overlapping tick)
    /// count toward `n`, as they did when admissions went out together.
    async fn admit_front(
        &self,
        queue: &str,
        n: usize,
        front: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        const CHUNK: usize = 128;
        // On one Redis the admissions of a chunk go out together: they are
        // pipelined on one connection, so Redis runs them in place order.
        // On a Cluster they are on different primaries: one after another.
        let pipelined = !matches!(self.conn, Conn::Cluster(_));
        let mut taken = 0;
        'chunks: for chunk in front.chunks(CHUNK) {
            if taken >= n {
                break;
            }
            // What this chunk decided, recorded before the next chunk, so
            // that a tick cut short (the request that ran it dropped) loses
            // at most one chunk's record. "wa": a person an earlier tick
            // admitted without recording it is still live at its place:
            // its admit answers "admitted already" and it is recorded.
            let mut outcome: Vec<String> = vec![String::new()];
            let checks = self.check_all(queue, "wa", chunk, true, now_ms).await?;
            let mut live = Vec::new();
            let mut stop = false;
            for ((b, place), (code, _)) in chunk.iter().zip(checks) {
                match code {
                    0 => outcome.extend([b.clone(), place.clone(), "0".into(), "0".into()]),
                    1 if taken + live.len() < n => live.push((b, place)),
                    // The tick's share is taken: the rest waits, in order.
                    1 => {
                        stop = true;
                        break;
                    }
                    // A join being set up at this place: keep the order.
                    _ => {
                        stop = true;
                        break;
                    }
                }
            }
            let answers: Vec<Result<(i64, i64), StoreError>> = if pipelined {
                join_all(
                    live.iter()
                        .map(|(b, place)| self.admit_one(queue, b, place, now_ms)),
                )
                .await
            } else {
                let mut answers = Vec::with_capacity(live.len());
                for (b, place) in &live {
                    let answer = self.admit_one(queue, b, place, now_ms).await;
                    let failed = !matches!(answer, Ok((0..=2, _)));
                    answers.push(answer);
                    if failed {
                        break;
                    }
                }
                answers
            };
            for ((b, place), answer) in live.iter().zip(answers) {
                match answer {
                    Ok((code @ 0..=2, deadline)) => {
                        if code != 0 {
                            taken += 1;
                        }
                        outcome.extend([
                            (*b).clone(),
                            (*place).clone(),
                            code.to_string(),
                            deadline.to_string(),
                        ]);
                    }
                    // Being set up, or an unknown outcome: this place and
                    // every one behind it wait for the next tick (on one
                    // Redis, one behind it admitted meanwhile is found
                    // admitted by that tick's check and recorded then).
                    Ok(_) | Err(_) => {
                        stop = true;
                        break;
                    }
                }
            }
            if outcome.len() > 1 {
                self.queue_eval(&self.scripts.tick_admit, queue, now_ms, &outcome)
                    .await?;
            }
            if stop {
                break 'chunks;
            }
        }
        Ok(())
    }

    /// One front place's admission on the person's slot: `(code,
    /// deadline)` as `lua/person_admit.lua` answers.
    async fn admit_one(
        &self,
        queue: &str,
        binding: &str,
        place: &str,
        now_ms: i64,
    ) -> Result<(i64, i64), StoreError> {
        let Some(binding) = parse_binding(binding) else {
            return Ok((0, 0));
        };
        let reply = items(
            self.person_eval(
                &self.scripts.admit,
                &self.person_key(queue, &binding),
                &[place.to_owned(), now_ms.to_string()],
            )
            .await?,
        )?;
        let code = int(reply.first().ok_or_else(bad_answer)?)?;
        let live = reply.get(1).map(int).transpose()?.unwrap_or(0);
        Ok((code, live))
    }

    /// Reads the queue's snapshot into this instance's cache.
    async fn refresh(&self, queue: &str, now_ms: i64) -> Result<(), StoreError> {
        let reply = items(
            self.queue_eval(&self.scripts.snapshot, queue, now_ms, &[])
                .await?,
        )?;
        let [next, _opened, front, first, counts, settings @ ..] = reply.as_slice() else {
            return Err(bad_answer());
        };
        let shared = parse_controls(settings)?;
        let mut snap = Snapshot {
            next: u64::try_from(int(next)?).map_err(|_| bad_answer())?,
            front: u64::try_from(int(front)?).map_err(|_| bad_answer())?,
            ..Snapshot::default()
        };
        let bytes = match counts {
            Value::BulkString(b) => b.as_slice(),
            _ => &[],
        };
        snap.set_counts(u64::try_from(int(first)?).map_err(|_| bad_answer())?, bytes);
        let mut map = lock(&self.queues);
        let local = map.entry(queue.to_owned()).or_default();
        local.snap = snap;
        local.saw(shared, &self.shared_no);
        Ok(())
    }

    /// A person's place as the instance's snapshot sees it.
    fn place_of(&self, queue: &str, r: &Record) -> Place {
        let waiting = r.status == "w";
        let ahead = if waiting {
            lock(&self.queues)
                .get(queue)
                .map_or(0, |l| l.snap.ahead(r.place))
        } else {
            0
        };
        Place {
            chain: parse_ticket_id(&r.tid).and_then(|id| parse_facts(id, &r.facts)),
            position: if r.status == "w" || r.status == "a" {
                r.place
            } else {
                0
            },
            ahead,
            admitted: r.status == "a",
            live_until_ms: r.live,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let reply = items(self.person_eval(&self.scripts.get, key, &[]).await?)?;
        if reply.is_empty() {
            return Ok(None);
        }
        Record::parse(&reply).map(Some)
    }

    async fn join(
        &self,
        queue: &str,
        join: JoinRecord,
        rule: AdmissionRule,
    ) -> Result<Joined, StoreError> {
        let now = rule.now_ms;
        let key = self.person_key(queue, &join.binding);
        // The claim judges the binding's chain alive by the shared amnesty
        // as last read: after a store outage, read it first.
        let stale = match lock(&self.queues).get(queue).and_then(|l| l.last_tick_ms) {
            Some(t) => now >= t.saturating_add(2 * TICK_MS) || now < t,
            None => true,
        };
        if stale && self.maybe_tick(queue, &rule, true).await? {
            // An empty room still admits a new arrival at once.
            lock(&self.queues)
                .entry(queue.to_owned())
                .or_default()
                .nudge = true;
        }
        let claim = items(
            self.person_eval(
                &self.scripts.claim,
                &key,
                &[
                    now.to_string(),
                    join.live_until_ms.to_string(),
                    SLACK_MS.to_string(),
                    self.live_ms(queue, now).to_string(),
                ],
            )
            .await?,
        )?;
        if int(claim.first().ok_or_else(bad_answer)?)? == 1 {
            let mut record = Record::parse(claim.get(1..).ok_or_else(bad_answer)?)?;
            if self.maybe_tick(queue, &rule, true).await? {
                if let Some(r) = self.get(&key).await? {
                    record = r;
                }
            }
            return Ok(Joined::Existing(self.place_of(queue, &record)));
        }
        let max_waiting = join
            .max_waiting
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let draw = os_random_u64() >> 12;
        let known_next = lock(&self.queues).get(queue).map_or(0, |l| l.snap.next);
        let placed = items(
            self.queue_eval(
                &self.scripts.join,
                queue,
                now,
                &[
                    join.binding.to_string(),
                    max_waiting.to_string(),
                    draw.to_string(),
                    rule.opens_at_ms.to_string(),
                    known_next.to_string(),
                ],
            )
            .await?,
        )?;
        let code = int(placed.first().ok_or_else(bad_answer)?)?;
        if code == 2 {
            self.person_eval(&self.scripts.drop, &key, &[]).await?;
            return Ok(Joined::Full);
        }
        let [_, status, place, ahead, _next] = placed.as_slice() else {
            return Err(bad_answer());
        };
        let status = text(status)?;
        let place = u64::try_from(int(place)?).map_err(|_| bad_answer())?;
        let ahead = u64::try_from(int(ahead)?).map_err(|_| bad_answer())?;
        self.person_eval(
            &self.scripts.place,
            &key,
            &[status.clone(), place.to_string(), "j".into()],
        )
        .await?;
        if status == "w" {
            lock(&self.queues)
                .entry(queue.to_owned())
                .or_default()
                .snap
                .joined(place);
        }
        if self.maybe_tick(queue, &rule, true).await? {
            if let Some(r) = self.get(&key).await? {
                return Ok(Joined::New(self.place_of(queue, &r)));
            }
        }
        Ok(Joined::New(Place {
            chain: None,
            position: if status == "w" { place } else { 0 },
            ahead,
            admitted: false,
            live_until_ms: join.live_until_ms,
        }))
    }

    /// A heartbeat: one plain `HMGET` on the person's own key (no script:
    /// the cheapest read Redis has for it). A dead record is left to its
    /// expiry and to the tick, which drop it.
    async fn beat(
        &self,
        queue: &str,
        beat: BeatRecord,
        rule: AdmissionRule,
    ) -> Result<Option<Place>, StoreError> {
        self.maybe_tick(queue, &rule, false).await?;
        let key = self.person_key(queue, &beat.binding);
        let reply = items(
            self.conn
                .query(
                    ::redis::cmd("HMGET")
                        .arg(&key)
                        .arg(&["tid", "place", "st", "live", "facts"]),
                    self.timeout,
                )
                .await?,
        )?;
        if matches!(reply.first(), None | Some(Value::Nil)) {
            return Ok(None);
        }
        let record = Record::parse(&reply)?;
        if record.tid != beat.ticket_id.to_string()
            || record.live <= self.live_ms(queue, rule.now_ms)
        {
            return Ok(None);
        }
        Ok(Some(self.place_of(queue, &record)))
    }

    async fn record(
        &self,
        queue: &str,
        binding: Binding,
        chain: ChainFacts,
        live_until_ms: i64,
    ) -> Result<(), StoreError> {
        let now = lock(&self.queues)
            .get(queue)
            .and_then(|l| l.last_now_ms)
            .unwrap_or_else(wall_ms);
        self.person_eval(
            &self.scripts.record,
            &self.person_key(queue, &binding),
            &[
                chain.ticket_id.to_string(),
                format_facts(&chain),
                live_until_ms.to_string(),
                now.to_string(),
                SLACK_MS.to_string(),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn leave(&self, queue: &str, binding: Binding) -> Result<(), StoreError> {
        let key = self.person_key(queue, &binding);
        let old = self.get(&key).await?;
        let had_record = int(&self.person_eval(&self.scripts.leave, &key, &[]).await?)? == 1;
        let now = lock(&self.queues)
            .get(queue)
            .and_then(|l| l.last_now_ms)
            .unwrap_or_else(wall_ms);
        let reply = items(
            self.queue_eval(
                &self.scripts.queue_leave,
                queue,
                now,
                &[binding.to_string()],
            )
            .await?,
        )?;
        let [was, front] = reply.as_slice() else {
            return Err(bad_answer());
        };
        let front = u64::try_from(int(front)?).map_err(|_| bad_answer())?;
        let mut map = lock(&self.queues);
        let local = map.entry(queue.to_owned()).or_default();
        let was_waiting = int(was)? == 1;
        if was_waiting {
            if let Some(r) = old {
                local.snap.left(r.place, front);
            }
        }
        // A place (perhaps an admitted one) was freed: tick at the next
        // operation. The leave of a binding the room does not know changed
        // nothing and ticks nothing (each tick asks up to `BATCH` people's
        // slots: a flood of unknown leaves must not buy a tick each).
        if was_waiting || had_record {
            local.nudge = true;
        }
        Ok(())
    }

    async fn sweep(&self, queue: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.note_now(queue, now_ms);
        // Just back from a store outage (or still in it): an amnesty
        // declared through another instance meanwhile may not have been
        // read yet, and a sweep now would drop the people it forgives.
        if lock(&self.queues)
            .get(queue)
            .is_some_and(|l| l.recovering(now_ms))
        {
            return Ok(0);
        }
        let live_at = self.live_ms(queue, now_ms);
        let mut total = 0u64;
        for (which, status, with_place) in [("6", "a", false), ("5", "p", false), ("4", "w", true)]
        {
            let mut cursor = "-inf".to_owned();
            loop {
                let reply = self
                    .queue_eval(
                        &self.scripts.range,
                        queue,
                        now_ms,
                        &[which.into(), cursor.clone(), BATCH.to_string()],
                    )
                    .await?;
                let batch = pairs(&reply)?;
                let Some((_, last)) = batch.last() else {
                    break;
                };
                cursor = format!("({last}");
                let alive = self
                    .check_all(queue, status, &batch, with_place, live_at)
                    .await?;
                let mut args = vec![which.to_owned()];
                for ((b, s), (code, _)) in batch.iter().zip(&alive) {
                    if *code == 0 {
                        args.extend([b.clone(), s.clone()]);
                    }
                }
                if args.len() > 1 {
                    let n = int(&self
                        .queue_eval(&self.scripts.forget, queue, now_ms, &args)
                        .await?)?;
                    total += u64::try_from(n).unwrap_or(0);
                }
                if batch.len() < BATCH {
                    break;
                }
            }
        }
        // The counts changed: read them again at the next operation.
        lock(&self.queues)
            .entry(queue.to_owned())
            .or_default()
            .nudge = true;
        Ok(total)
    }

    async fn stats(&self, queue: &str, now_ms: i64) -> Result<RoomStats, StoreError> {
        let reply = items(
            self.queue_eval(&self.scripts.stats, queue, now_ms, &[])
                .await?,
        )?;
        let [waiting, alive, total, entries, last, opened] = reply.as_slice() else {
            return Err(bad_answer());
        };
        let count = |v: &Value| u64::try_from(int(v)?).map_err(|_| bad_answer());
        Ok(RoomStats {
            waiting: count(waiting)?,
            admitted_alive: count(alive)?,
            admitted_total: count(total)?,
            entries: count(entries)?,
            last_position: count(last)?,
            opened: int(opened)? == 1,
        })
    }
}

/// The settings behind each field of `queue_settings.lua`, in its order
/// (`None`: the burst, written with the rate).
const SETTING_FIELDS: [Option<Setting>; 8] = [
    Some(Setting::AdmitPerSec),
    None,
    Some(Setting::MaxAdmitted),
    Some(Setting::OpensAt),
    Some(Setting::Paused),
    Some(Setting::MaxWaiting),
    Some(Setting::Closed),
    Some(Setting::Amnesty),
];

fn cap_arg(cap: Option<u64>) -> String {
    cap.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX))
        .to_string()
}

/// The eight values of `queue_settings.lua`, as it stores them.
fn controls_args(v: &ControlSnapshot, burst: f64) -> Vec<String> {
    vec![
        format!("{:?}", finite(v.admit_per_sec)),
        format!("{:?}", finite(burst)),
        cap_arg(v.max_admitted),
        v.opens_at_ms.unwrap_or(i64::MIN).to_string(),
        u8::from(v.paused).to_string(),
        cap_arg(v.max_waiting),
        v.closed
            .as_deref()
            .map_or_else(|| "0".to_owned(), |m| format!("1{m}")),
        v.amnesty
            .map_or_else(|| "-".to_owned(), |(a, b)| format!("{a}:{b}")),
    ]
}

/// The settings among `items` (the eight values of `queue_settings.lua`);
/// `None` before the queue's first use. A value a build before these
/// fields never wrote reads as "none" (no cap, open, no amnesty).
fn parse_controls(items: &[Value]) -> Result<Option<ControlSnapshot>, StoreError> {
    let [per_sec, _burst, max_admitted, opens_at, paused, max_waiting, closed, amnesty] = items
    else {
        return Err(bad_answer());
    };
    let per_sec = text(per_sec)?;
    if per_sec.is_empty() {
        return Ok(None);
    }
    let cap = |v: &Value| -> Result<Option<u64>, StoreError> {
        let t = text(v)?;
        if t.is_empty() {
            return Ok(None);
        }
        let n = t.parse::<i64>().map_err(|_| bad_answer())?;
        Ok(u64::try_from(n).ok())
    };
    let opens = text(opens_at)?;
    let opens = if opens.is_empty() {
        i64::MIN
    } else {
        opens.parse::<i64>().map_err(|_| bad_answer())?
    };
    let closed = text(closed)?;
    let amnesty = text(amnesty)?;
    let amnesty = amnesty.split_once(':').and_then(|(a, b)| {
        let (a, b) = (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?);
        (a <= b).then_some((a, b))
    });
    Ok(Some(ControlSnapshot {
        admit_per_sec: per_sec.parse().map_err(|_| bad_answer())?,
        paused: text(paused)? == "1",
        max_admitted: cap(max_admitted)?,
        max_waiting: cap(max_waiting)?,
        opens_at_ms: (opens != i64::MIN).then_some(opens),
        closed: closed.strip_prefix('1').map(Arc::from),
        amnesty,
    }))
}

/// `sequence:joined:expires:admitted-from:epoch` (`-`: not admitted).
///
/// The epoch is the fifth field since issue 11, appended so that the
/// format stays compatible both ways within layout 2: a build before it
/// reads the first four fields and ignores the rest (and the record
/// script only reads the sequence), and facts without it (written by such
/// a build, or `ChainFacts::epoch` `None`) have four fields and read back
/// with an unknown epoch, with which a rejoin of an admitted chain is
/// refused (`Issuer::rejoin`): the person starts a new chain rather than a
/// chain whose records may be gone being revived (a waiting chain is
/// re-minted under the store's epoch and keeps its place). Every heartbeat through a new build rewrites the
/// facts with the epoch, so after an upgrade only a rejoin before the
/// chain's next heartbeat meets such facts.
fn format_facts(f: &ChainFacts) -> String {
    let mut text = match f.admitted_from_ms {
        Some(a) => format!("{}:{}:{}:{a}", f.sequence, f.joined_at_ms, f.expires_at_ms),
        None => format!("{}:{}:{}:-", f.sequence, f.joined_at_ms, f.expires_at_ms),
    };
    if let Some(e) = f.epoch {
        text.push(':');
        text.push_str(&e.to_string());
    }
    text
}

fn parse_facts(ticket_id: TicketId, text: &str) -> Option<ChainFacts> {
    let mut parts = text.split(':');
    let mut next = || parts.next();
    let sequence = next()?.parse().ok()?;
    let joined_at_ms = next()?.parse().ok()?;
    let expires_at_ms = next()?.parse().ok()?;
    let admitted_from_ms = match next()? {
        "-" => None,
        a => Some(a.parse().ok()?),
    };
    // Absent in facts of a build before issue 11: unknown. (Fields after
    // it, from a later build, are ignored as this build's are by older
    // ones.)
    let epoch = match next() {
        None => None,
        Some(e) => Some(e.parse().ok()?),
    };
    Some(ChainFacts {
        ticket_id,
        sequence,
        joined_at_ms,
        expires_at_ms,
        admitted_from_ms,
        epoch,
    })
}

fn parse_binding(hex: &str) -> Option<Binding> {
    parse_ticket_id(hex).map(|t| Binding(t.0))
}

impl RoomState for RedisRoomState {
    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        let (inner, queue, join, rule) = (self.inner.clone(), queue.to_owned(), *join, *rule);
        async move { inner.join(&queue, join, rule).await }
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        let (inner, queue, beat, rule) = (self.inner.clone(), queue.to_owned(), *beat, *rule);
        async move { inner.beat(&queue, beat, rule).await }
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (inner, queue, issued) = (self.inner.clone(), queue.to_owned(), *issued);
        async move {
            inner
                .record(&queue, issued.binding, issued.chain, issued.live_until_ms)
                .await
        }
    }

    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (inner, queue, binding) = (self.inner.clone(), queue.to_owned(), *binding);
        async move { inner.leave(&queue, binding).await }
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let (inner, queue) = (self.inner.clone(), queue.to_owned());
        async move { inner.sweep(&queue, now_ms).await }
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        let (inner, queue) = (self.inner.clone(), queue.to_owned());
        async move { inner.stats(&queue, now_ms).await }
    }

    fn share_amnesty(&self, amnesty: Arc<Amnesty>) {
        // Built once per room: a second room on this state keeps the first's.
        let _ = self.inner.amnesty.set(amnesty);
    }

    fn write_controls(
        &self,
        queue: &str,
        now_ms: i64,
        write: &ControlWrite,
    ) -> impl Future<Output = Result<Option<ControlSnapshot>, ControlError>> + Send {
        let (inner, queue, write) = (self.inner.clone(), queue.to_owned(), write.clone());
        async move { inner.write_controls(&queue, now_ms, &write).await.map(Some) }
    }

    fn shared_controls(&self, queue: &str, seen: u64) -> Option<(u64, ControlSnapshot)> {
        // Every join and heartbeat asks: nothing new anywhere is one load.
        if self.inner.shared_no.load(Ordering::Relaxed) == seen {
            return None;
        }
        let map = lock(&self.inner.queues);
        let local = map.get(queue)?;
        match &local.shared {
            Some(s) if local.shared_no != seen => Some((local.shared_no, s.clone())),
            _ => None,
        }
    }

    fn refresh_controls(
        &self,
        queue: &str,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (inner, queue, rule) = (self.inner.clone(), queue.to_owned(), *rule);
        async move {
            inner.maybe_tick(&queue, &rule, false).await?;
            let recovering = lock(&inner.queues)
                .get(&queue)
                .is_some_and(|l| l.recovering(rule.now_ms));
            if recovering {
                // Just back from an outage: an amnesty declared meanwhile
                // may still be on its way.
                return Err(StoreError::Backend(
                    "the store answers again since less than 3 s".into(),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{format_facts, parse_facts, ChainFacts, TicketId};

    /// The facts' epoch round-trips; facts written before it (four
    /// fields) read back with an unknown epoch, and a build before it
    /// reads the first four fields of the new format unchanged.
    #[test]
    fn facts_keep_their_epoch_and_old_facts_read_as_unknown() {
        let id = TicketId([4; 16]);
        for admitted_from_ms in [None, Some(1_700_000_000_123)] {
            for epoch in [None, Some(0), Some(7), Some(u32::MAX)] {
                let f = ChainFacts {
                    ticket_id: id,
                    sequence: 9,
                    joined_at_ms: -3,
                    expires_at_ms: 1_700_000_600_000,
                    admitted_from_ms,
                    epoch,
                };
                let text = format_facts(&f);
                assert_eq!(parse_facts(id, &text), Some(f), "{text}");
                let old = text.splitn(5, ':').take(4).collect::<Vec<_>>().join(":");
                assert_eq!(
                    parse_facts(id, &old),
                    Some(ChainFacts { epoch: None, ..f }),
                    "{old}"
                );
            }
        }
        assert_eq!(
            format_facts(&parse_facts(id, "2:5:6:-").unwrap()),
            "2:5:6:-"
        );
        assert_eq!(
            parse_facts(id, "2:5:6:-:42").and_then(|f| f.epoch),
            Some(42)
        );
        // A later build's extra field is ignored, a garbled epoch is not.
        assert_eq!(
            parse_facts(id, "2:5:6:-:42:x").and_then(|f| f.epoch),
            Some(42)
        );
        assert_eq!(parse_facts(id, "2:5:6:-:x"), None);
        assert_eq!(parse_facts(id, "2:5:6:-:-1"), None);
    }
}
