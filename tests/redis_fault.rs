//! Fault test: a Redis of the test's own goes away in the middle of a run of
//! single-use verifications and comes back empty on the same port.
//!
//! Needs the `redis-server` binary (installed by `.ci/run`); ignored
//! otherwise, and fails (does not skip) when the binary is missing.
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queuegate::replay::RedisReplayStore;
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, Minted, Policy, Presented, RejectionCode,
    ReplayMode, ReplayReason, ReplayStore, SystemClock, TicketId, Verifier,
};

/// A `redis-server` child on 127.0.0.1, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs the redis-server binary on PATH");
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn kill(mut self) {
        self.child.kill().expect("kill redis-server");
        self.child.wait().expect("reap redis-server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("its address")
        .port()
}

const ADMIT: JoinDecision = JoinDecision {
    position: 1,
    live_for: Duration::from_secs(600),
    estimated_wait: Duration::ZERO,
    admit: true,
};

struct Rig {
    issuer: Issuer<SystemClock, RedisReplayStore>,
    verifier: Verifier<SystemClock, RedisReplayStore>,
    store: Arc<RedisReplayStore>,
    admitted: HashMap<TicketId, usize>,
}

impl Rig {
    fn mint(&self) -> Minted {
        self.issuer
            .join(b"client", ClientTime::Absent, &ADMIT)
            .expect("join")
    }

    /// Presents a ticket; counts admissions per chain.
    async fn present(&mut self, t: &Minted) -> Result<(), queuegate::Rejection> {
        let p = Presented {
            ticket: Some(t.ticket.as_bytes()),
            binding: Some(b"client"),
            client_time: ClientTime::Absent,
        };
        let v = self.verifier.verify(&p).await?;
        // The booking handler succeeds: the layer commits the hold.
        if let Some(commit) = self.verifier.settle(&v, queuegate::Settlement::Commit) {
            commit.await.expect("commit");
        }
        *self.admitted.entry(t.claims.ticket_id).or_default() += 1;
        Ok(())
    }
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn redis_going_away_fails_closed_and_never_admits_twice() {
    let port = free_port();
    let server = Server::start(port);
    let store = Arc::new(
        RedisReplayStore::builder(&format!("redis://127.0.0.1:{port}/"))
            .prefix("qg-fault")
            .timeout(Duration::from_millis(300))
            .connect()
            .await
            .expect("connect to the test's own Redis"),
    );
    let keys = Arc::new(KeyRing::new(1, &[9u8; 32]).expect("key"));
    let policy = Policy::new("fault")
        .scope("reserve")
        .replay(ReplayMode::SingleUse);
    let mut rig = Rig {
        issuer: Issuer::new(keys.clone(), policy.clone(), SystemClock, store.clone())
            .expect("issuer"),
        verifier: Verifier::new(keys, policy, SystemClock, store.clone()).expect("verifier"),
        store,
        admitted: HashMap::new(),
    };
    let before: Vec<Minted> = (0..30).map(|_| rig.mint()).collect();

    // Healthy: each ticket books once, a second use is a replay.
    for t in &before[..10] {
        rig.present(t).await.expect("first use");
        let again = rig.present(t).await.unwrap_err();
        assert_eq!(again.code(), RejectionCode::Replayed);
    }

    // Redis goes away mid-run: every request in the gap fails closed.
    server.kill();
    for t in before[10..20].iter().chain(&before[..5]) {
        let err = rig.present(t).await.unwrap_err();
        assert_eq!(err.code(), RejectionCode::StoreUnavailable, "{err:?}");
    }

    // Redis comes back on the same port, empty (no persistence). Requests
    // fail closed until the connection is back, then every ticket minted
    // before is refused: Redis lost what was consumed.
    let _server = Server::start(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match rig.present(&before[20]).await {
            Err(e) if e.code() == RejectionCode::StoreUnavailable => {
                assert!(Instant::now() < deadline, "no recovery within 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(
            first,
            Err(queuegate::Rejection::Replayed {
                reason: ReplayReason::StateReset,
                ..
            })
        ),
        "{first:?}"
    );
    for t in &before {
        let err = rig.present(t).await.unwrap_err();
        assert!(
            matches!(
                err,
                queuegate::Rejection::Replayed {
                    reason: ReplayReason::StateReset,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // Service recovers: tickets minted now (under the new epoch) book once.
    assert_ne!(rig.store.epoch(), before[0].claims.epoch);
    for _ in 0..10 {
        let t = rig.mint();
        rig.present(&t).await.expect("recovered");
        assert_eq!(
            rig.present(&t).await.unwrap_err().code(),
            RejectionCode::Replayed
        );
    }

    // Nothing was admitted twice, and exactly the expected chains were.
    assert!(rig.admitted.values().all(|&n| n == 1), "{:?}", rig.admitted);
    assert_eq!(rig.admitted.len(), 20);
    for t in &before[10..] {
        assert!(!rig.admitted.contains_key(&t.claims.ticket_id));
    }
}
