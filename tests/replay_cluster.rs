//! The Redis replay store on a Redis Cluster (feature `redis`; ignored:
//! needs the Cluster of `.ci/redis-cluster start` on 127.0.0.1:7000-7005,
//! 3 primaries with one replica each, and fails when it is absent).
//!
//! - Two instances share single use: a ticket consumed through one is
//!   `replayed` through the other.
//! - A hold no replica confirms (the replica is stopped with `SIGSTOP`) is
//!   refused before the handler would run, and given back.
//! - Failover without timing luck: the replica of a consumed ticket's
//!   shard is made to lack the consumption record on purpose, then
//!   promoted with `CLUSTER FAILOVER TAKEOVER`: the consumed ticket is
//!   still refused, every request is answered or fails closed, and the
//!   instances serve the shard again without a restart.
//! - Garbage changes nothing: a flood of checks under a wrong epoch
//!   creates no key on any node.
#![cfg(feature = "redis")]

mod cluster_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use queuegate::rejection::ReplayReason;
use queuegate::replay::{
    Hold, RedisReplayStore, ReplayCheck, ReplayStore, ReplayVerdict, SettleHold, Settlement,
};
use queuegate::ticket::{ScopeId, TicketId, TicketKind};

const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];
const NODES: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
}

async fn store(prefix: &str) -> RedisReplayStore {
    RedisReplayStore::cluster_builder(&SEEDS)
        .prefix(prefix)
        .replica_wait(Duration::from_millis(300))
        .connect()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
}

fn unique(name: &str) -> String {
    format!("qgt-rc-{name}-{}", TicketId::random())
}

fn check(s: &RedisReplayStore, id: TicketId, hold: bool) -> ReplayCheck {
    let now = now_ms();
    ReplayCheck {
        scope: ScopeId::from_name("reserve"),
        ticket_id: id,
        sequence: 0,
        kind: TicketKind::Admitted,
        same_client: true,
        live_until_ms: now + 60_000,
        expires_at_ms: now + 120_000,
        now_ms: now,
        grace_ms: 5_000,
        hold: hold.then(|| Hold::new(now + 5_000)),
        epoch: s.epoch_of(&id),
    }
}

fn commit(c: &ReplayCheck) -> SettleHold {
    SettleHold {
        scope: c.scope,
        ticket_id: c.ticket_id,
        kind: c.kind,
        hold: c.hold.expect("a hold"),
        settlement: Settlement::Commit,
        expires_at_ms: c.expires_at_ms,
        now_ms: c.now_ms,
    }
}

