//! The Redis room state through a Cluster failover (feature `redis`;
//! ignored: needs the Cluster of `.ci/redis-cluster start` on
//! 127.0.0.1:7000-7005, and fails when it is absent).
//!
//! Every replica is promoted in turn with `CLUSTER FAILOVER` while people
//! heart-beat: each heartbeat is served with the person's place or fails
//! closed (`store_unavailable` for the engine), none finds its chain gone,
//! and service comes back without restarting the instance (the state
//! reads the new topology by itself).
#![cfg(feature = "redis")]

mod cluster_support;

use std::time::{Duration, Instant};

use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, RedisRoomState, RoomState,
};
use queuegate::ticket::Binding;
use queuegate::TicketId;

const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];
const T: i64 = 1_700_000_000_000;

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
}

async fn replicas() -> Vec<u16> {
    let mut out = Vec::new();
    for port in 7000..=7005u16 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut node(port).await)
            .await
            .unwrap();
        if info.contains("role:slave") {
            out.push(port);
        }
    }
    assert_eq!(out.len(), 3, "3 replicas");
    out
}

fn rule() -> AdmissionRule {
    AdmissionRule {
        now_ms: T,
        per_sec: 0.0,
        burst: 1.0,
        max_admitted: None,
        opens_at_ms: i64::MIN,
        shuffle_seed: 1,
    }
}

#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn heartbeats_fail_closed_through_a_failover_and_recover() {
    // No other failover test, nor a test needing the Cluster whole, runs
    // meanwhile; the roles swap, and the Cluster is whole again at the end.
    let _turn = cluster_support::topology_turn();
    cluster_support::wait_whole(Duration::from_secs(30));
    let state = RedisRoomState::cluster_builder(&SEEDS)
        .prefix(&format!("qg-cluster-failover-{}", TicketId::random()))
        .connect()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`");
    let queue = format!("failover-{}", TicketId::random());
    let mut people = Vec::new();
    for _ in 0..60 {
        let binding = Binding(TicketId::random().0);
        let ticket_id = TicketId::random();
        let join = JoinRecord {
            binding,
            live_until_ms: T + 600_000,
            max_waiting: None,
        };
        state.join(&queue, &join, &rule()).await.unwrap();
        let chain = ChainFacts {
            ticket_id,
            sequence: 0,
            joined_at_ms: T,
            expires_at_ms: T + 3_600_000,
            admitted_from_ms: None,
            epoch: Some(11),
        };
        let issued = IssuedRecord {
            binding,
            chain,
            live_until_ms: T + 600_000,
        };
        state.record(&queue, &issued).await.unwrap();
        people.push(BeatRecord { binding, ticket_id });
    }
    // Wait until every replica has the records (WAIT on each primary is
    // what a booking would do; here a short pause after the writes).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failed = 0;
    for replica in replicas().await {
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query_async(&mut node(replica).await)
            .await
            .expect("CLUSTER FAILOVER");
        // The promotion is asynchronous: wait until it happened.
        let promoted = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut node(replica).await)
                .await
                .unwrap();
            if info.contains("role:master") {
                break;
            }
            assert!(Instant::now() < promoted, "{replica} was not promoted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Heart-beat everyone until all are served again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut all_ok = true;
            for beat in &people {
                match state.beat(&queue, beat, &rule()).await {
                    Ok(Some(place)) => assert!(place.position >= 1),
                    Ok(None) => panic!("a live chain was lost in a failover"),
                    Err(_) => {
                        failed += 1;
                        all_ok = false;
                    }
                }
            }
            if all_ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no recovery within 20 s of the failover to {replica}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("heartbeats failed closed during the failovers: {failed}");
    state.clear(&queue).await.unwrap();
    cluster_support::wait_whole(Duration::from_secs(30));
}
