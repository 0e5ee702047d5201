//! The opening of a pre-queue on Redis is cut into short scripts (feature
//! `redis`; needs the `redis-server` binary, installed by `.ci/run`;
//! ignored otherwise, and fails, not skips, when it is missing).
//!
//! One tick places a whole batch of the pre-queue, in draw order, but no
//! script it runs on the queue's slot acts on more than the tick's part
//! (`room::redis::APPLY_CHUNK`, 250 entries): every call is read back from
//! a private Redis's `SLOWLOG` with the threshold at 0, which keeps each
//! call's argument count.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use queuegate::room::{AdmissionRule, IssuedRecord, JoinRecord, Joined, RedisRoomState, RoomState};
use queuegate::ticket::{Binding, QueueId};
use queuegate::{ChainFacts, TicketId};
use redis::AsyncCommands;

/// `room::redis::APPLY_CHUNK`.
const PART: usize = 250;
/// `room::redis::BATCH`: the most pre-queue entries one tick places.
const BATCH: u32 = 1000;
const T: i64 = 1_700_000_000_000;
const OPENS: i64 = T + 60_000;
const PREFIX: &str = "qg-tick-parts";

/// A `redis-server` child on 127.0.0.1, killed on drop.
struct Server(Child);

impl Server {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs the redis-server binary on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rule(now_ms: i64) -> AdmissionRule {
    AdmissionRule {
        now_ms,
        per_sec: 0.0,
        burst: 1.0,
        max_admitted: None,
        opens_at_ms: OPENS,
        shuffle_seed: 1,
    }
}

fn who(i: u32) -> (Binding, TicketId) {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b[15] = 0xc;
    let mut t = b;
    t[15] = 0x7;
    (Binding(b), TicketId(t))
}

/// How many arguments a `SLOWLOG` entry's command had: the log keeps 32,
/// the last of them saying how many more there were.
fn arg_count(args: &[String]) -> usize {
    let more = args.last().and_then(|a| {
        a.strip_prefix("... (")?
            .strip_suffix(" more arguments)")?
            .parse::<usize>()
            .ok()
    });
    match more {
        Some(n) => args.len() - 1 + n,
        None => args.len(),
    }
}

#[tokio::test]
#[ignore = "needs Redis"]
async fn an_opening_places_a_whole_batch_in_draw_order_in_short_scripts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server::start(port);
    let url = format!("redis://127.0.0.1:{port}/");
    let s = RedisRoomState::builder(&url)
        .prefix(PREFIX)
        .connect()
        .await
        .expect("the test's own Redis");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let q = "parts";
    for i in 0..BATCH {
        let (binding, ticket_id) = who(i);
        let join = JoinRecord {
            binding,
            live_until_ms: OPENS + 600_000,
            max_waiting: None,
        };
        let Joined::New(place) = s.join(q, &join, &rule(T + 1)).await.unwrap() else {
            panic!("a new join");
        };
        assert_eq!(place.position, 0, "the pre-queue has no places yet");
        let chain = ChainFacts {
            ticket_id,
            sequence: 0,
            joined_at_ms: T,
            expires_at_ms: OPENS + 3_600_000,
            admitted_from_ms: None,
            epoch: Some(1),
        };
        let issued = IssuedRecord {
            binding,
            chain,
            live_until_ms: OPENS + 600_000,
        };
        s.record(q, &issued).await.unwrap();
    }
    let tag = QueueId::from_name(q);
    let pre_key = format!("{PREFIX}:room:{{{tag}}}:pre");
    let waiting_key = format!("{PREFIX}:room:{{{tag}}}:waiting");
    let drawn: Vec<String> = conn.zrange(&pre_key, 0, -1).await.unwrap();
    assert_eq!(drawn.len(), BATCH as usize, "everyone in the pre-queue");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .arg("slowlog-max-len")
        .arg(100_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.tick_now(q, &rule(OPENS)).await.unwrap();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The whole batch was placed by the one tick, in draw order.
    let placed: Vec<String> = conn.zrange(&waiting_key, 0, -1).await.unwrap();
    assert_eq!(placed, drawn, "places follow the draw");
    let left: u64 = conn.zcard(&pre_key).await.unwrap();
    assert_eq!(left, 0);
    let stats = s.stats(q, OPENS).await.unwrap();
    assert_eq!(stats.waiting, u64::from(BATCH));
    assert!(stats.opened, "the opening is done");
    for i in [0, BATCH / 2, BATCH - 1] {
        let (binding, _) = who(i);
        let record: Vec<Option<String>> = conn
            .hget(format!("{PREFIX}:rp:{{{binding}}}:{tag}"), &["st"][..])
            .await
            .unwrap();
        assert_eq!(
            record,
            vec![Some("w".to_owned())],
            "person {i} knows it waits"
        );
    }

    // Every script on the queue's slot, by its argument count: EVALSHA,
    // the digest, the key count, 8 keys, the layout and now, 4 fixed
    // arguments and 3 section counts, then 3 arguments per entry.
    let bound = 2 + 1 + 8 + 2 + 4 + 3 + 3 * PART;
    let mut queue_calls = Vec::new();
    for e in entries {
        let redis::Value::Array(parts) = e else {
            panic!("a SLOWLOG entry is an array");
        };
        let args: Vec<String> = redis::from_redis_value(&parts[3]).unwrap();
        let command = args[0].to_ascii_lowercase();
        let on_queue = args.get(3).is_some_and(|k| k.contains(":room:{"));
        if (command == "evalsha" || command == "eval") && on_queue {
            queue_calls.push(arg_count(&args));
        }
    }
    let longest = queue_calls.iter().copied().max().unwrap_or(0);
    assert!(
        longest <= bound,
        "a script on the queue's slot took {longest} arguments (at most {bound})"
    );
    let parts = queue_calls.iter().filter(|&&n| n > 3 * PART / 2).count();
    assert!(
        parts >= BATCH as usize / PART,
        "the batch went in {parts} parts of more than half a part: {queue_calls:?}"
    );
}
