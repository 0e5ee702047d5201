//! One connection type for a single Redis and a Redis Cluster, each call
//! under a timeout, and the scripts run by hash (`EVALSHA`, `EVAL` when
//! the node does not know the script yet).
//!
//! The Cluster client of the `redis` crate follows `MOVED`/`ASK` and
//! rebuilds its slot map on them, but answers `READONLY` (a write that
//! reached a primary just demoted by a failover) without a retry and
//! refreshes nothing on a timer. So this wrapper opens a new cluster
//! connection (which reads the topology afresh) after such an error, and
//! every [`REFRESH_EVERY`] anyway; the failed call itself fails closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, ErrorKind, Pipeline, RedisError, Value};

use crate::error::StoreError;

/// How often a cluster connection is rebuilt even without an error, so a
/// topology change that raised no error (a replica added, a slot moved
/// with nothing sent to it yet) is learnt.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// A Lua script with its SHA-1, as Redis names it.
#[derive(Debug, Clone)]
pub(crate) struct Lua {
    body: Arc<str>,
    sha: Arc<str>,
}

impl Lua {
    pub(crate) fn new(body: String) -> Self {
        let sha = ::redis::Script::new(&body).get_hash().to_owned();
        Self {
            body: body.into(),
            sha: sha.into(),
        }
    }
}

/// A connection to a single Redis or to a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<ClusterConn>),
}

pub(crate) struct ClusterConn {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    built: Mutex<Instant>,
    rebuilding: AtomicBool,
    timeout: Duration,
}

pub(crate) fn backend(e: RedisError) -> StoreError {
    // The kind only: a message could quote a URL with a password.
    StoreError::Backend(format!("redis {:?} error", e.kind()))
}

/// Errors after which the cluster's topology may have changed.
fn topology_may_have_changed(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ReadOnly
            | ErrorKind::IoError
            | ErrorKind::ClusterDown
            | ErrorKind::MasterDown
            | ErrorKind::TryAgain
            | ErrorKind::Moved
            | ErrorKind::ClusterConnectionNotFound
    ) || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
}

impl ClusterConn {
    pub(crate) async fn connect(
        nodes: &[String],
        timeout: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let client = ClusterClient::builder(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(200)
            .build()
            .map_err(backend)?;
        let conn = tokio::time::timeout(timeout * 4, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(backend)?;
        Ok(Arc::new(Self {
            client,
            conn: RwLock::new(conn),
            built: Mutex::new(Instant::now()),
            rebuilding: AtomicBool::new(false),
            timeout,
        }))
    }

    fn current(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn due(&self) -> bool {
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= REFRESH_EVERY
    }

    /// Opens a new connection (a fresh read of the topology) unless one is
    /// being opened or one was opened less than `min_age` ago.
    async fn rebuild(&self, min_age: Duration) {
        if self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            < min_age
        {
            return;
        }
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(Ok(conn)) =
            tokio::time::timeout(self.timeout * 2, self.client.get_async_connection()).await
        {
            *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
            *self.built.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        self.rebuilding.store(false, Ordering::Release);
    }
}

impl ClusterConn {
    /// The connection to send on, after the periodic topology refresh if it
    /// is due.
    async fn ready(&self) -> ClusterConnection {
        if self.due() {
            self.rebuild(REFRESH_EVERY).await;
        }
        self.current()
    }

    /// A call's answer; an error that may mean a failover (`MOVED`,
    /// `READONLY`, a dropped connection) or a timeout refreshes the
    /// topology before the error is returned.
    async fn outcome<T>(
        &self,
        result: Result<::redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if topology_may_have_changed(&e) {
                    self.rebuild(Duration::from_millis(500)).await;
                }
                Err(backend(e))
            }
            Err(_) => {
                self.rebuild(Duration::from_millis(500)).await;
                Err(StoreError::Timeout)
            }
        }
    }
}

impl Conn {
    /// Runs one command under `timeout`.
    pub(crate) async fn query(&self, cmd: &Cmd, timeout: Duration) -> Result<Value, StoreError> {
        match self {
            Self::Single(conn) => {
                let mut conn = conn.clone();
                tokio::time::timeout(timeout, cmd.query_async(&mut conn))
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(backend)
            }
            Self::Cluster(cluster) => {
                let mut conn = cluster.ready().await;
                let result = tokio::time::timeout(timeout, cmd.query_async(&mut conn)).await;
                cluster.outcome(result).await
            }
        }
    }

    /// Runs a pipeline (every command in one slot, or keyless) under
    /// `timeout`, on the node of its first keyed command.
    pub(crate) async fn query_pipe(
        &self,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<Vec<Value>, StoreError> {
        match self {
            Self::Single(conn) => {
                let mut conn = conn.clone();
                tokio::time::timeout(timeout, pipe.query_async(&mut conn))
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(backend)
            }
            Self::Cluster(cluster) => {
                let mut conn = cluster.ready().await;
                let result = tokio::time::timeout(timeout, pipe.query_async(&mut conn)).await;
                cluster.outcome(result).await
            }
        }
    }

    /// Runs `script` with `keys` (one slot) and `args`, then `WAIT 1
    /// <wait_ms>` in the same pipeline, on the same node and connection:
    /// the script's answer and the number of replicas that acknowledged
    /// every write sent on that connection so far (the script's included).
    pub(crate) async fn eval_wait(
        &self,
        script: &Lua,
        keys: &[String],
        args: &[String],
        wait_ms: u64,
        timeout: Duration,
    ) -> Result<(Value, i64), StoreError> {
        let build = |verb: &str, what: &str| {
            let mut c = ::redis::cmd(verb);
            c.arg(what).arg(keys.len()).arg(keys).arg(args);
            let mut p = ::redis::pipe();
            p.add_command(c);
            p.cmd("WAIT").arg(1).arg(wait_ms);
            p
        };
        let t = timeout + Duration::from_millis(wait_ms);
        let out = match self.query_pipe(&build("EVALSHA", &script.sha), t).await {
            Err(StoreError::Backend(m)) if m.contains("NoScriptError") => {
                self.query_pipe(&build("EVAL", &script.body), t).await
            }
            other => other,
        }?;
        match <[Value; 2]>::try_from(out) {
            Ok([v, acks]) => {
                let acks = ::redis::from_redis_value::<i64>(&acks).map_err(backend)?;
                Ok((v, acks))
            }
            Err(_) => Err(StoreError::Backend("redis pipeline answer".into())),
        }
    }

    /// Runs `script` with `keys` (one slot) and `args`: `EVALSHA`, then
    /// `EVAL` if this node has not seen the script yet.
    pub(crate) async fn eval(
        &self,
        script: &Lua,
        keys: &[String],
        args: &[String],
        timeout: Duration,
    ) -> Result<Value, StoreError> {
        let build = |verb: &str, what: &str| {
            let mut c = ::redis::cmd(verb);
            c.arg(what).arg(keys.len()).arg(keys).arg(args);
            c
        };
        match self.query(&build("EVALSHA", &script.sha), timeout).await {
            Err(StoreError::Backend(m)) if m.contains("NoScriptError") => {
                self.query(&build("EVAL", &script.body), timeout).await
            }
            other => other,
        }
    }
}
