//! The Redis Cluster of `.ci/redis-cluster start` as the tests see it: its
//! seed nodes, a turn on its topology shared by every test process on the
//! machine, a check that it is whole (3 primaries with a replica each, all
//! nodes `cluster_state:ok`), and killing and restarting a node.
//!
//! Tests that change the topology (a failover, a killed or stopped node)
//! take the exclusive turn, so two of them never run at once, even from
//! different test binaries or worktrees; tests that only need the Cluster
//! whole take the shared turn, so no failover starts under them. The turn
//! is an `flock` on `<cluster dir>.lock`: the kernel drops it when the
//! process dies, so a crashed test never leaves it taken.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// Seed nodes, as the library's cluster builders take them.
pub const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];

/// Every node of the Cluster.
pub const NODES: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

/// The message every Cluster test fails with when the Cluster is absent.
pub const NEEDED: &str =
    "this test needs the Redis Cluster of `.ci/redis-cluster start` on 127.0.0.1:7000-7005";

/// Where `.ci/redis-cluster` keeps the nodes' files (`<dir>/<port>/`).
pub fn cluster_dir() -> String {
    std::env::var("QG_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/queuegate-cluster".into())
}

/// A turn on the Cluster's topology, held until dropped.
pub struct Turn(#[allow(dead_code)] File);

fn turn(operation: libc::c_int) -> Turn {
    let path = format!("{}.lock", cluster_dir());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open the Cluster's turn lock {path}: {e}"));
    loop {
        // SAFETY: `flock` on a file descriptor this `File` owns.
        let r = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if r == 0 {
            return Turn(file);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "flock {path}: {e}"
        );
    }
}

/// The exclusive turn: for a test that changes the topology.
pub fn topology_turn() -> Turn {
    turn(libc::LOCK_EX)
}

/// The shared turn: for a test that needs the Cluster whole.
pub fn shared_turn() -> Turn {
    turn(libc::LOCK_SH)
}

/// `redis-cli -p <port> <args>`, its output; `None` if the node does not
/// answer.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (the Cluster tests need it, as `.ci/redis-cluster` does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// Whether the Cluster is whole: every node up and `cluster_state:ok`, 3
/// primaries, each with one replica whose link is up. `Err` says what is
/// missing.
pub fn whole() -> Result<(), String> {
    let mut primaries = 0;
    for port in NODES {
        let info = cli(port, &["cluster", "info"]).ok_or(format!("{port} does not answer"))?;
        if !info.contains("cluster_state:ok") {
            return Err(format!("{port} is not cluster_state:ok"));
        }
        let repl = cli(port, &["info", "replication"]).ok_or(format!("{port} does not answer"))?;
        if repl.contains("role:master") {
            primaries += 1;
            if !repl.contains("connected_slaves:1") {
                return Err(format!("primary {port} has no connected replica"));
            }
        } else if !repl.contains("master_link_status:up") {
            return Err(format!("replica {port}'s link to its primary is down"));
        }
    }
    if primaries != 3 {
        return Err(format!("{primaries} primaries, not 3"));
    }
    Ok(())
}

/// Waits (blocking) until the Cluster is whole, or panics saying what is
/// missing: a Cluster test never passes without the Cluster.
pub fn wait_whole(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match whole() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => {
                panic!("{NEEDED}, whole (3 primaries with a replica each): {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The role of a node (`master` or `slave`), `None` if it does not answer.
pub fn role(port: u16) -> Option<String> {
    let info = cli(port, &["info", "replication"])?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("role:"))
        .map(str::to_owned)
}

/// The primaries' ports.
pub fn primaries() -> Vec<u16> {
    NODES
        .into_iter()
        .filter(|p| role(*p).as_deref() == Some("master"))
        .collect()
}

/// The port of `primary`'s replica.
pub fn replica_of(primary: u16) -> u16 {
    let info = cli(primary, &["info", "replication"]).expect("the primary answers");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("slave0:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{primary} has a replica"))
}

/// The node's pid, from the pid file `.ci/redis-cluster` gave it.
pub fn pid_of(port: u16) -> String {
    let path = format!("{}/{port}/redis.pid", cluster_dir());
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!("the node's pid file {path} (of `.ci/redis-cluster start`): {e}")
        })
        .trim()
        .to_owned()
}

/// Kills the node with `SIGKILL`: a crash, nothing flushed or handed over.
pub fn kill(port: u16) {
    let ok = Command::new("kill")
        .args(["-KILL", &pid_of(port)])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -KILL the node on {port}");
}

/// Starts the node on `port` again if it does not answer, as
/// `.ci/redis-cluster start` started it, on its old `nodes.conf`: it
/// rejoins the Cluster and, its slots having moved to its promoted
/// replica, becomes that node's replica. Blocking; safe to call twice.
pub fn restart(port: u16) {
    if cli(port, &["ping"]).is_some_and(|t| t.contains("PONG")) {
        return;
    }
    let dir = format!("{}/{port}", cluster_dir());
    let ok = Command::new("redis-server")
        .current_dir(&dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args([
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "yes"])
        .args(["--pidfile", &format!("{dir}/redis.pid")])
        .args(["--logfile", &format!("{dir}/redis.log")])
        .status()
        .expect("redis-server (the Cluster tests need it, as `.ci/redis-cluster` does)")
        .success();
    assert!(ok, "restart the node on {port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cli(port, &["ping"]).is_some_and(|t| t.contains("PONG")) {
        assert!(
            Instant::now() < deadline,
            "the node on {port} did not restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts a killed node when dropped (also when the test panics), and
/// waits until the Cluster is whole again.
pub struct Revive(pub u16);

impl Drop for Revive {
    fn drop(&mut self) {
        restart(self.0);
        if std::thread::panicking() {
            // Best effort: do not panic while panicking.
            let deadline = Instant::now() + Duration::from_secs(60);
            while whole().is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        } else {
            wait_whole(Duration::from_secs(60));
        }
    }
}
