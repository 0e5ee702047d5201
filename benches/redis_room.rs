//! Redis-side cost of a room heartbeat by queue depth, beside a plain SET,
//! measured the way the issue asks: `CONFIG RESETSTAT`, then the
//! microseconds Redis itself spent per call (`INFO commandstats`), so the
//! shared machine's noise and the client stay out of the figure.
//!
//! Run: `cargo bench --features redis --bench redis_room`. The bench starts
//! its own `redis-server` on 127.0.0.1:7010 (no persistence) and stops it.
//! Depths: 1,000 and 100,000 waiting (`QG_ROOM_BENCH_DEPTHS=1000,100000,1000000`
//! for the million: the fill takes minutes). For each depth it joins that
//! many people through `RedisRoomState` (the join flood, with
//! `SLOWLOG` catching any command of 10 ms or more), then runs heartbeats
//! of the person at place 2 and of the last one at the same instant (no
//! tick due: each heartbeat is one script on its person's key), then as
//! many `SET`s.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use queuegate::room::{
    AdmissionRule, BeatRecord, ChainFacts, IssuedRecord, JoinRecord, RedisRoomState, RoomState,
};
use queuegate::ticket::Binding;
use queuegate::TicketId;

const PORT: u16 = 7010;
const T: i64 = 1_700_000_000_000;
const BEATS: u32 = 3_000;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Result<Server, String> {
    let child = Command::new("redis-server")
        .args(["--port", &PORT.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--slowlog-log-slower-than", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
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

fn person(i: u64) -> (Binding, TicketId) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    let mut t = b;
    t[15] ^= 0x55;
    (Binding(b), TicketId(t))
}

async fn join(s: &RedisRoomState, q: &str, i: u64) {
    let (binding, ticket_id) = person(i);
    let join = JoinRecord {
        binding,
        live_until_ms: T + 3_600_000,
        max_waiting: None,
    };
    s.join(q, &join, &rule()).await.expect("join");
    let chain = ChainFacts {
        ticket_id,
        sequence: 0,
        joined_at_ms: T,
        expires_at_ms: T + 7_200_000,
        admitted_from_ms: None,
    };
    let issued = IssuedRecord {
        binding,
        chain,
        live_until_ms: T + 3_600_000,
    };
    s.record(q, &issued).await.expect("record");
}

/// Microseconds Redis spent in `commands` since the last `RESETSTAT`
/// (`INFO commandstats`), and their calls.
async fn usec(conn: &mut redis::aio::MultiplexedConnection, commands: &[&str]) -> (f64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let field = |l: &str, name: &str| -> f64 {
        l.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let mut total = (0.0, 0);
    for c in commands {
        let prefix = format!("cmdstat_{c}:");
        if let Some(l) = info.lines().find(|l| l.starts_with(&prefix)) {
            total.0 += field(l, "usec");
            total.1 += field(l, "calls") as u64;
        }
    }
    total
}

async fn reset(conn: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("RESETSTAT");
}

/// `BEATS` heartbeats of one person as the engine makes them: the beat
/// (one `HMGET`) then the record of the next ticket (one script).
/// Returns the Redis-side microseconds per heartbeat. Beats and records
/// are counted in separate rounds: `commandstats` also counts the commands
/// a script runs inside it (its `HMGET`).
async fn per_beat(
    conn: &mut redis::aio::MultiplexedConnection,
    s: &RedisRoomState,
    q: &str,
    who: u64,
    round: u32,
) -> f64 {
    let (binding, ticket_id) = person(who);
    reset(conn).await;
    for _ in 0..BEATS {
        let place = s
            .beat(q, &BeatRecord { binding, ticket_id }, &rule())
            .await
            .expect("beat")
            .expect("alive");
        assert_eq!(place.position, who + 1);
    }
    let (beat_us, calls) = usec(conn, &["hmget"]).await;
    assert_eq!(calls, u64::from(BEATS), "one HMGET per beat, no tick");
    reset(conn).await;
    for k in 0..BEATS {
        let chain = ChainFacts {
            ticket_id,
            sequence: round * BEATS + k + 1,
            joined_at_ms: T,
            expires_at_ms: T + 7_200_000,
            admitted_from_ms: None,
        };
        let issued = IssuedRecord {
            binding,
            chain,
            live_until_ms: T + 3_600_000,
        };
        s.record(q, &issued).await.expect("record");
    }
    let (record_us, calls) = usec(conn, &["evalsha"]).await;
    assert_eq!(calls, u64::from(BEATS), "one script per record");
    (beat_us + record_us) / f64::from(BEATS)
}

async fn run(depths: &[u64]) -> Result<(), String> {
    let _server = start()?;
    let url = format!("redis://127.0.0.1:{PORT}/");
    let mut conn = redis::Client::open(url.as_str())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let s = RedisRoomState::builder(&url)
        .prefix("qg-bench-room")
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    println!("redis_room: Redis-side µs per heartbeat (HMGET + record script, INFO commandstats), min of 3 rounds of {BEATS}");
    println!(
        "  {:>9}  {:>10}  {:>10}  {:>8}  {:>9}  {:>9}  {:>8}",
        "waiting", "near µs", "far µs", "SET µs", "far/near", "far/SET", "slow≥10ms"
    );
    let mut first_far = None;
    for (n, &depth) in depths.iter().enumerate() {
        let q = format!("bench-{n}");
        let () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        // Places 1 and 2 and the last one in order; the rest concurrently.
        join(&s, &q, 0).await;
        join(&s, &q, 1).await;
        let mut i = 2;
        while i < depth - 1 {
            let end = (i + 256).min(depth - 1);
            join_all((i..end).map(|k| join(&s, &q, k))).await;
            i = end;
        }
        join(&s, &q, depth - 1).await;
        let fill = started.elapsed();
        let slow: u64 = redis::cmd("SLOWLOG")
            .arg("LEN")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        // Warm: the scripts are loaded, the tick of this instant has run.
        per_beat(&mut conn, &s, &q, 1, 0).await;
        // Near and far alternate (three rounds each, the least kept), so a
        // busy moment of the machine does not land on one side only.
        let (mut near, mut far) = (f64::MAX, f64::MAX);
        for round in 1..=3 {
            near = near.min(per_beat(&mut conn, &s, &q, 1, round).await);
            far = far.min(per_beat(&mut conn, &s, &q, depth - 1, round).await);
        }
        let mut set = f64::MAX;
        for _ in 0..3 {
            reset(&mut conn).await;
            for k in 0..BEATS {
                let () = redis::cmd("SET")
                    .arg(format!("qg-bench-set:{k}"))
                    .arg("x")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            set = set.min(usec(&mut conn, &["set"]).await.0 / f64::from(BEATS));
        }
        println!(
            "  {depth:>9}  {near:>10.2}  {far:>10.2}  {set:>8.2}  {:>9.2}  {:>9.2}  {slow:>8}   (fill {:.1} s)",
            far / near,
            far / set,
            fill.as_secs_f64()
        );
        let base = *first_far.get_or_insert(far);
        if n > 0 {
            println!(
                "             far at {depth} ÷ far at {}: {:.2}",
                depths[0],
                far / base
            );
        }
    }
    println!(
        "  targets: far/near ≤ 1.5, deepest ÷ 1,000 ≤ 1.5, heartbeat/SET ≤ 3.5, no command ≥ 10 ms"
    );
    Ok(())
}

fn main() {
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"redis_room".contains(&filter) {
            return;
        }
    }
    let depths: Vec<u64> = std::env::var("QG_ROOM_BENCH_DEPTHS")
        .ok()
        .map(|v| v.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000])
        .into_iter()
        .filter(|&d| d >= 2)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(&depths)) {
        println!("redis_room: SKIPPED, {e}");
    }
}
