//! The Redis replay store (feature `redis`): replay state shared by every
//! instance behind a load balancer.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};

use super::redis_clock::RedisClock;
use super::{
    retention_ms, Advance, AdvanceRequest, ReplayCheck, ReplayStore, ReplayVerdict, SettleHold,
    Settlement,
};
use crate::clock::duration_to_ms;
use crate::error::{ConfigError, StoreError};
use crate::rejection::ReplayReason;
use crate::room::redis::conn::{ClusterConn, Conn, Lua};
use crate::ticket::{ScopeId, TicketId, TicketKind};

/// A boxed, sendable store future. The Redis store's futures are boxed: a
/// network round trip costs far more than one allocation, and it keeps the
/// store's types nameable.
pub type BoxStoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The prelude of the check and advance scripts: the epoch check, the
/// clock check, and reading the chain record.
const PRELUDE: &str = include_str!("redis_prelude.lua");
/// `ChainState::present` and the single-use hold.
const CHECK_BODY: &str = include_str!("redis_check.lua");
/// `ChainState::advance`.
const ADVANCE_BODY: &str = include_str!("redis_advance.lua");
/// The common heartbeat's advance, run before the prelude: a kept kind
/// needs no capacity check, so no clock read and no sweep.
const ADVANCE_FAST: &str = include_str!("redis_advance_fast.lua");
/// Commit or release of a hold.
const SETTLE: &str = include_str!("redis_settle.lua");
/// The Cluster shard's fence, run before the prelude on a Cluster.
const FENCE: &str = include_str!("redis_fence.lua");
/// Before the prelude on a single Redis: the capacity key is the last.
const SINGLE_HEAD: &str = "local CAPIDX = #KEYS\n";

/// Shards of the Cluster layout: every record of a ticket lives under its
/// shard's hash tag, beside the shard's epoch, owner and capacity counts,
/// so each script touches one slot. Shard `s` is tagged so that its slot
/// lies in `[64 s, 64 s + 64)`: the shards spread evenly over the slot
/// space, and each primary holds a share of them equal to its share of
/// the slots.
pub(crate) const CLUSTER_SHARDS: usize = 256;

/// Capacity shards: each chain's records count in the shard of its ticket
/// id's first byte, each shard holding its share of the capacities.
const CAP_SHARDS: usize = 16;

/// The Cluster parts of a store.
struct Shards {
    conn: Conn,
    /// Per shard: its hash tag (without braces).
    tags: Vec<String>,
    /// Per shard: the epoch this instance last saw.
    epochs: Vec<AtomicU32>,
    /// How long a hold take or commit waits for a replica's acknowledgement.
    wait_ms: u64,
    /// Commits a replica did not acknowledge in time (they stand on the
    /// primary; see the type's documentation).
    unconfirmed_commits: AtomicU64,
    check: Lua,
    advance: Lua,
    settle: Lua,
}

struct Inner {
    /// The single Redis's connection (`None` on a Cluster).
    single: Option<ConnectionManager>,
    cluster: Option<Shards>,
    prefix: String,
    /// Per shard: waiting, admitted.
    shard_capacity: [u64; 2],
    timeout: Duration,
    tolerance_ms: i64,
    epoch: AtomicU32,
    check: Script,
    advance: Script,
    settle: Script,
    /// Redis's clock against the instances' (single Redis; `None` on a
    /// Cluster, where keep-untils are sent as they are).
    clock: Option<RedisClock>,
}

