//! The Redis replay store's advance on the common heartbeat path (the
//! chain's record is there, the kind does not change): the same answers
//! as the full script, and exact capacity counts, whichever path runs.
//! Needs Redis on 127.0.0.1:6379.
#![cfg(feature = "redis")]

use queuegate::replay::{
    Advance, AdvanceRequest, RedisReplayStore, ReplayCheck, ReplayStore, ReplayVerdict,
};
use queuegate::ticket::ScopeId;
use queuegate::{ReplayReason, StoreError, TicketId, TicketKind};
use redis::aio::MultiplexedConnection;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn store(prefix: &str, waiting: u64) -> RedisReplayStore {
    RedisReplayStore::builder("redis://127.0.0.1:6379/")
        .prefix(prefix)
        .waiting_capacity(waiting)
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379")
}

async fn conn() -> MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379/")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379")
}

fn unique(name: &str) -> String {
    format!("qg-hbpath-{name}-{}", TicketId::random())
}

/// A chain whose capacity shard (first byte mod 16) is `shard`.
fn chain_in(shard: u8) -> TicketId {
    let mut id = TicketId::random();
    id.0[0] = shard;
    id
}

/// The advance of a ticket of chain `id` minted under the epoch `s` knows
/// for it now.
fn advance(
    s: &RedisReplayStore,
    id: TicketId,
    sequence: u32,
    now_ms: i64,
    live_for_ms: i64,
) -> AdvanceRequest {
    AdvanceRequest {
        ticket_id: id,
        sequence,
        kind: TicketKind::Waiting,
        live_until_ms: now_ms + live_for_ms,
        expires_at_ms: now_ms + 3_600_000,
        now_ms,
        grace_ms: 5_000,
        epoch: s.epoch_of(&id),
    }
}

/// The check of a ticket of chain `id` minted under the epoch `s` knows
/// for it now.
fn check(s: &RedisReplayStore, id: TicketId, sequence: u32, now_ms: i64) -> ReplayCheck {
    ReplayCheck {
        scope: ScopeId::from_name("hbpath"),
        ticket_id: id,
        sequence,
        kind: TicketKind::Waiting,
        same_client: true,
        live_until_ms: now_ms + 60_000,
        expires_at_ms: now_ms + 3_600_000,
        now_ms,
        grace_ms: 5_000,
        hold: None,
        epoch: s.epoch_of(&id),
    }
}