/// The role and, for a primary, the replica's port of every node.
async fn replica_of(primary: u16) -> u16 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut node(primary).await)
        .await
        .unwrap();
    assert!(info.contains("role:master"), "{primary} is a primary");
    let port = info
        .lines()
        .find_map(|l| l.strip_prefix("slave0:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
        .expect("the primary has a replica");
    port.trim().parse().unwrap()
}

/// The node (a primary) holding a key matching `pattern`, and the key.
async fn find_key(pattern: &str) -> (u16, String) {
    for port in NODES {
        let mut c = node(port).await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap();
        if !info.contains("role:master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut c)
            .await
            .unwrap();
        if let Some(k) = keys.into_iter().next() {
            return (port, k);
        }
    }
    panic!("no primary holds a key matching {pattern}");
}

async fn count_keys(prefix: &str) -> usize {
    let mut n = 0;
    for port in NODES {
        let mut c = node(port).await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap();
        if !info.contains("role:master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .unwrap();
        n += keys.len();
    }
    n
}

/// The tests of this file take turns, and with every other test process
/// that changes the Cluster's topology or needs it whole: one stops a
/// replica (SIGSTOP) and one promotes a replica, and either breaks the
/// others' `WAIT 1` while it runs. The turn is the Cluster's exclusive
/// `flock` (`tests/cluster_support`), which the kernel drops if a test
/// process dies holding it. Each `#[tokio::test]` has its own thread, so a
/// blocking lock is enough.
fn one_at_a_time() -> cluster_support::Turn {
    let turn = cluster_support::topology_turn();
    // Whole, replicas' links up: a test right after a promotion must not
    // find the demoted primary still syncing (its `WAIT 1` would time out).
    cluster_support::wait_whole(Duration::from_secs(30));
    turn
}

/// Waits until every node agrees the cluster is ok.
async fn wait_cluster_ok() {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ok = true;
        for port in NODES {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut node(port).await)
                .await
                .unwrap();
            ok &= info.contains("cluster_state:ok");
        }
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster did not become ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pid_of(port: u16) -> String {
    let dir = std::env::var("QG_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/queuegate-cluster".into());
    std::fs::read_to_string(format!("{dir}/{port}/redis.pid"))
        .expect("the node's pid file of `.ci/redis-cluster start`")
        .trim()
        .to_owned()
}

fn signal(port: u16, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid_of(port))
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} the node on {port}");
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_ticket_consumed_on_one_instance_is_replayed_on_the_other() {
    let _turn = one_at_a_time();
    wait_cluster_ok().await;
    let prefix = unique("two");
    let (a, b) = (store(&prefix).await, store(&prefix).await);
    assert!(a.is_cluster());
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let id = TicketId::random();
        assert_eq!(a.epoch_of(&id), b.epoch_of(&id), "one epoch per shard");
        let c = check(&a, id, true);
        assert_eq!(a.check(&c).await.unwrap(), ReplayVerdict::Fresh);
        a.settle(&commit(&c)).await.unwrap();
        let again = check(&b, id, true);
        assert_eq!(
            b.check(&again).await.unwrap(),
            ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient)
        );
        ports.insert(find_key(&format!("{prefix}:*{id}:u:*")).await.0);
    }
    assert_eq!(ports.len(), 3, "the shards spread over the 3 primaries");
    // A ticket of another epoch (minted before a reset) is refused.
    let id = TicketId::random();
    let old = ReplayCheck {
        epoch: a.epoch_of(&id).wrapping_add(1),
        ..check(&a, id, true)
    };
    assert_eq!(
        b.check(&old).await.unwrap(),
        ReplayVerdict::Replayed(ReplayReason::StateReset)
    );
    assert_eq!(a.unconfirmed_commits(), 0);
    a.clear().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_hold_no_replica_confirms_is_refused_and_given_back() {
    let _turn = one_at_a_time();
    wait_cluster_ok().await;
    let prefix = unique("wait");
    let a = store(&prefix).await;
    let id = TicketId::random();
    // A session check (no hold, not waited for) shows where the shard is.
    assert_eq!(
        a.check(&check(&a, id, false)).await.unwrap(),
        ReplayVerdict::Fresh
    );
    let (primary, _) = find_key(&format!("{prefix}:*{id}:c")).await;
    let replica = replica_of(primary).await;
    signal(replica, "STOP");
    let refused = a.check(&check(&a, id, true)).await;
    signal(replica, "CONT");
    assert!(refused.is_err(), "unconfirmed hold: {refused:?}");
    // The hold was given back: a retry is not `in_progress`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        let c = check(&a, id, true);
        match a.check(&c).await {
            Ok(v) => {
                assert_eq!(v, ReplayVerdict::Fresh);
                break c;
            }
            Err(_) => assert!(Instant::now() < deadline, "no recovery"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.settle(&commit(&c)).await.unwrap();
    assert_eq!(
        a.check(&check(&a, id, true)).await.unwrap(),
        ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient)
    );
    a.clear().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_promoted_replica_missing_a_consumption_never_lets_it_book_again() {
    let _turn = one_at_a_time();
    wait_cluster_ok().await;
    let prefix = unique("fence");
    let (a, b) = (store(&prefix).await, store(&prefix).await);
    // The consumed ticket, and one consumed ticket per other shard seen.
    let x = TicketId::random();
    let cx = check(&a, x, true);
    assert_eq!(a.check(&cx).await.unwrap(), ReplayVerdict::Fresh);
    a.settle(&commit(&cx)).await.unwrap();
    let (primary, use_key) = find_key(&format!("{prefix}:*{x}:u:*")).await;
    let replica = replica_of(primary).await;
    let tag_end = use_key.find('}').unwrap() + 1;
    let shard = &use_key[..tag_end];
    let (epoch_key, owner_key) = (format!("{shard}:epoch"), format!("{shard}:owner"));
    // Tickets on the other primaries, consumed too.
    let mut others = Vec::new();
    while others.len() < 4 {
        let y = TicketId::random();
        let cy = check(&a, y, true);
        assert_eq!(a.check(&cy).await.unwrap(), ReplayVerdict::Fresh);
        a.settle(&commit(&cy)).await.unwrap();
        if find_key(&format!("{prefix}:*{y}:u:*")).await.0 != primary {
            others.push(y);
        }
    }

    // The replica diverges on purpose: it loses every record, then gets
    // the shard's epoch and owner back from its primary, so all it lacks
    // is the records (the consumption of `x` among them).
    let mut r = node(replica).await;
    let mut p = node(primary).await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("no")
        .query_async(&mut r)
        .await
        .unwrap();
    let () = redis::cmd("FLUSHALL").query_async(&mut r).await.unwrap();
    for k in [&epoch_key, &owner_key] {
        let v: String = redis::cmd("GET").arg(k).query_async(&mut p).await.unwrap();
        let () = redis::cmd("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut p)
            .await
            .unwrap();
    }
    let acks: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query_async(&mut p)
        .await
        .unwrap();
    assert_eq!(acks, 1);
    let () = redis::cmd("READONLY").query_async(&mut r).await.unwrap();
    let (has_use, has_epoch): (bool, bool) = (
        redis::cmd("EXISTS")
            .arg(&use_key)
            .query_async(&mut r)
            .await
            .unwrap(),
        redis::cmd("EXISTS")
            .arg(&epoch_key)
            .query_async(&mut r)
            .await
            .unwrap(),
    );
    assert!(!has_use && has_epoch, "the replica lacks only the records");

    let () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .arg("TAKEOVER")
        .query_async(&mut r)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await
            .unwrap();
        if info.contains("role:master") {
            break;
        }
        assert!(Instant::now() < deadline, "no promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("yes")
        .query_async(&mut r)
        .await
        .unwrap();

    // Served or failed closed, never booked again; until each instance has
    // seen the fence.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fenced = [false, false];
    while fenced != [true, true] {
        assert!(
            Instant::now() < deadline,
            "the instances never served the shard again"
        );
        for (i, s) in [&a, &b].into_iter().enumerate() {
            // The ticket as its holder has it: minted under the old epoch.
            let again = ReplayCheck {
                epoch: cx.epoch,
                ..check(s, x, true)
            };
            // The store's own timeouts bound every call: a check that does
            // not return is a failure, not a wait.
            let answer = tokio::time::timeout(Duration::from_secs(10), s.check(&again))
                .await
                .expect("a check did not return within 10 s");
            match answer {
                Ok(ReplayVerdict::Replayed(ReplayReason::StateReset)) => fenced[i] = true,
                Ok(v) => panic!("the consumed ticket was answered {v:?}"),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other primaries' shards are untouched.
    for y in &others {
        let v = b.check(&check(&b, *y, true)).await.unwrap();
        assert_eq!(
            v,
            ReplayVerdict::Replayed(ReplayReason::ConsumedBySameClient)
        );
    }
    // The fenced shard serves new tickets (minted under its new epoch) on
    // both instances, without a restart.
    for s in [&a, &b] {
        let mut id = TicketId::random();
        id.0[0] = x.0[0];
        assert_ne!(
            s.epoch_of(&id),
            cx.epoch,
            "the instance learnt the new epoch"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match s.check(&check(s, id, true)).await {
                Ok(v) => {
                    assert_eq!(v, ReplayVerdict::Fresh);
                    break;
                }
                Err(_) => assert!(Instant::now() < deadline, "no recovery"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_cluster_ok().await;
    a.clear().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn refused_checks_create_no_key_on_any_node() {
    let _turn = one_at_a_time();
    wait_cluster_ok().await;
    let prefix = unique("garbage");
    let a = store(&prefix).await;
    let before = count_keys(&prefix).await;
    assert!(before >= 256 * 2, "each shard has its epoch and owner");
    for _ in 0..2_000 {
        let id = TicketId::random();
        // A forged or stale epoch: refused before anything is written.
        let c = ReplayCheck {
            epoch: a.epoch_of(&id) ^ 0x5a5a_5a5a,
            ..check(&a, id, true)
        };
        assert_eq!(
            a.check(&c).await.unwrap(),
            ReplayVerdict::Replayed(ReplayReason::StateReset)
        );
    }
    assert_eq!(count_keys(&prefix).await, before, "keys on the primaries");
    a.clear().await.unwrap();
}
