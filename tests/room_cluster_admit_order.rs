//! Admission in place order on a Redis Cluster (feature `redis`; ignored:
//! needs the Cluster of `.ci/redis-cluster start` on 127.0.0.1:7000-7005,
//! and fails when it is absent or not whole).
//!
//! The people's records are spread over the 3 primaries, so one tick's
//! admissions go to different nodes. The primary holding the front person
//! stops taking writes (`CLIENT PAUSE <ms> WRITE`: write scripts wait,
//! reads go on) while the tick admits several people, and every person's
//! record is read meanwhile: nobody may be admitted while a person with a
//! smaller place still waits (issue 11: admissions sent together landed
//! out of order on the Cluster, place 2 admitted before place 1). Once
//! with a timeout longer than the pause (the tick waits for place 1, then
//! admits in order), once with a shorter one (place 1's admission times
//! out: nobody behind it is admitted by that tick). In the first, a
//! heartbeat of someone behind place 1 during the tick answers at once:
//! its own tick only reads, it does not repeat the running one's work.
//!
//! The tick's liveness checks are scripts too (a check deletes a dead
//! record), so they wait on a paused node as well. To pause the front
//! person's primary after its check was answered and before its admission
//! is sent, another primary is paused first: it holds the check of its own
//! people, and so the tick, until the front person's primary is paused.
//! The queue's own slot is on the third primary, never paused.
//!
//! The test holds the Cluster's exclusive turn (`tests/cluster_support`)
//! and unpauses both nodes when it ends, also when it fails.
#![cfg(feature = "redis")]

mod cluster_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, RedisRoomState,
    RoomState,
};
use queuegate::ticket::{Binding, QueueId};
use queuegate::StoreError;
use queuegate::TicketId;
use tokio::task::JoinHandle;

use cluster_support::{cli, primaries, topology_turn, wait_whole, NEEDED, SEEDS};

const T: i64 = 1_700_000_000_000;
/// The tick's batch (`room::redis::BATCH`): a first tick sweeps this many
/// places and moves the sweep's cursor past them, so the next tick checks
/// no one but the front it admits from.
const PEOPLE: usize = 1000;
/// The front places read while the front person's primary is paused.
const WATCHED: usize = 64;
/// Admissions per second from the second tick on, 2 s after the first
/// (whose bucket holds 1 token, admission paused): 17 tokens.
const PER_SEC: f64 = 8.0;
/// How many the second tick admits.
const ADMITS: usize = 17;

fn rule(now_ms: i64, per_sec: f64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec,
        burst: per_sec.max(1.0),
        max_admitted: None,
        opens_at_ms: i64::MIN,
        shuffle_seed: 1,
    }
}

fn facts(ticket_id: TicketId) -> ChainFacts {
    ChainFacts {
        ticket_id,
        sequence: 0,
        joined_at_ms: T,
        expires_at_ms: T + 3_600_000,
        admitted_from_ms: None,
        epoch: Some(11),
    }
}

/// Which primary serves which slots: `(first, last, port)`.
fn slot_map() -> Vec<(u16, u16, u16)> {
    let nodes = cli(primaries()[0], &["cluster", "nodes"]).expect(NEEDED);
    let mut map = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        let port: u16 = fields[1]
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("a node's port");
        for range in &fields[8..] {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse(), hi.parse()) {
                map.push((lo, hi, port));
            }
        }
    }
    map
}

/// The primary serving `key`'s slot.
fn owner(map: &[(u16, u16, u16)], key: &str) -> u16 {
    let slot: u16 = cli(map[0].2, &["cluster", "keyslot", key])
        .expect(NEEDED)
        .trim()
        .parse()
        .expect("a slot number");
    map.iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
        .map(|m| m.2)
        .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
}

/// Unpauses its node when dropped (also when the test fails).
struct Paused(u16);

impl Paused {
    async fn new(port: u16, ms: u64) -> Self {
        let mut conn = node(port).await;
        let () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .arg("WRITE")
            .query_async(&mut conn)
            .await
            .unwrap();
        Paused(port)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let done = cli(self.0, &["client", "unpause"]);
        if !std::thread::panicking() {
            assert!(done.is_some(), "CLIENT UNPAUSE on {}", self.0);
        }
    }
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect(NEEDED)
}

/// Clients waiting on `port` (a paused node holds its writers there).
async fn blocked_clients(port: u16) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut node(port).await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("blocked_clients:"))
        .and_then(|n| n.parse().ok())
        .expect("INFO clients has blocked_clients")
}