/// The capacity shard's total of `kind` and the sum of its buckets.
async fn counts(c: &mut MultiplexedConnection, prefix: &str, shard: u8, kind: &str) -> (i64, i64) {
    let key = format!("{prefix}:{{{prefix}:cap:{shard}}}");
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(c)
        .await
        .unwrap();
    let mut total = 0;
    let mut buckets = 0;
    for (field, value) in all {
        let n: i64 = value.parse().unwrap();
        if field == format!("t{kind}") {
            total = n;
        } else if field.starts_with(&format!("{kind}:")) {
            buckets += n;
        }
    }
    (total, buckets)
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn heartbeats_move_the_count_between_buckets_and_never_add_to_it() {
    let prefix = unique("count");
    // One waiting record per capacity shard.
    let s = store(&prefix, 16).await;
    let mut c = conn().await;
    let id = chain_in(3);
    let t = wall_ms();
    assert!(matches!(
        s.advance(&advance(&s, id, 0, t, 300_000)).await,
        Ok(Advance::Next { sequence: 1, .. })
    ));
    assert_eq!(counts(&mut c, &prefix, 3, "w").await, (1, 1));
    // Every later heartbeat's deadline lies in another 5-second bucket.
    for n in 1..40u32 {
        let now = t + i64::from(n) * 7_000;
        assert_eq!(
            s.advance(&advance(&s, id, n, now, 300_000)).await,
            Ok(Advance::Next {
                sequence: n + 1,
                issued_at_ms: now
            })
        );
        assert_eq!(counts(&mut c, &prefix, 3, "w").await, (1, 1), "after {n}");
    }
    // A deadline that shrinks (near the front) keeps the latest retention.
    let now = t + 40 * 7_000;
    assert!(matches!(
        s.advance(&advance(&s, id, 40, now, 10_000)).await,
        Ok(Advance::Next { sequence: 41, .. })
    ));
    assert_eq!(counts(&mut c, &prefix, 3, "w").await, (1, 1));
    // The shard is full: another chain there is refused, one elsewhere is not.
    assert_eq!(
        s.advance(&advance(&s, chain_in(3), 0, now, 300_000)).await,
        Err(StoreError::Capacity)
    );
    assert!(matches!(
        s.advance(&advance(&s, chain_in(4), 0, now, 300_000)).await,
        Ok(Advance::Next { .. })
    ));
    // Admission moves the record to the admitted count (the full script).
    let mut admitted = advance(&s, id, 41, now + 1_000, 60_000);
    admitted.kind = TicketKind::Admitted;
    assert!(matches!(
        s.advance(&admitted).await,
        Ok(Advance::Next { sequence: 42, .. })
    ));
    assert_eq!(counts(&mut c, &prefix, 3, "w").await, (0, 0));
    assert_eq!(counts(&mut c, &prefix, 3, "a").await, (1, 1));
    // An admitted chain's heartbeats stay admitted, on the short path.
    let mut next = advance(&s, id, 42, now + 8_000, 60_000);
    next.kind = TicketKind::Admitted;
    assert!(matches!(
        s.advance(&next).await,
        Ok(Advance::Next { sequence: 43, .. })
    ));
    assert_eq!(counts(&mut c, &prefix, 3, "a").await, (1, 1));
    // The freed waiting place takes a new chain.
    assert!(matches!(
        s.advance(&advance(&s, chain_in(3), 0, now + 9_000, 300_000))
            .await,
        Ok(Advance::Next { .. })
    ));
    s.clear().await.unwrap();
}

/// A bucket every record moved out of holds 0; once it has passed, the
/// sweep subtracts nothing for it and goes on (it used to send Redis an
/// increment of "-0", which Redis refuses, and every call of the shard
/// that sweeps failed from then on).
#[tokio::test]
#[ignore = "needs Redis"]
async fn a_bucket_left_empty_is_swept_like_any_other() {
    let prefix = unique("empty");
    let s = RedisReplayStore::builder("redis://127.0.0.1:6379/")
        .prefix(&prefix)
        .tolerance(std::time::Duration::ZERO)
        .connect()
        .await
        .expect("this test needs Redis on 127.0.0.1:6379");
    let mut c = conn().await;
    let id = chain_in(5);
    let t = wall_ms();
    assert!(matches!(
        s.advance(&advance(&s, id, 0, t, 2_000)).await,
        Ok(Advance::Next { .. })
    ));
    // The next deadline is in a later bucket: the first one is left at 0.
    assert!(matches!(
        s.advance(&advance(&s, id, 1, t + 100, 60_000)).await,
        Ok(Advance::Next { .. })
    ));
    let emptied = (t + 2_000) / 5_000;
    while wall_ms() <= (emptied + 1) * 5_000 + 200 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A new chain in the same capacity shard sweeps the passed bucket.
    let now = wall_ms();
    assert!(matches!(
        s.advance(&advance(&s, chain_in(5), 0, now, 60_000)).await,
        Ok(Advance::Next { .. })
    ));
    assert_eq!(counts(&mut c, &prefix, 5, "w").await, (2, 2));
    s.clear().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn retries_clones_and_checks_see_what_the_short_path_wrote() {
    let prefix = unique("rules");
    let s = store(&prefix, 1_000).await;
    let id = TicketId::random();
    let t = wall_ms();
    for n in 0..3u32 {
        assert!(matches!(
            s.advance(&advance(&s, id, n, t + i64::from(n) * 1_000, 300_000))
                .await,
            Ok(Advance::Next { .. })
        ));
    }
    // Sequence 3 was issued at t + 2,000: its predecessor retried within
    // the grace gets it again, an older ticket is stale.
    assert_eq!(
        s.advance(&advance(&s, id, 2, t + 3_000, 300_000)).await,
        Ok(Advance::Retry {
            sequence: 3,
            issued_at_ms: t + 2_000
        })
    );
    assert_eq!(
        s.advance(&advance(&s, id, 1, t + 3_000, 300_000)).await,
        Ok(Advance::Stale)
    );
    // Past the grace the retry is stale too.
    assert_eq!(
        s.advance(&advance(&s, id, 2, t + 7_001, 300_000)).await,
        Ok(Advance::Stale)
    );
    // A check reads the record the short path wrote.
    assert_eq!(
        s.check(&check(&s, id, 2, t + 3_000)).await,
        Ok(ReplayVerdict::Fresh),
        "the predecessor within the grace, its successor unseen"
    );
    assert_eq!(
        s.check(&check(&s, id, 3, t + 3_000)).await,
        Ok(ReplayVerdict::Fresh)
    );
    // Once the successor was seen, its predecessor is stale everywhere.
    assert_eq!(
        s.check(&check(&s, id, 2, t + 3_100)).await,
        Ok(ReplayVerdict::Replayed(ReplayReason::StaleSequence))
    );
    assert_eq!(
        s.advance(&advance(&s, id, 2, t + 3_100, 300_000)).await,
        Ok(Advance::Stale)
    );
    // And the chain goes on from the seen ticket.
    assert!(matches!(
        s.advance(&advance(&s, id, 3, t + 4_000, 300_000)).await,
        Ok(Advance::Next { sequence: 4, .. })
    ));
    s.clear().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn a_lost_epoch_still_stops_the_short_path() {
    let prefix = unique("epoch");
    let s = store(&prefix, 1_000).await;
    let mut c = conn().await;
    let id = TicketId::random();
    let t = wall_ms();
    assert!(matches!(
        s.advance(&advance(&s, id, 0, t, 300_000)).await,
        Ok(Advance::Next { .. })
    ));
    let before = s.epoch();
    // Redis lost its data but for this chain's record (the worst case: the
    // record alone would let the short path through).
    let () = redis::cmd("DEL")
        .arg(format!("{prefix}:epoch"))
        .query_async(&mut c)
        .await
        .unwrap();
    // `Reset`, not `Stale`: the store says the records were lost.
    assert_eq!(
        s.advance(&advance(&s, id, 1, t + 1_000, 300_000)).await,
        Ok(Advance::Reset)
    );
    assert_ne!(s.epoch(), before, "the store learnt the new epoch");
    s.clear().await.unwrap();
}

const SEEDS: [&str; 3] = [
    "redis://127.0.0.1:7000",
    "redis://127.0.0.1:7001",
    "redis://127.0.0.1:7002",
];

/// The key of a chain's record on the Cluster, found by its ticket id on
/// any node.
async fn cluster_record_key(id: TicketId) -> String {
    for port in 7000..=7005u16 {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
            continue;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*}}:{id}:c"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .unwrap();
            if let Some(k) = keys.into_iter().next() {
                return k;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    panic!("the chain's record is on no node");
}

/// Fences the shard of chain `id` as a failover would: its primary is no
/// longer the shard's owner, so the next script there starts a new epoch.
async fn fence_shard_of(id: TicketId) {
    let record = cluster_record_key(id).await;
    let owner = format!("{}:owner", record.rsplitn(3, ':').nth(2).unwrap());
    let cluster = redis::cluster::ClusterClient::new(SEEDS.to_vec()).unwrap();
    let mut c = cluster.get_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(&owner)
        .arg("another-node")
        .query_async(&mut c)
        .await
        .unwrap();
}

/// On a Cluster, a heartbeat of a ticket minted before its shard was
/// fenced is refused even once the instance knows the shard's new epoch:
/// the advance compares the presented ticket's epoch, as a check does.
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_ticket_from_before_a_fence_cannot_heartbeat_after_it() {
    let prefix = unique("fence");
    let s = RedisReplayStore::cluster_builder(&SEEDS)
        .prefix(&prefix)
        .connect()
        .await
        .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`");
    let id = TicketId::random();
    let before = s.epoch_of(&id);
    let t = wall_ms();
    let first = AdvanceRequest {
        epoch: before,
        ..advance(&s, id, 0, t, 300_000)
    };
    assert!(matches!(
        s.advance(&first).await,
        Ok(Advance::Next { sequence: 1, .. })
    ));
    // The shard's primary is no longer its owner (as after a failover):
    // the next script there fences it.
    fence_shard_of(id).await;
    let old = AdvanceRequest {
        epoch: before,
        ..advance(&s, id, 1, t + 1_000, 300_000)
    };
    assert_eq!(s.advance(&old).await, Ok(Advance::Reset), "fenced");
    let after = s.epoch_of(&id);
    assert_ne!(after, before, "the store learnt the shard's new epoch");
    // The same old ticket again: still refused, though the instance now
    // knows the new epoch and the record is still there.
    assert_eq!(s.advance(&old).await, Ok(Advance::Reset));
    // A chain minted after the fence goes on.
    let fresh = TicketId::random();
    let new = AdvanceRequest {
        epoch: s.epoch_of(&fresh),
        ..advance(&s, fresh, 0, t + 2_000, 300_000)
    };
    assert!(matches!(s.advance(&new).await, Ok(Advance::Next { .. })));
    s.clear().await.unwrap();
}

/// On a Cluster, a stale sequence of a chain minted after a fence is
/// `Stale`, not `Reset`, also when asked through an instance that has not
/// learnt the shard's new epoch (its view lags; the presented epoch is the
/// shard's): the store, not that view, says which it was.
#[tokio::test]
#[ignore = "needs Redis Cluster"]
async fn a_lagging_instance_hears_stale_for_a_chain_minted_after_a_fence() {
    let prefix = unique("lag");
    let connect = || async {
        RedisReplayStore::cluster_builder(&SEEDS)
            .prefix(&prefix)
            .connect()
            .await
            .expect("this test needs the Redis Cluster of `.ci/redis-cluster start`")
    };
    let (learnt, lagging) = (connect().await, connect().await);
    let id = TicketId::random();
    let before = learnt.epoch_of(&id);
    assert_eq!(lagging.epoch_of(&id), before);
    let t = wall_ms();
    assert!(matches!(
        learnt
            .advance(&AdvanceRequest {
                epoch: before,
                ..advance(&learnt, id, 0, t, 300_000)
            })
            .await,
        Ok(Advance::Next { sequence: 1, .. })
    ));
    // The shard is fenced; `learnt` learns it from the refusal of a
    // ticket minted before.
    fence_shard_of(id).await;
    let old = AdvanceRequest {
        epoch: before,
        ..advance(&learnt, id, 1, t + 1_000, 300_000)
    };
    assert_eq!(learnt.advance(&old).await, Ok(Advance::Reset));
    let after = learnt.epoch_of(&id);
    assert_ne!(after, before);
    assert_eq!(lagging.epoch_of(&id), before, "nothing taught it yet");
    // A chain on the same shard (the shard is the id's first byte) minted
    // after the fence by `learnt`, renewed twice.
    let mut fresh = TicketId::random();
    fresh.0[0] = id.0[0];
    assert_eq!(learnt.epoch_of(&fresh), after, "the same shard");
    let minted = |sequence, at| AdvanceRequest {
        epoch: after,
        ..advance(&learnt, fresh, sequence, at, 300_000)
    };
    for n in 0..2u32 {
        assert!(matches!(
            learnt.advance(&minted(n, t + 2_000 + i64::from(n))).await,
            Ok(Advance::Next { .. })
        ));
    }
    // Sequence 0 through the lagging instance, past the grace: stale, in
    // the shard's current epoch, and nothing was learnt from it.
    assert_eq!(
        lagging.advance(&minted(0, t + 9_000)).await,
        Ok(Advance::Stale)
    );
    assert_eq!(lagging.epoch_of(&fresh), before, "still lagging");
    // The fenced chain's old ticket through it: `Reset`, and now it knows.
    assert_eq!(lagging.advance(&old).await, Ok(Advance::Reset));
    assert_eq!(lagging.epoch_of(&id), after);
    learnt.clear().await.unwrap();
}

/// A ticket minted before a single Redis lost its data is refused even
/// once this instance has learnt the new epoch from another request: the
/// check and the advance send the ticket's epoch, not the instance's (the
/// verifier compares the two first, but the instance can learn the new
/// epoch between that comparison and the script; the old ticket would then
/// be checked against the new, empty records, a booked ticket fresh again).
#[tokio::test]
#[ignore = "needs Redis"]
async fn an_old_ticket_is_refused_after_the_instance_learnt_the_new_epoch() {
    let prefix = unique("learnt");
    let s = store(&prefix, 1_000).await;
    let mut c = conn().await;
    let id = TicketId::random();
    let t = wall_ms();
    let first = advance(&s, id, 0, t, 300_000);
    assert!(matches!(
        s.advance(&first).await,
        Ok(Advance::Next { sequence: 1, .. })
    ));
    let renewed = check(&s, id, 1, t + 1_000);
    assert_eq!(s.check(&renewed).await, Ok(ReplayVerdict::Fresh));
    let old = s.epoch();
    // Redis comes back empty: every key of the store is gone.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
    // Another request's answer teaches this instance the new epoch.
    let other = TicketId::random();
    assert_eq!(
        s.advance(&advance(&s, other, 0, t + 1_500, 300_000)).await,
        Ok(Advance::Reset)
    );
    assert_ne!(s.epoch(), old, "the instance learnt the new epoch");
    // The old chain's tickets, minted under the old epoch, stay refused.
    assert_eq!(
        s.check(&renewed).await,
        Ok(ReplayVerdict::Replayed(ReplayReason::StateReset))
    );
    let next = AdvanceRequest {
        sequence: 1,
        now_ms: t + 2_000,
        ..first
    };
    assert_eq!(s.advance(&next).await, Ok(Advance::Reset));
    s.clear().await.unwrap();
}
