//! The room-state conformance suite against the Redis state (feature
//! `redis`; ignored: needs Redis on 127.0.0.1:6379, fails when it is
//! absent). Each check uses its own queue, under a prefix of this run.
#![cfg(feature = "redis")]

mod room_state_support;

use queuegate::replay::RedisReplayStore;
use queuegate::room::RedisRoomState;
use queuegate::TicketId;

async fn redis_state() -> RedisRoomState {
    let store = RedisReplayStore::builder("redis://127.0.0.1:6379/")
        .prefix(&format!("qg-room-conformance-{}", TicketId::random()))
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379");
    RedisRoomState::new(&store)
}

room_state_conformance!(ignore = "needs Redis", || async { redis_state().await });
