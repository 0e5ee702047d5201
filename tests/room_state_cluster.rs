//! The room-state conformance suite against a real Redis Cluster (feature
//! `redis`; ignored: needs the Cluster of `.ci/redis-cluster start` on
//! 127.0.0.1:7000-7005, and fails when it is absent).
#![cfg(feature = "redis")]

mod room_state_support;

use queuegate::room::RedisRoomState;
use queuegate::TicketId;

pub const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];

async fn cluster_state() -> RedisRoomState {
    RedisRoomState::cluster_builder(&SEEDS)
        .prefix(&format!("qg-room-cluster-{}", TicketId::random()))
        .connect()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start` on 127.0.0.1:7000")
}

room_state_conformance!(ignore = "needs Redis Cluster", || async {
    cluster_state().await
});