/// Each watched person's status (`w` waiting, `a` admitted), read with
/// `HMGET` as a heartbeat reads it (a read: a paused node answers it),
/// from the last place to the first. Statuses only go from waiting to
/// admitted, so a person read admitted before a smaller place was read
/// waiting was admitted while that place still waited.
async fn statuses(
    cluster: &mut redis::cluster_async::ClusterConnection,
    keys: &[String],
) -> Vec<String> {
    let mut out = vec![String::new(); keys.len()];
    for (i, key) in keys.iter().enumerate().rev() {
        let (place, st): (Option<usize>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("place")
            .arg("st")
            .query_async(cluster)
            .await
            .unwrap();
        assert_eq!(place, Some(i + 1), "{key} keeps its place");
        out[i] = st.expect("a live record");
    }
    out
}

/// The places (1-based) admitted while a smaller place was still waiting.
fn out_of_order(st: &[String]) -> Vec<usize> {
    st.iter()
        .enumerate()
        .filter(|&(i, s)| s == "a" && st[..i].iter().any(|e| e == "w"))
        .map(|(i, _)| i + 1)
        .collect()
}

/// A queue of [`PEOPLE`] waiting, its first tick done, and where its
/// people are.
struct Queue {
    state: RedisRoomState,
    queue: String,
    /// Reads the people's records wherever they are.
    cluster: redis::cluster_async::ClusterConnection,
    /// The person records of places 1 to [`WATCHED`].
    watched: Vec<String>,
    /// The primary of each watched record.
    owners: Vec<u16>,
    /// The primary of place 1 (not the queue's).
    front_node: u16,
    /// The primary that holds neither place 1 nor the queue's slot.
    other: u16,
    /// The watched people's heartbeats, by place - 1.
    beats: Vec<BeatRecord>,
}

/// Fills a queue whose first person is on another primary than the
/// queue's slot; the room's calls time out after `timeout`.
async fn queue(timeout: Duration) -> Queue {
    let prefix = format!("qg-admit-order-{}", TicketId::random());
    let state = RedisRoomState::cluster_builder(&SEEDS)
        .prefix(&prefix)
        .timeout(timeout)
        .connect()
        .await
        .expect(NEEDED);
    let queue = format!("order-{}", TicketId::random());
    let qid = QueueId::from_name(&queue);
    let person_key = |b: &Binding| format!("{prefix}:rp:{{{b}}}:{qid}");
    let map = slot_map();
    let queue_node = owner(&map, &format!("{prefix}:room:{{{qid}}}:meta"));

    let first = loop {
        let b = Binding(TicketId::random().0);
        if owner(&map, &person_key(&b)) != queue_node {
            break b;
        }
    };
    let paused = rule(T, 0.0);
    let mut beats = HashMap::new();
    for i in 0..PEOPLE {
        let binding = if i == 0 {
            first
        } else {
            Binding(TicketId::random().0)
        };
        let join = JoinRecord {
            binding,
            live_until_ms: T + 600_000,
            max_waiting: None,
        };
        let Joined::New(place) = state.join(&queue, &join, &paused).await.unwrap() else {
            panic!("a new place");
        };
        assert_eq!(place.position, i as u64 + 1);
        let ticket_id = TicketId::random();
        let issued = IssuedRecord {
            binding,
            chain: facts(ticket_id),
            live_until_ms: T + 600_000,
        };
        state.record(&queue, &issued).await.unwrap();
        beats.insert(person_key(&binding), BeatRecord { binding, ticket_id });
    }
    // Sweeps all the places: the next tick sweeps none.
    state.tick_now(&queue, &paused).await.unwrap();

    let mut cluster = redis::cluster::ClusterClient::new(SEEDS.to_vec())
        .unwrap()
        .get_async_connection()
        .await
        .expect(NEEDED);
    let keys = scan_people(&prefix, &qid).await;
    assert_eq!(keys.len(), PEOPLE, "one record per person");
    let mut by_place = BTreeMap::new();
    for key in keys {
        let place: usize = redis::cmd("HGET")
            .arg(&key)
            .arg("place")
            .query_async(&mut cluster)
            .await
            .unwrap();
        by_place.insert(place, key);
    }
    assert!(
        by_place.keys().copied().eq(1..=PEOPLE),
        "places 1 to {PEOPLE}"
    );
    let watched: Vec<String> = by_place.into_values().take(WATCHED).collect();
    assert_eq!(watched[0], person_key(&first));
    let st = statuses(&mut cluster, &watched).await;
    assert!(st.iter().all(|s| s == "w"), "nobody admitted yet: {st:?}");

    let owners: Vec<u16> = watched.iter().map(|k| owner(&map, k)).collect();
    let front_node = owners[0];
    let other = primaries()
        .into_iter()
        .find(|p| *p != front_node && *p != queue_node)
        .expect("3 primaries");
    assert!(
        owners[1..].contains(&other),
        "someone near the front on {other}: {owners:?}"
    );
    assert!(
        owners[1..=ADMITS].iter().any(|p| *p != front_node),
        "someone admitted next is on another primary than place 1: {owners:?}"
    );
    let beats = watched.iter().map(|k| beats[k]).collect();
    Queue {
        state,
        queue,
        cluster,
        watched,
        owners,
        front_node,
        other,
        beats,
    }
}

/// Starts a tick that admits [`ADMITS`] people, and pauses writes on the
/// front person's primary for `ms` once its checks were answered, before
/// any admission is sent.
async fn tick_with_front_paused(
    q: &Queue,
    ms: u64,
) -> (JoinHandle<Result<(), StoreError>>, Paused) {
    // The other primary holds its people's checks: the tick waits there.
    let hold = Paused::new(q.other, 4_000).await;
    let tick = {
        let state = q.state.clone();
        let queue = q.queue.clone();
        tokio::spawn(async move { state.tick_now(&queue, &rule(T + 2_000, PER_SEC)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while blocked_clients(q.other).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the tick's checks reach the paused primary {}",
            q.other
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The front primary answered its checks (sent with the held ones);
    // now it takes no writes, and the tick goes on to admit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let front = Paused::new(q.front_node, ms).await;
    drop(hold);
    (tick, front)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis Cluster"]
async fn a_paused_front_primary_holds_every_admission_behind_it() {
    let _turn = topology_turn();
    wait_whole(Duration::from_secs(30));
    // Every call may wait for the pause (5 s) without failing.
    let mut q = queue(Duration::from_secs(10)).await;
    let (tick, front) = tick_with_front_paused(&q, 5_000).await;

    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        let st = statuses(&mut q.cluster, &q.watched).await;
        let bad = out_of_order(&st);
        assert!(
            bad.is_empty(),
            "admitted while a smaller place waits (place 1's primary {} paused): places {bad:?}, statuses by place {st:?}, primaries by place {:?}",
            q.front_node,
            q.owners
        );
        seen.push(st.iter().filter(|s| *s == "a").count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !tick.is_finished(),
        "the tick still waits on the paused front primary"
    );
    // Someone behind place 1, not on its primary (a heartbeat's read
    // waits there behind the tick's admission on the same connection),
    // heart-beats meanwhile, a tick due for it: that tick only reads (the
    // snapshot and the shared settings), it does not repeat the running
    // tick's checks and admissions over the same front (which would wait
    // for the paused primary too).
    let i = (1..WATCHED)
        .find(|&i| q.owners[i] != q.front_node)
        .expect("checked in `queue`");
    let beat = tokio::time::timeout(
        Duration::from_secs(2),
        q.state
            .beat(&q.queue, &q.beats[i], &rule(T + 3_000, PER_SEC)),
    )
    .await
    .expect("a heartbeat during the tick answers at once")
    .unwrap()
    .expect("alive");
    assert!(
        !beat.admitted && beat.position == i as u64 + 1,
        "place {}: {beat:?}",
        i + 1
    );
    drop(front);
    tick.await.unwrap().unwrap();

    let st = statuses(&mut q.cluster, &q.watched).await;
    let admitted = st.iter().filter(|s| *s == "a").count();
    assert_eq!(out_of_order(&st), Vec::<usize>::new(), "{st:?}");
    assert_eq!(
        admitted, ADMITS,
        "the tick's tokens, from the front: {st:?}"
    );
    println!("admitted during the pause, per read: {seen:?}; after it: {admitted}");
    q.state.clear(&q.queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis Cluster"]
async fn an_admission_that_times_out_ends_the_batch() {
    let _turn = topology_turn();
    wait_whole(Duration::from_secs(30));
    // Place 1's admission times out (2 s) long before the pause (8 s) ends.
    let mut q = queue(Duration::from_secs(2)).await;
    let (tick, front) = tick_with_front_paused(&q, 8_000).await;
    let result = tokio::time::timeout(Duration::from_secs(5), tick)
        .await
        .expect("the tick ends while place 1's primary is still paused")
        .unwrap();
    // The place whose outcome is unknown waits for the next tick; the
    // tick itself did its part.
    assert!(result.is_ok(), "{result:?}");
    let st = statuses(&mut q.cluster, &q.watched).await;
    assert_eq!(
        out_of_order(&st),
        Vec::<usize>::new(),
        "admitted behind place 1, whose admission timed out (its primary {} paused): statuses by place {st:?}, primaries by place {:?}",
        q.front_node,
        q.owners
    );
    assert!(st.iter().all(|s| s == "w"), "{st:?}");
    drop(front);
    q.state.clear(&q.queue).await.unwrap();
}

/// The people's records of the queue, from every primary.
async fn scan_people(prefix: &str, qid: &QueueId) -> Vec<String> {
    let mut out = Vec::new();
    for port in primaries() {
        let mut conn = node(port).await;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:rp:*:{qid}"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    out
}
