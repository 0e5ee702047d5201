//! The Redis replay store (feature `redis`): replay state shared by every
//! instance behind a load balancer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};

use super::{
    retention_ms, Advance, AdvanceRequest, ReplayCheck, ReplayStore, ReplayVerdict, SettleHold,
    Settlement,
};
use crate::clock::duration_to_ms;
use crate::error::{ConfigError, StoreError};
use crate::rejection::ReplayReason;
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
/// Commit or release of a hold.
const SETTLE: &str = include_str!("redis_settle.lua");

/// Capacity shards: each chain's records count in the shard of its ticket
/// id's first byte, each shard holding its share of the capacities.
const CAP_SHARDS: usize = 16;

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    /// Per shard: waiting, admitted.
    shard_capacity: [u64; 2],
    timeout: Duration,
    tolerance_ms: i64,
    epoch: AtomicU32,
    check: Script,
    advance: Script,
    settle: Script,
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
///   `redis_*.lua` files next to this one). A single-use hold is taken in
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
///   never admitted a second time. The epoch key is outside the tickets'
///   hash tags, so the scripts need a single primary (with replicas or
///   Sentinel); Redis Cluster would need a per-node epoch and is not
///   supported yet.
///
/// What Redis cannot promise: replication is asynchronous, so a failover
/// can lose a record written just before it (a consumed ticket could be
/// accepted once more; `WAIT` would narrow but not close this). `PXAT`
/// runs on Redis's clock, not the instances'; the tolerance must cover the
/// difference between the clocks. An instance whose clock is further
/// behind fails closed: a ticket whose retention has ended by Redis's
/// clock is refused (`replayed`, reason `StateReset`), never checked
/// against a record that may be gone. Run Redis with `maxmemory-policy
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
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RedisReplayStore`]. `Debug` does not print the URL.
#[must_use]
pub struct RedisReplayStoreBuilder {
    url: String,
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
    /// must cover the difference between Redis's clock and the instances'.
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
            conn,
            shard_capacity: [
                per_shard(self.waiting_capacity),
                per_shard(self.admitted_capacity),
            ],
            epoch: AtomicU32::new(0),
            timeout: self.timeout,
            tolerance_ms: duration_to_ms(self.tolerance),
            check: Script::new(&format!("{PRELUDE}{CHECK_BODY}")),
            advance: Script::new(&format!("{PRELUDE}{ADVANCE_BODY}")),
            settle: Script::new(SETTLE),
            prefix: self.prefix,
        };
        let candidate = random_epoch();
        let mut conn = inner.conn.clone();
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
        Ok(RedisReplayStore {
            inner: Arc::new(inner),
        })
    }
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
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    fn chain_key(&self, id: &TicketId) -> String {
        format!("{}:{{{id}}}:c", self.prefix)
    }

    fn use_key(&self, id: &TicketId, scope: &ScopeId) -> String {
        format!("{}:{{{id}}}:u:{scope}", self.prefix)
    }

    /// The capacity shard of a chain: a hash tag of its own, so that on a
    /// Cluster the shards spread over the primaries.
    fn cap_key(&self, id: &TicketId) -> String {
        let shard = usize::from(id.0[0]) % CAP_SHARDS;
        format!("{p}:{{{p}:cap:{shard}}}", p = self.prefix)
    }

    /// Learns a new epoch from a script's `{4, epoch}` answer.
    fn reset_to(&self, epoch: &::redis::Value) {
        if let Ok(e) = ::redis::from_redis_value::<u32>(epoch) {
            self.epoch.store(e, Ordering::Relaxed);
        }
    }
}

impl RedisReplayStore {
    /// Settings for a store at `url` (`redis://host:port/db`).
    pub fn builder(url: &str) -> RedisReplayStoreBuilder {
        RedisReplayStoreBuilder {
            url: url.to_owned(),
            prefix: "queuegate".to_owned(),
            timeout: Duration::from_millis(500),
            tolerance: Duration::from_secs(60),
            waiting_capacity: 8_000_000,
            admitted_capacity: 1_000_000,
            allow_evicting_policy: false,
        }
    }

    /// A clone of the store's connection, for the room state kept in the
    /// same Redis. Not public: it would tie the API to the `redis` crate's
    /// version and let callers write under the store's keys.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
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
    pub async fn clear(&self) -> Result<(), StoreError> {
        clear_prefix(&self.inner.conn, &self.inner.prefix, self.inner.timeout).await
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

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        let inner = self.inner.clone();
        let c = *c;
        Box::pin(async move {
            let mut invocation = inner.check.prepare_invoke();
            let hold = c.hold.unwrap_or(super::Hold {
                token: 0,
                until_ms: 0,
            });
            invocation
                .key(inner.epoch_key())
                .key(inner.chain_key(&c.ticket_id))
                .key(inner.use_key(&c.ticket_id, &c.scope))
                .key(inner.cap_key(&c.ticket_id))
                .arg(inner.epoch.load(Ordering::Relaxed))
                .arg(random_epoch())
                .arg(c.sequence)
                .arg(c.now_ms)
                .arg(c.grace_ms)
                .arg(c.chain_retention_ms(inner.tolerance_ms))
                .arg(u8::from(c.hold.is_some()))
                .arg(u8::from(c.same_client))
                .arg(hold.token)
                .arg(hold.until_ms)
                .arg(c.expires_at_ms.saturating_add(inner.tolerance_ms))
                .arg(kind_arg(c.kind))
                .arg(inner.shard_capacity[0])
                .arg(inner.shard_capacity[1]);
            let mut conn = inner.conn.clone();
            let reply: Vec<::redis::Value> =
                timeout(inner.timeout, invocation.invoke_async(&mut conn))
                    .await?
                    .map_err(backend)?;
            let code: i64 = code_of(&reply)?;
            Ok(match code {
                0 => ReplayVerdict::Fresh,
                1 => ReplayVerdict::Replayed(ReplayReason::StaleSequence),
                2 => ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient),
                3 => ReplayVerdict::Replayed(ReplayReason::ConsumedByOtherClient),
                4 => {
                    inner.reset_to(&reply[1]);
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
        })
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        let inner = self.inner.clone();
        let a = *a;
        Box::pin(async move {
            let mut invocation = inner.advance.prepare_invoke();
            invocation
                .key(inner.epoch_key())
                .key(inner.chain_key(&a.ticket_id))
                .key(inner.cap_key(&a.ticket_id))
                .arg(inner.epoch.load(Ordering::Relaxed))
                .arg(random_epoch())
                .arg(a.sequence)
                .arg(a.now_ms)
                .arg(a.grace_ms)
                .arg(retention_ms(
                    a.live_until_ms,
                    a.expires_at_ms,
                    inner.tolerance_ms,
                ))
                .arg(kind_arg(a.kind))
                .arg(inner.shard_capacity[0])
                .arg(inner.shard_capacity[1]);
            let mut conn = inner.conn.clone();
            let reply: Vec<::redis::Value> =
                timeout(inner.timeout, invocation.invoke_async(&mut conn))
                    .await?
                    .map_err(backend)?;
            let code = code_of(&reply)?;
            let seq_and_time = || -> Result<(u32, i64), StoreError> {
                match reply.as_slice() {
                    [_, s, t] => Ok((
                        ::redis::from_redis_value(s).map_err(backend)?,
                        ::redis::from_redis_value(t).map_err(backend)?,
                    )),
                    _ => Err(StoreError::Backend("redis script answer".into())),
                }
            };
            Ok(match code {
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
                1 => Advance::Stale,
                4 => {
                    // Redis lost its state: the chain cannot be trusted to
                    // continue. The presented ticket's epoch is gone, so the
                    // issuer refuses it as `replayed`; the client rejoins.
                    inner.reset_to(&reply[1]);
                    Advance::Stale
                }
                5 => Advance::Stale,
                7 => return Err(StoreError::Capacity),
                _ => return Err(StoreError::Backend("redis script answer".into())),
            })
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

impl RedisReplayStore {
    async fn settle_now(inner: Arc<Inner>, s: SettleHold) -> Result<(), StoreError> {
        let mut invocation = inner.settle.prepare_invoke();
        invocation
            .key(inner.use_key(&s.ticket_id, &s.scope))
            .key(inner.cap_key(&s.ticket_id))
            .arg(match s.settlement {
                Settlement::Commit => "c",
                Settlement::Release => "r",
            })
            .arg(s.hold.token)
            .arg(s.expires_at_ms.saturating_add(inner.tolerance_ms))
            .arg(kind_arg(s.kind));
        let mut conn = inner.conn.clone();
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
