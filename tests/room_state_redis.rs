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

/// Issue 12 item 7: past position 4,294,967,295 every call failed (the
/// answer did not fit 32 bits). Places go on counting in 64 bits.
#[tokio::test]
#[ignore = "needs Redis"]
async fn places_past_32_bits_keep_counting() {
    use queuegate::room::{Joined, RoomState};
    use room_state_support::{joining, queue, rule, T};

    let prefix = format!("qg-room-u32-{}", TicketId::random());
    let store = RedisReplayStore::builder("redis://127.0.0.1:6379/")
        .prefix(&prefix)
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379");
    let state = RedisRoomState::new(&store);
    let q = queue("u32");
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let meta = format!(
        "{prefix}:room:{{{}}}:meta",
        queuegate::ticket::QueueId::from_name(&q)
    );
    redis::cmd("HSET")
        .arg(&meta)
        .arg("next")
        .arg(u64::from(u32::MAX) - 1)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let r = rule(T, 0.0);
    let mut positions = Vec::new();
    for i in 1..=3u8 {
        match state.join(&q, &joining(i, T + 10_000), &r).await.unwrap() {
            Joined::New(place) => positions.push(place.position),
            other => panic!("{other:?}"),
        }
    }
    let top = u64::from(u32::MAX);
    assert_eq!(positions, [top, top + 1, top + 2]);
    assert_eq!(state.stats(&q, T).await.unwrap().last_position, top + 2);
    state.clear(&q).await.unwrap();
}