/// The replay store in Redis (feature `redis`), for several instances
/// sharing replay state.
///
/// - One multiplexed, reconnecting connection ([`ConnectionManager`]);
///   every call is one round trip with a timeout (default 500 ms). A
///   failure or timeout is a [`StoreError`]: the verifier answers
///   `store_unavailable` (fail closed) unless the policy monitors it.
/// - The sequence rule runs as one Lua script per call, a line-by-line
///   mirror of [`ChainState`](super::ChainState) (the scripts are the
///   `redis_*.lua` files next to this one). An advance first tries the
///   common heartbeat's short path (`redis_advance_fast.lua`: the record
///   is there and its kind does not change, so only its capacity bucket
///   moves), which decides exactly as the full script would; the README
///   ("A heartbeat in Redis") says why it is safe. A single-use hold is taken in
///   the same script, so a stale clone cannot take a chain; a settlement
///   is one more script, started on a spawned task so that a dropped
///   response future cannot cancel a commit.
/// - Keys: `<prefix>:{<ticket id>}:c` (chain) and
///   `<prefix>:{<ticket id>}:u:<scope>` (consumption); the `{…}` hash tag
///   puts one ticket's keys in one Cluster slot. Records expire with
///   `PXAT`: a chain's at its latest liveness deadline (bounded by the
///   expiry), a hold or consumption at the ticket's expiry, plus the
///   tolerance (default 60 s).
/// - Epoch: `<prefix>:epoch` holds a random number, created with `SET NX`
///   by the first instance. Every script checks it first: if Redis lost its
///   data (a restart without persistence, a failover to an empty replica,
///   a flush), the key is gone, the script starts a new epoch, and every
///   ticket minted before is refused (`replayed`, reason `StateReset`),
///   never admitted a second time.
/// - On a Redis Cluster ([`cluster_builder`](Self::cluster_builder)) the
///   records live in 256 shards, each under its own hash tag beside the
///   shard's epoch, owner and capacity counts (`<prefix>:{<shard tag>}:…`),
///   so each script touches one slot. Every script first compares the
///   shard's owner with `CLUSTER MYID`: a primary other than the one that
///   last served the shard (a promoted replica, which may lack records) or
///   one that came back empty starts a new shard epoch, and every ticket of
///   the shard minted before is refused (`replayed`, `StateReset`). Tickets
///   carry their shard's epoch ([`ReplayStore::epoch_of`]). A single-use
///   hold is confirmed by a replica (`WAIT 1`, see
///   [`replica_wait`](RedisReplayStoreBuilder::replica_wait)) before the
///   handler runs, or refused.
///
/// What Redis cannot promise: replication is asynchronous, so on a single
/// Redis a failover can lose a record written just before it (a consumed
/// ticket could be accepted once more). On a Cluster the fence refuses
/// every ticket of a failed-over shard instead; the README says what
/// window remains. `PXAT`
/// runs on Redis's clock, not the instances', and a ticket whose retention
/// has ended by Redis's clock is refused (`replayed`, reason `StateReset`),
/// never checked against a record that may be gone: one clock, Redis's,
/// decides every record's life. On a single Redis the store measures
/// Redis's clock (three `TIME` round trips at connect and every 5 s, the
/// shortest read at its midpoint: known to within half a round trip) and
/// adds the instances' common offset to every keep-until it sends
/// ([`clock_shift_ms`](Self::clock_shift_ms)), so that a Redis an hour
/// ahead or behind changes nothing for honest people. The shift is the
/// same on every instance (the offset closest to zero among those the
/// live instances publish under `<prefix>:clock`; zero within a quarter of
/// the tolerance, where behaviour is as before), so one instance whose own
/// clock is wrong is not followed, and still fails closed. A rising shift
/// (Redis jumped ahead) keeps the old one as a floor until every record
/// written under it has expired: a ticket whose record may be gone is
/// still refused. On a Cluster keep-untils are sent unshifted. The
/// tolerance must cover the difference between the instances' clocks
/// (and Redis's, below that threshold). Run Redis with `maxmemory-policy
/// noeviction`: an evicting policy would drop live records and let
/// replays through, while `noeviction` turns a full Redis into errors,
/// which fail closed: [`connect`](RedisReplayStoreBuilder::connect) reads
/// the policy from `INFO memory` and refuses any other unless the host opts
/// in.
///
/// Capacity: separate waiting and admitted caps, as in the memory store,
/// counted without any global index: 16 shard hashes (each under its own
/// hash tag) hold counts per kind and per 5-second bucket of retention end,
/// and a bucket is subtracted once it has passed on Redis's clock. A chain
/// abandoned while waiting stops counting one liveness window (plus the
/// tolerance, plus at most one bucket) after its last heartbeat.
#[derive(Clone)]
pub struct RedisReplayStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("tolerance_ms", &self.inner.tolerance_ms)
            .field("epoch", &self.epoch())
            .field("clock_shift_ms", &self.clock_shift_ms())
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisReplayStore`]. `Debug` does not print the URL.
#[must_use]
pub struct RedisReplayStoreBuilder {
    url: String,
    /// Cluster seed nodes (empty: a single Redis at `url`).
    seeds: Vec<String>,
    replica_wait: Duration,
    prefix: String,
    timeout: Duration,
    tolerance: Duration,
    waiting_capacity: u64,
    admitted_capacity: u64,
    allow_evicting_policy: bool,
}

impl fmt::Debug for RedisReplayStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayStoreBuilder")
            .field("url", &"REDACTED")
            .field("cluster", &!self.seeds.is_empty())
            .field("replica_wait", &self.replica_wait)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("tolerance", &self.tolerance)
            .field("waiting_capacity", &self.waiting_capacity)
            .field("admitted_capacity", &self.admitted_capacity)
            .field("allow_evicting_policy", &self.allow_evicting_policy)
            .finish()
    }
}

impl RedisReplayStoreBuilder {
    /// The key prefix (default `queuegate`): instances that share replay
    /// state use the same prefix. Must not contain `{` or `}`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The timeout of each call, connecting included (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a record outlives its ticket's expiry (default 60 s). It
    /// must cover the differences between the instances' clocks, and
    /// between Redis's and theirs up to a quarter of it: beyond that
    /// quarter, on a single Redis, the store measures Redis's offset and
    /// sends keep-untils on Redis's clock (see [`RedisReplayStore`]), so a
    /// Redis far off is not an outage. The reading's error (half a `TIME`
    /// round trip, plus 250 ms of drift) counts against it too.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The most waiting-chain records held at once (default 8 million).
    /// Counted per shard (16 shards by ticket id, each holding a 16th,
    /// rounded up): a full shard refuses new records with
    /// [`StoreError::Capacity`] (`store_unavailable`, failing closed).
    pub fn waiting_capacity(mut self, records: u64) -> Self {
        self.waiting_capacity = records;
        self
    }

    /// The most admitted-chain, hold and consumption records held at once
    /// (default 1 million), apart from the waiting ones so that a join
    /// flood never locks admitted people out of booking.
    pub fn admitted_capacity(mut self, records: u64) -> Self {
        self.admitted_capacity = records;
        self
    }

    /// Lets the store start on a Redis whose `maxmemory-policy` evicts
    /// keys (default: refused). Under memory pressure such a Redis drops
    /// live records, and an evicted consumption lets a consumed ticket book
    /// again; `noeviction` turns a full Redis into errors instead, which
    /// fail closed. Opt in only for a Redis that never reaches `maxmemory`.
    pub fn allow_evicting_policy(mut self, allow: bool) -> Self {
        self.allow_evicting_policy = allow;
        self
    }

    /// On a Cluster: how long taking a single-use hold (and committing it)
    /// waits for a replica to acknowledge the write (`WAIT 1 <ms>`,
    /// default 200 ms). A hold no replica confirmed in time is released
    /// and the request refused (`store_unavailable`) before the handler
    /// runs. Ignored on a single Redis.
    pub fn replica_wait(mut self, wait: Duration) -> Self {
        self.replica_wait = wait;
        self
    }

    /// Connects, checks Redis's `maxmemory_policy` (read from `INFO
    /// memory`, since managed Redis refuses `CONFIG GET`), and reads (or
    /// creates) the epoch. Fails if the settings are invalid, Redis evicts
    /// keys (unless [allowed](Self::allow_evicting_policy)), or Redis does
    /// not answer within the timeout.
    pub async fn connect(self) -> Result<RedisReplayStore, StoreError> {
        if self.waiting_capacity == 0 || self.admitted_capacity == 0 {
            return Err(StoreError::Backend(
                ConfigError::Invalid {
                    setting: "capacity",
                    reason: "a capacity of zero refuses every ticket",
                }
                .to_string(),
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(
                ConfigError::Invalid {
                    setting: "prefix",
                    reason: "must be non-empty, without `{` or `}` (they delimit hash tags)",
                }
                .to_string(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(StoreError::Backend(
                ConfigError::Invalid {
                    setting: "timeout",
                    reason: "must be positive",
                }
                .to_string(),
            ));
        }
        if !self.seeds.is_empty() {
            return self.connect_cluster().await;
        }
        let client = ::redis::Client::open(self.url.as_str()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(200);
        let conn = timeout(
            self.timeout * 4,
            ConnectionManager::new_with_config(client, config),
        )
        .await?
        .map_err(backend)?;
        if !self.allow_evicting_policy {
            let mut c = conn.clone();
            let info: String = timeout(
                self.timeout,
                ::redis::cmd("INFO").arg("memory").query_async(&mut c),
            )
            .await?
            .map_err(backend)?;
            if evicts(&info) {
                return Err(StoreError::Backend(
                    ConfigError::Invalid {
                        setting: "maxmemory-policy",
                        reason: "Redis evicts keys under memory pressure, and an evicted record could let a consumed ticket back in: set maxmemory-policy noeviction, or opt in with allow_evicting_policy(true)",
                    }
                    .to_string(),
                ));
            }
        }
        let per_shard = |cap: u64| cap.div_ceil(CAP_SHARDS as u64);
        let inner = Inner {
            single: Some(conn),
            cluster: None,
            shard_capacity: [
                per_shard(self.waiting_capacity),
                per_shard(self.admitted_capacity),
            ],
            epoch: AtomicU32::new(0),
            timeout: self.timeout,
            tolerance_ms: duration_to_ms(self.tolerance),
            check: Script::new(&format!("{SINGLE_HEAD}{PRELUDE}{CHECK_BODY}")),
            advance: Script::new(&format!(
                "{SINGLE_HEAD}{ADVANCE_FAST}{PRELUDE}{ADVANCE_BODY}"
            )),
            settle: Script::new(SETTLE),
            clock: Some(RedisClock::new(duration_to_ms(self.tolerance))),
            prefix: self.prefix,
        };
        let candidate = random_epoch();
        let mut conn = inner.single()?;
        let previous: Option<u32> = timeout(
            inner.timeout,
            ::redis::cmd("SET")
                .arg(inner.epoch_key())
                .arg(candidate)
                .arg("NX")
                .arg("GET")
                .query_async(&mut conn),
        )
        .await?
        .map_err(backend)?;
        inner
            .epoch
            .store(previous.unwrap_or(candidate), Ordering::Relaxed);
        let inner = Arc::new(inner);
        RedisClock::start(
            Arc::downgrade(&inner),
            Inner::clock_of,
            conn,
            inner.clock_key(),
            inner.timeout,
        )
        .await;
        Ok(RedisReplayStore { inner })
    }
}

impl RedisReplayStoreBuilder {
    async fn connect_cluster(self) -> Result<RedisReplayStore, StoreError> {
        let conn = Conn::Cluster(ClusterConn::connect(&self.seeds, self.timeout).await?);
        if !self.allow_evicting_policy {
            let mut info = ::redis::cmd("INFO");
            info.arg("memory");
            let v = conn.query(&info, self.timeout).await?;
            // Asked of every node: a text per node.
            let texts: Vec<String> = match ::redis::from_redis_value::<String>(&v) {
                Ok(t) => vec![t],
                Err(_) => ::redis::from_redis_value::<HashMap<String, String>>(&v)
                    .map_err(backend)?
                    .into_values()
                    .collect(),
            };
            if texts.is_empty() || texts.iter().any(|t| evicts(t)) {
                return Err(StoreError::Backend(
                    ConfigError::Invalid {
                        setting: "maxmemory-policy",
                        reason: "a node of the Cluster evicts keys under memory pressure, and an evicted record could let a consumed ticket back in: set maxmemory-policy noeviction, or opt in with allow_evicting_policy(true)",
                    }
                    .to_string(),
                ));
            }
        }
        let per_shard = |cap: u64| cap.div_ceil(CLUSTER_SHARDS as u64);
        let shards = Shards {
            conn,
            tags: (0..CLUSTER_SHARDS)
                .map(|s| shard_tag(&self.prefix, s))
                .collect(),
            epochs: (0..CLUSTER_SHARDS).map(|_| AtomicU32::new(0)).collect(),
            wait_ms: u64::try_from(self.replica_wait.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            unconfirmed_commits: AtomicU64::new(0),
            check: Lua::new(format!("{FENCE}{PRELUDE}{CHECK_BODY}")),
            advance: Lua::new(format!("{FENCE}{ADVANCE_FAST}{PRELUDE}{ADVANCE_BODY}")),
            settle: Lua::new(SETTLE.to_owned()),
        };
        let inner = Inner {
            single: None,
            cluster: Some(shards),
            shard_capacity: [
                per_shard(self.waiting_capacity),
                per_shard(self.admitted_capacity),
            ],
            epoch: AtomicU32::new(0),
            timeout: self.timeout,
            tolerance_ms: duration_to_ms(self.tolerance),
            check: Script::new(""),
            advance: Script::new(""),
            settle: Script::new(""),
            clock: None,
            prefix: self.prefix,
        };
        // Every shard's epoch, fencing the shards whose primary changed.
        let init = Lua::new(format!("{FENCE}return {{0, redis.call('GET', KEYS[1])}}"));
        let sh = inner.cluster.as_ref().expect("just built");
        let results = futures_util::future::join_all((0..CLUSTER_SHARDS).map(|s| {
            let keys = [inner.shard_key(s, "epoch"), inner.shard_key(s, "owner")];
            let args = [String::new(), random_epoch().to_string()];
            let (init, sh) = (&init, sh);
            async move {
                let v = sh.conn.eval(init, &keys, &args, inner.timeout).await?;
                let reply: Vec<::redis::Value> = ::redis::from_redis_value(&v).map_err(backend)?;
                match reply.get(1).map(::redis::from_redis_value::<u32>) {
                    Some(Ok(e)) => Ok(e),
                    _ => Err(StoreError::Backend("redis script answer".into())),
                }
            }
        }))
        .await;
        for (s, r) in results.into_iter().enumerate() {
            sh.epochs[s].store(r?, Ordering::Relaxed);
        }
        inner
            .epoch
            .store(sh.epochs[0].load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(RedisReplayStore {
            inner: Arc::new(inner),
        })
    }
}

/// The Cluster slot of a hash tag (CRC16/XMODEM modulo 16384).
fn slot_of(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The hash tag of shard `s`: `<prefix>:r<s>.<n>` with the first `n`
/// whose slot lies in `[64 s, 64 s + 64)` (a few hundred tries at most).
fn shard_tag(prefix: &str, s: usize) -> String {
    let span = 16384 / CLUSTER_SHARDS;
    (0u64..)
        .map(|n| format!("{prefix}:r{s}.{n}"))
        .find(|t| usize::from(slot_of(t.as_bytes())) / span == s)
        .expect("some suffix lands in every slot range")
}

/// Whether `INFO memory` text names an evicting `maxmemory_policy`. A
/// Redis that does not report one (an old or unusual server) is taken as
/// evicting: the check fails closed.
fn evicts(info: &str) -> bool {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("maxmemory_policy:"))
        .map_or(true, |policy| policy.trim() != "noeviction")
}

/// A ticket kind as the scripts name it.
fn kind_arg(kind: TicketKind) -> &'static str {
    match kind {
        TicketKind::Waiting => "w",
        TicketKind::Admitted => "a",
    }
}

fn random_epoch() -> u32 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    u32::from_be_bytes(b)
}

fn backend(e: RedisError) -> StoreError {
    // The error's kind and category only: a message could quote the URL.
    StoreError::Backend(format!("redis {:?} error", e.kind()))
}

async fn timeout<T>(d: Duration, f: impl Future<Output = T>) -> Result<T, StoreError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| StoreError::Timeout)
}

impl Inner {
    fn single(&self) -> Result<ConnectionManager, StoreError> {
        self.single
            .clone()
            .ok_or_else(|| StoreError::Backend("no single Redis connection".into()))
    }

    /// The Cluster shard of a chain.
    fn shard_of(id: &TicketId) -> usize {
        usize::from(id.0[0]) % CLUSTER_SHARDS
    }

    /// A key of Cluster shard `s`: `<prefix>:{<tag>}:<name>`.
    fn shard_key(&self, s: usize, name: &str) -> String {
        let tag = self.cluster.as_ref().map_or("", |c| c.tags[s].as_str());
        format!("{}:{{{tag}}}:{name}", self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The hash where each instance publishes its reading of Redis's
    /// clock (single Redis).
    fn clock_key(&self) -> String {
        format!("{}:clock", self.prefix)
    }

    fn clock_of(&self) -> &RedisClock {
        self.clock
            .as_ref()
            .expect("a single Redis store has a clock")
    }

    /// A keep-until on the instances' clock (for a request at `now_ms`),
    /// as sent to Redis: see `redis_clock`. Unchanged on a Cluster.
    fn keep_r(&self, keep_ms: i64, now_ms: i64) -> i64 {
        match &self.clock {
            Some(c) => c.to_redis(keep_ms, now_ms),
            None => keep_ms,
        }
    }

    fn chain_key(&self, id: &TicketId) -> String {
        if self.cluster.is_some() {
            return self.shard_key(Self::shard_of(id), &format!("{id}:c"));
        }
        format!("{}:{{{id}}}:c", self.prefix)
    }

    fn use_key(&self, id: &TicketId, scope: &ScopeId) -> String {
        if self.cluster.is_some() {
            return self.shard_key(Self::shard_of(id), &format!("{id}:u:{scope}"));
        }
        format!("{}:{{{id}}}:u:{scope}", self.prefix)
    }

    /// The capacity shard of a chain: a hash tag of its own, so that on a
    /// Cluster the shards spread over the primaries.
    fn cap_key(&self, id: &TicketId) -> String {
        if self.cluster.is_some() {
            return self.shard_key(Self::shard_of(id), "cap");
        }
        let shard = usize::from(id.0[0]) % CAP_SHARDS;
        format!("{p}:{{{p}:cap:{shard}}}", p = self.prefix)
    }

    /// Learns a new epoch from a script's `{4, epoch}` answer about the
    /// chain `id`.
    fn reset_to(&self, id: &TicketId, epoch: &::redis::Value) {
        if let Ok(e) = ::redis::from_redis_value::<u32>(epoch) {
            match &self.cluster {
                Some(c) => c.epochs[Self::shard_of(id)].store(e, Ordering::Relaxed),
                None => self.epoch.store(e, Ordering::Relaxed),
            }
        }
    }

    /// The keys of a Cluster check, advance or init: the shard's epoch,
    /// `records`, the shard's capacity counts and owner.
    fn cluster_keys(&self, id: &TicketId, records: &[String]) -> Vec<String> {
        let s = Self::shard_of(id);
        let mut keys = vec![self.shard_key(s, "epoch")];
        keys.extend_from_slice(records);
        keys.push(self.shard_key(s, "cap"));
        keys.push(self.shard_key(s, "owner"));
        keys
    }
}

impl RedisReplayStore {
    /// Settings for a store at `url` (`redis://host:port/db`).
    pub fn builder(url: &str) -> RedisReplayStoreBuilder {
        RedisReplayStoreBuilder {
            url: url.to_owned(),
            seeds: Vec::new(),
            replica_wait: Duration::from_millis(200),
            prefix: "queuegate".to_owned(),
            timeout: Duration::from_millis(500),
            tolerance: Duration::from_secs(60),
            waiting_capacity: 8_000_000,
            admitted_capacity: 1_000_000,
            allow_evicting_policy: false,
        }
    }

    /// Settings for a store on the Redis Cluster reached through `seeds`
    /// (some of its nodes' URLs, `redis://127.0.0.1:7000`).
    ///
    /// The Cluster layout differs from the single Redis's: see the type's
    /// documentation (shards, per-shard fence, `WAIT` on single use).
    pub fn cluster_builder(seeds: &[&str]) -> RedisReplayStoreBuilder {
        let mut b = Self::builder("");
        b.seeds = seeds.iter().map(|s| (*s).to_owned()).collect();
        b
    }

    /// Whether this store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// On a Cluster: how many commits no replica acknowledged within the
    /// [replica wait](RedisReplayStoreBuilder::replica_wait) since start
    /// (they stand on the primary; a failover before they reach a replica
    /// fences their shard). Always 0 on a single Redis.
    pub fn unconfirmed_commits(&self) -> u64 {
        self.inner
            .cluster
            .as_ref()
            .map_or(0, |c| c.unconfirmed_commits.load(Ordering::Relaxed))
    }

    /// A clone of the store's connection, for the room state kept in the
    /// same Redis. Not public: it would tie the API to the `redis` crate's
    /// version and let callers write under the store's keys.
    pub(crate) fn connection(&self) -> Conn {
        match (&self.inner.single, &self.inner.cluster) {
            (Some(c), _) => Conn::Single(c.clone()),
            (None, Some(c)) => c.conn.clone(),
            (None, None) => unreachable!("a store has a connection"),
        }
    }

    /// The shift (ms) this store adds to every record's keep-until to put
    /// it on Redis's clock: 0 while Redis's clock agrees with the
    /// instances' (within a quarter of the
    /// [tolerance](RedisReplayStoreBuilder::tolerance)), else Redis's
    /// offset as the instances measured it (see the type's documentation).
    /// Always 0 on a Cluster.
    pub fn clock_shift_ms(&self) -> i64 {
        self.inner.clock.as_ref().map_or(0, RedisClock::shift_ms)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Deletes every key under this store's prefix (the epoch included), by
    /// `SCAN` and `UNLINK`: for tests, benchmarks and deliberate resets.
    /// Every ticket minted before is then refused.
    ///
    /// On a Cluster, the shards' epochs, owners and counts are deleted (so
    /// every ticket minted before is refused), and the records are left to
    /// expire.
    pub async fn clear(&self) -> Result<(), StoreError> {
        if let Some(c) = &self.inner.cluster {
            for s in 0..CLUSTER_SHARDS {
                let mut del = ::redis::cmd("DEL");
                for name in ["epoch", "owner", "cap"] {
                    del.arg(self.inner.shard_key(s, name));
                }
                c.conn.query(&del, self.inner.timeout).await?;
            }
            return Ok(());
        }
        clear_prefix(
            &self.inner.single()?,
            &self.inner.prefix,
            self.inner.timeout,
        )
        .await
    }
}

/// Deletes every key starting with `prefix:`.
pub(crate) async fn clear_prefix(
    conn: &ConnectionManager,
    prefix: &str,
    call_timeout: Duration,
) -> Result<(), StoreError> {
    let mut conn = conn.clone();
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = timeout(
            call_timeout,
            ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn),
        )
        .await?
        .map_err(backend)?;
        if !keys.is_empty() {
            let () = timeout(
                call_timeout,
                ::redis::cmd("UNLINK").arg(&keys).query_async(&mut conn),
            )
            .await?
            .map_err(backend)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl ReplayStore for RedisReplayStore {
    type CheckFuture = BoxStoreFuture<ReplayVerdict>;
    type AdvanceFuture = BoxStoreFuture<Advance>;
    type SettleFuture = BoxStoreFuture<()>;

    fn epoch(&self) -> u32 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    fn epoch_of(&self, ticket_id: &TicketId) -> u32 {
        match &self.inner.cluster {
            Some(c) => c.epochs[Inner::shard_of(ticket_id)].load(Ordering::Relaxed),
            None => self.epoch(),
        }
    }

    /// Always: every script compares the presented ticket's epoch with
    /// the one Redis holds (the shard's on a Cluster), so the verifier
    /// leaves it to them. On one Redis too: after Redis came back empty,
    /// an instance that has not learnt the new epoch yet would otherwise
    /// refuse the new-epoch tickets another instance minted (`state_reset`,
    /// and the room would end an admitted person's chain), and learn
    /// nothing from it, since no script would run.
    fn checks_epoch(&self) -> bool {
        true
    }

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        let inner = self.inner.clone();
        let c = *c;
        Box::pin(async move {
            let hold = c.hold.unwrap_or(super::Hold {
                token: 0,
                until_ms: 0,
            });
            let args = [
                // The ticket's own epoch, compared in the script with its
                // shard's (on a single Redis, the store's one epoch). Not
                // this instance's view: on a single Redis the verifier found
                // the two equal, but another request may have taught the
                // instance a new epoch since (Redis came back empty), and an
                // old ticket sent under the new epoch would be checked
                // against the new, empty records: a booked ticket fresh
                // again.
                c.epoch.to_string(),
                random_epoch().to_string(),
                c.sequence.to_string(),
                c.now_ms.to_string(),
                c.grace_ms.to_string(),
                inner
                    .keep_r(c.chain_retention_ms(inner.tolerance_ms), c.now_ms)
                    .to_string(),
                u8::from(c.hold.is_some()).to_string(),
                u8::from(c.same_client).to_string(),
                hold.token.to_string(),
                hold.until_ms.to_string(),
                inner
                    .keep_r(c.expires_at_ms.saturating_add(inner.tolerance_ms), c.now_ms)
                    .to_string(),
                kind_arg(c.kind).to_owned(),
                inner.shard_capacity[0].to_string(),
                inner.shard_capacity[1].to_string(),
            ];
            let records = [
                inner.chain_key(&c.ticket_id),
                inner.use_key(&c.ticket_id, &c.scope),
            ];
            let Some(sh) = &inner.cluster else {
                let mut invocation = inner.check.prepare_invoke();
                invocation
                    .key(inner.epoch_key())
                    .key(&records[0])
                    .key(&records[1])
                    .key(inner.cap_key(&c.ticket_id));
                for a in &args {
                    invocation.arg(a);
                }
                let mut conn = inner.single()?;
                let reply: Vec<::redis::Value> =
                    timeout(inner.timeout, invocation.invoke_async(&mut conn))
                        .await?
                        .map_err(backend)?;
                return check_verdict(&inner, &c.ticket_id, &reply);
            };
            let keys = inner.cluster_keys(&c.ticket_id, &records);
            let Some(taken) = c.hold else {
                let v = sh.conn.eval(&sh.check, &keys, &args, inner.timeout).await?;
                let reply: Vec<::redis::Value> = ::redis::from_redis_value(&v).map_err(backend)?;
                return check_verdict(&inner, &c.ticket_id, &reply);
            };
            // Single use: the hold must reach a replica before the handler
            // runs, or a failover could bring back a chain already booked.
            let (v, acks) = sh
                .conn
                .eval_wait(&sh.check, &keys, &args, sh.wait_ms, inner.timeout)
                .await?;
            let reply: Vec<::redis::Value> = ::redis::from_redis_value(&v).map_err(backend)?;
            let verdict = check_verdict(&inner, &c.ticket_id, &reply)?;
            if verdict == ReplayVerdict::Fresh && acks < 1 {
                // Unconfirmed: give the hold back (so that a retry is not
                // `in_progress` until it expires) and fail closed.
                let release = SettleHold {
                    scope: c.scope,
                    ticket_id: c.ticket_id,
                    kind: c.kind,
                    hold: taken,
                    settlement: Settlement::Release,
                    expires_at_ms: c.expires_at_ms,
                    now_ms: c.now_ms,
                };
                // Spawned, so that a dropped request still gives it back;
                // awaited, so that a retry finds it given back.
                let _ = tokio::spawn(Self::settle_now(inner.clone(), release)).await;
                return Err(StoreError::Backend(
                    "no Redis replica confirmed the hold in time".into(),
                ));
            }
            Ok(verdict)
        })
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        let inner = self.inner.clone();
        let a = *a;
        Box::pin(async move {
            let retention = inner.keep_r(
                retention_ms(a.live_until_ms, a.expires_at_ms, inner.tolerance_ms),
                a.now_ms,
            );
            let reply: Vec<::redis::Value> = if let Some(sh) = &inner.cluster {
                // Not waited for: a lost advance only lets an older ticket
                // of the chain be presented again, and a failover fences
                // the shard anyway.
                let keys = inner.cluster_keys(&a.ticket_id, &[inner.chain_key(&a.ticket_id)]);
                // The presented ticket's epoch, as in a check: a ticket
                // minted before its shard was fenced is refused even once
                // this instance knows the shard's new epoch.
                let args = [
                    a.epoch.to_string(),
                    random_epoch().to_string(),
                    a.sequence.to_string(),
                    a.now_ms.to_string(),
                    a.grace_ms.to_string(),
                    retention.to_string(),
                    kind_arg(a.kind).to_owned(),
                    inner.shard_capacity[0].to_string(),
                    inner.shard_capacity[1].to_string(),
                ];
                let v = sh
                    .conn
                    .eval(&sh.advance, &keys, &args, inner.timeout)
                    .await?;
                ::redis::from_redis_value(&v).map_err(backend)?
            } else {
                let mut invocation = inner.advance.prepare_invoke();
                invocation
                    .key(inner.epoch_key())
                    .key(inner.chain_key(&a.ticket_id))
                    .key(inner.cap_key(&a.ticket_id))
                    // The presented ticket's epoch, as in a check.
                    .arg(a.epoch)
                    .arg(random_epoch())
                    .arg(a.sequence)
                    .arg(a.now_ms)
                    .arg(a.grace_ms)
                    .arg(retention)
                    .arg(kind_arg(a.kind))
                    .arg(inner.shard_capacity[0])
                    .arg(inner.shard_capacity[1]);
                let mut conn = inner.single()?;
                timeout(inner.timeout, invocation.invoke_async(&mut conn))
                    .await?
                    .map_err(backend)?
            };
            advance_verdict(&inner, &a.ticket_id, &reply)
        })
    }

    /// Runs on a spawned tokio task, so the settlement is sent even if the
    /// returned future is dropped. A commit is retried once on failure: a
    /// lost commit would leave a hold that, once expired, lets the same
    /// client book again.
    fn settle(&self, s: &SettleHold) -> Self::SettleFuture {
        let inner = self.inner.clone();
        let s = *s;
        let task = tokio::spawn(async move {
            let first = Self::settle_now(inner.clone(), s).await;
            match (first, s.settlement) {
                (Err(_), Settlement::Commit) => Self::settle_now(inner, s).await,
                (other, _) => other,
            }
        });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|_| Err(StoreError::Backend("settle task failed".into())))
        })
    }
}

/// The verdict of a check script's answer.
fn check_verdict(
    inner: &Inner,
    id: &TicketId,
    reply: &[::redis::Value],
) -> Result<ReplayVerdict, StoreError> {
    Ok(match code_of(reply)? {
        0 => ReplayVerdict::Fresh,
        1 => ReplayVerdict::Replayed(ReplayReason::StaleSequence),
        2 => ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient),
        3 => ReplayVerdict::Replayed(ReplayReason::ConsumedByOtherClient),
        4 => {
            inner.reset_to(id, &reply[1]);
            ReplayVerdict::Replayed(ReplayReason::StateReset)
        }
        // Past its retention by Redis's clock: its record may be gone.
        5 => ReplayVerdict::Replayed(ReplayReason::StateReset),
        6 => match reply.get(1).map(::redis::from_redis_value::<i64>) {
            Some(Ok(until_ms)) => ReplayVerdict::InProgress { until_ms },
            _ => return Err(StoreError::Backend("redis script answer".into())),
        },
        7 => return Err(StoreError::Capacity),
        _ => return Err(StoreError::Backend("redis script answer".into())),
    })
}

/// The outcome of an advance script's answer.
fn advance_verdict(
    inner: &Inner,
    id: &TicketId,
    reply: &[::redis::Value],
) -> Result<Advance, StoreError> {
    let seq_and_time = || -> Result<(u32, i64), StoreError> {
        match reply {
            [_, s, t] => Ok((
                ::redis::from_redis_value(s).map_err(backend)?,
                ::redis::from_redis_value(t).map_err(backend)?,
            )),
            _ => Err(StoreError::Backend("redis script answer".into())),
        }
    };
    Ok(match code_of(reply)? {
        0 => {
            let (sequence, issued_at_ms) = seq_and_time()?;
            Advance::Next {
                sequence,
                issued_at_ms,
            }
        }
        2 => {
            let (sequence, issued_at_ms) = seq_and_time()?;
            Advance::Retry {
                sequence,
                issued_at_ms,
            }
        }
        // The sequence is behind the chain's record (past the grace), or
        // the last one: the chain moved on, in the current epoch.
        1 => Advance::Stale,
        4 => {
            // The epoch sent is not Redis's: Redis lost its state (the epoch
            // key was gone), or on a Cluster the shard was fenced (now, by
            // this script, or before: the presented ticket's epoch is older
            // than the shard's). The chain cannot be trusted to continue;
            // the issuer refuses it as `replayed` (state reset) and the
            // client rejoins.
            inner.reset_to(id, &reply[1]);
            Advance::Reset
        }
        // The successor's record would already be past its retention by
        // Redis's clock (this instance's clock is far behind it): nothing
        // can be issued, but the epoch is the current one. `Stale`, as the
        // memory store answers for a retention it may already have
        // dropped, and as this answer was labelled before `Reset` existed.
        5 => Advance::Stale,
        7 => return Err(StoreError::Capacity),
        _ => return Err(StoreError::Backend("redis script answer".into())),
    })
}

impl RedisReplayStore {
    async fn settle_now(inner: Arc<Inner>, s: SettleHold) -> Result<(), StoreError> {
        let keys = [
            inner.use_key(&s.ticket_id, &s.scope),
            inner.cap_key(&s.ticket_id),
        ];
        let args = [
            match s.settlement {
                Settlement::Commit => "c",
                Settlement::Release => "r",
            }
            .to_owned(),
            s.hold.token.to_string(),
            inner
                .keep_r(s.expires_at_ms.saturating_add(inner.tolerance_ms), s.now_ms)
                .to_string(),
            kind_arg(s.kind).to_owned(),
        ];
        if let Some(sh) = &inner.cluster {
            if s.settlement == Settlement::Commit {
                let (_, acks) = sh
                    .conn
                    .eval_wait(&sh.settle, &keys, &args, sh.wait_ms, inner.timeout)
                    .await?;
                if acks < 1 {
                    // The booking is done: the commit stands on the
                    // primary; counted, since a failover before it reaches
                    // a replica fences its shard.
                    sh.unconfirmed_commits.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                sh.conn
                    .eval(&sh.settle, &keys, &args, inner.timeout)
                    .await?;
            }
            return Ok(());
        }
        let mut invocation = inner.settle.prepare_invoke();
        invocation.key(&keys[0]).key(&keys[1]);
        for a in &args {
            invocation.arg(a);
        }
        let mut conn = inner.single()?;
        let _: i64 = timeout(inner.timeout, invocation.invoke_async(&mut conn))
            .await?
            .map_err(backend)?;
        Ok(())
    }
}

fn code_of(reply: &[::redis::Value]) -> Result<i64, StoreError> {
    match reply.first() {
        Some(v) => ::redis::from_redis_value(v).map_err(backend),
        None => Err(StoreError::Backend("redis script answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::evicts;

    #[test]
    fn only_noeviction_is_safe() {
        let info = |p: &str| format!("# Memory\r\nused_memory:1\r\nmaxmemory_policy:{p}\r\n");
        assert!(!evicts(&info("noeviction")));
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert!(evicts(&info(p)), "{p}");
        }
        assert!(evicts("# Memory\r\nused_memory:1\r\n"), "unreported");
    }
}
