//! The room's state in Redis (feature `redis`), so a client can join on one
//! instance and heart-beat on another.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Script, Value};

use super::schedule::AdmissionRule;
use super::state::{
    BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, Place, RoomState, RoomStats,
};
use crate::error::StoreError;
use crate::replay::RedisReplayStore;
use crate::ticket::{Binding, QueueId, TicketId};

/// Shared by every script: `KEYS` are the queue's meta hash, pre-queue
/// list, waiting zset (score: position), admitted zset (score: deadline),
/// chains hash (room binding → `tid|position|status|deadline|facts`, the
/// facts being `sequence:joined:expires:admitted-from` with `-` for no
/// admitted-from, see [`ChainFacts`]) and
/// deadlines zset (every chain by deadline, for the sweep). `ARGV[1..6]`
/// are the admission rule: now, rate, burst, admitted cap (-1: none),
/// opening time, shuffle seed. The functions mirror `MemoryRoomState`.
const PRELUDE: &str = r"
local now = tonumber(ARGV[1])
local function get_chain(b)
  local v = redis.call('HGET', KEYS[5], b)
  if not v then return nil end
  local tid, pos, st, live, facts = string.match(v, '^([^|]*)|(%d+)|(%a)|(%-?%d+)|(.*)$')
  return {tid = tid, pos = tonumber(pos), st = st, live = tonumber(live), facts = facts}
end
local function put_chain(b, c)
  redis.call('HSET', KEYS[5], b, string.format('%s|%d|%s|%d|%s', c.tid, c.pos, c.st, c.live, c.facts))
  redis.call('ZADD', KEYS[6], c.live, b)
end
local function is_live(b)
  local c = get_chain(b)
  return c ~= nil and c.live > now
end
local function drop(b)
  redis.call('HDEL', KEYS[5], b)
  redis.call('ZREM', KEYS[6], b)
end
local function remove(b)
  local c = get_chain(b)
  if not c then return end
  drop(b)
  if c.st == 'p' then
    redis.call('LREM', KEYS[2], 0, b)
  elseif c.st == 'w' then
    redis.call('ZREM', KEYS[3], b)
  else
    redis.call('ZREM', KEYS[4], b)
  end
end
local function opened()
  return redis.call('HGET', KEYS[1], 'opened') == '1'
end
local function open_if_due()
  if opened() or now < tonumber(ARGV[5]) then return end
  redis.call('HSET', KEYS[1], 'opened', '1')
  local pre = redis.call('LRANGE', KEYS[2], 0, -1)
  redis.call('DEL', KEYS[2])
  local live = {}
  for _, b in ipairs(pre) do
    if is_live(b) then table.insert(live, b) else drop(b) end
  end
  math.randomseed(tonumber(ARGV[6]))
  for i = #live, 2, -1 do
    local j = math.random(i)
    live[i], live[j] = live[j], live[i]
  end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
  for _, b in ipairs(live) do
    last = last + 1
    local c = get_chain(b)
    c.pos, c.st = last, 'w'
    put_chain(b, c)
    redis.call('ZADD', KEYS[3], last, b)
  end
  redis.call('HSET', KEYS[1], 'last', last)
end
local function admit()
  for _, b in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)) do
    redis.call('ZREM', KEYS[4], b)
    drop(b)
  end
  local per_sec, burst, cap = tonumber(ARGV[2]), math.max(tonumber(ARGV[3]), 1), tonumber(ARGV[4])
  local paused = not (per_sec > 0)
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
  local last_ms = redis.call('HGET', KEYS[1], 'last_ms')
  if not last_ms then
    tokens = burst
    last_ms = now
  else
    last_ms = tonumber(last_ms)
    if not paused then
      -- TokenBucket::refill: what waiting people earned is kept, up to one
      -- per waiting place; nothing is earned before the opening.
      local cap = math.max(burst, redis.call('ZCARD', KEYS[3]))
      local from = math.max(last_ms, tonumber(ARGV[5]))
      tokens = math.min(tokens + per_sec * math.max(now - from, 0) / 1000, cap)
    end
    last_ms = math.max(last_ms, now)
  end
  if not paused and opened() then
    while tokens >= 1 do
      if cap >= 0 and redis.call('ZCARD', KEYS[4]) >= cap then break end
      local front = redis.call('ZRANGE', KEYS[3], 0, 0)
      if #front == 0 then break end
      local b = front[1]
      redis.call('ZREM', KEYS[3], b)
      local c = get_chain(b)
      if c then
        if c.live <= now then
          drop(b)
        else
          c.st = 'a'
          put_chain(b, c)
          redis.call('ZADD', KEYS[4], c.live, b)
          redis.call('HINCRBY', KEYS[1], 'admitted_total', 1)
          tokens = tokens - 1
        end
      end
    end
  end
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'last_ms', string.format('%d', last_ms))
end
local function place(b)
  local c = get_chain(b)
  local ahead = 0
  if c.st == 'w' then
    for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. c.pos)) do
      if is_live(w) then ahead = ahead + 1 end
    end
  end
  local admitted = 0
  if c.st == 'a' then admitted = 1 end
  return {c.tid, c.pos, ahead, admitted, c.live, c.facts}
end
";

/// `ARGV[7..9]`: binding, provisional deadline, waiting cap (-1: none).
/// Returns `{0, place}` new, `{1, place}` existing, `{2}` full.
const JOIN: &str = r"
open_if_due()
admit()
local b, max_waiting = ARGV[7], tonumber(ARGV[9])
if is_live(b) then
  return {1, place(b)}
end
remove(b)
if max_waiting >= 0 and redis.call('ZCARD', KEYS[3]) + redis.call('LLEN', KEYS[2]) >= max_waiting then
  return {2}
end
local c = {tid = '', pos = 0, st = 'p', live = tonumber(ARGV[8]), facts = ''}
if opened() then
  c.pos = redis.call('HINCRBY', KEYS[1], 'last', 1)
  c.st = 'w'
  redis.call('ZADD', KEYS[3], c.pos, b)
else
  redis.call('RPUSH', KEYS[2], b)
end
put_chain(b, c)
admit()
return {0, place(b)}
";

/// `ARGV[7..8]`: binding, ticket id. Returns `{place}` or `{}`.
const BEAT: &str = r"
open_if_due()
admit()
local b = ARGV[7]
local c = get_chain(b)
if not c or c.tid ~= ARGV[8] then return {} end
if c.live <= now then
  remove(b)
  return {}
end
return {place(b)}
";

/// `ARGV[7..10]`: binding, ticket id, facts, deadline. Facts of a later
/// sequence than the recorded ones are kept.
const RECORD: &str = r"
local b = ARGV[7]
local c = get_chain(b)
if not c or (c.tid ~= '' and c.tid ~= ARGV[8]) then return 0 end
local old = c.live
local function seq(f) return tonumber(string.match(f, '^(%d+):') or '-1') end
if seq(ARGV[9]) >= seq(c.facts) then c.facts = ARGV[9] end
c.tid, c.live = ARGV[8], math.max(old, tonumber(ARGV[10]))
put_chain(b, c)
if c.st == 'a' and c.live ~= old then
  redis.call('ZADD', KEYS[4], c.live, b)
end
return 1
";

/// `ARGV[7]`: binding.
const LEAVE: &str = r"
remove(ARGV[7])
return 1
";

const SWEEP: &str = r"
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
for _, b in ipairs(dead) do remove(b) end
return #dead
";

const STATS: &str = r"
return {
  redis.call('ZCARD', KEYS[3]) + redis.call('LLEN', KEYS[2]),
  redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf'),
  tonumber(redis.call('HGET', KEYS[1], 'admitted_total') or '0'),
  redis.call('HLEN', KEYS[5]),
  tonumber(redis.call('HGET', KEYS[1], 'last') or '0'),
  opened() and 1 or 0,
}
";

/// The room's state in Redis (feature `redis`): every instance of a
/// waiting room that uses the same Redis and prefix shares positions, the
/// serving counter, the admission rate (one token bucket) and the live
/// counts, so a client may join on one instance and heart-beat on another.
///
/// Each [`RoomState`] call is one Lua script (one round trip, atomic) that
/// mirrors [`MemoryRoomState`](super::MemoryRoomState), with the call
/// timeout of the replay store it was made from. A queue's keys share the
/// hash tag `{<queue id>}`. Differences from the in-memory state: the
/// opening shuffle draws its order with Redis's script PRNG seeded from the
/// rule's seed (a uniform order, not the same order); and a long pre-queue
/// or deep queue makes one script long (the opening places everyone at
/// once, and counting the live people ahead walks the places in front), so
/// keep `max_waiting` at what one Redis can walk.
#[derive(Clone)]
pub struct RedisRoomState {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

#[derive(Clone)]
struct Scripts {
    join: Script,
    beat: Script,
    record: Script,
    leave: Script,
    sweep: Script,
    stats: Script,
}

impl std::fmt::Debug for RedisRoomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRoomState")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

fn backend(e: ::redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis {:?} error", e.kind()))
}

fn bad_answer() -> StoreError {
    StoreError::Backend("redis room script answer".into())
}

impl RedisRoomState {
    /// A room state on the connection, key prefix and timeout of `store`.
    pub fn new(store: &RedisReplayStore) -> Self {
        Self {
            conn: store.connection(),
            prefix: store.prefix().to_owned(),
            timeout: store.call_timeout(),
            scripts: Scripts {
                join: script(JOIN),
                beat: script(BEAT),
                record: script(RECORD),
                leave: script(LEAVE),
                sweep: script(SWEEP),
                stats: script(STATS),
            },
        }
    }

    fn keys(&self, queue: &str) -> [String; 6] {
        let base = format!("{}:room:{{{}}}", self.prefix, QueueId::from_name(queue));
        ["meta", "pre", "waiting", "admitted", "chains", "deadlines"].map(|k| format!("{base}:{k}"))
    }

    /// Runs `script` for `queue` with the rule's arguments followed by
    /// `extra`, as one round trip under the timeout. The future owns its
    /// arguments; `invoke_async` reloads the script after a Redis restart.
    fn run(
        &self,
        script: &Script,
        queue: &str,
        rule: RuleArgs,
        extra: Vec<String>,
    ) -> impl Future<Output = Result<Value, StoreError>> + Send + 'static {
        let keys = self.keys(queue);
        let script = script.clone();
        let mut conn = self.conn.clone();
        let timeout = self.timeout;
        async move {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(rule.now_ms)
                .arg(rule.per_sec)
                .arg(rule.burst)
                .arg(rule.max_admitted)
                .arg(rule.opens_at_ms)
                .arg(rule.seed);
            for a in &extra {
                inv.arg(a);
            }
            tokio::time::timeout(timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(backend)
        }
    }

    /// Deletes every key of `queue`'s room state (tests, deliberate resets).
    pub async fn clear(&self, queue: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let keys = self.keys(queue);
        tokio::time::timeout(
            self.timeout,
            ::redis::cmd("UNLINK")
                .arg(&keys[..])
                .query_async::<()>(&mut conn),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(backend)
    }
}

/// The admission rule as script arguments.
#[derive(Debug, Clone, Copy)]
struct RuleArgs {
    now_ms: i64,
    per_sec: f64,
    burst: f64,
    max_admitted: i64,
    opens_at_ms: i64,
    seed: u32,
}

fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-1e15, 1e15)
    }
}

impl RuleArgs {
    fn of(rule: &AdmissionRule) -> Self {
        Self {
            now_ms: rule.now_ms,
            per_sec: finite(rule.per_sec),
            burst: finite(rule.burst),
            max_admitted: rule
                .max_admitted
                .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
            opens_at_ms: rule.opens_at_ms,
            // Redis's script PRNG takes a number; 32 bits of the seed.
            seed: (rule.shuffle_seed >> 32) as u32 ^ rule.shuffle_seed as u32,
        }
    }

    /// For calls without a rule (record, leave, sweep, stats): only `now`.
    fn at(now_ms: i64) -> Self {
        Self {
            now_ms,
            per_sec: 0.0,
            burst: 1.0,
            max_admitted: -1,
            opens_at_ms: i64::MAX,
            seed: 0,
        }
    }
}

fn int(v: &Value) -> Result<i64, StoreError> {
    ::redis::from_redis_value(v).map_err(backend)
}

fn parse_ticket_id(hex: &str) -> Option<TicketId> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TicketId(id))
}

fn parse_place(v: &Value) -> Result<Place, StoreError> {
    let Value::Array(items) = v else {
        return Err(bad_answer());
    };
    let [tid, pos, ahead, admitted, live, facts] = items.as_slice() else {
        return Err(bad_answer());
    };
    let tid: String = ::redis::from_redis_value(tid).map_err(backend)?;
    let facts: String = ::redis::from_redis_value(facts).map_err(backend)?;
    let chain = match parse_ticket_id(&tid) {
        Some(id) => Some(parse_facts(id, &facts).ok_or_else(bad_answer)?),
        None => None,
    };
    Ok(Place {
        chain,
        position: u64::try_from(int(pos)?).map_err(|_| bad_answer())?,
        ahead: u64::try_from(int(ahead)?).map_err(|_| bad_answer())?,
        admitted: int(admitted)? == 1,
        live_until_ms: int(live)?,
    })
}

/// `sequence:joined:expires:admitted-from` (`-`: not admitted).
fn format_facts(f: &ChainFacts) -> String {
    match f.admitted_from_ms {
        Some(a) => format!("{}:{}:{}:{a}", f.sequence, f.joined_at_ms, f.expires_at_ms),
        None => format!("{}:{}:{}:-", f.sequence, f.joined_at_ms, f.expires_at_ms),
    }
}

fn parse_facts(ticket_id: TicketId, text: &str) -> Option<ChainFacts> {
    let mut parts = text.split(':');
    let mut next = || parts.next();
    let sequence = next()?.parse().ok()?;
    let joined_at_ms = next()?.parse().ok()?;
    let expires_at_ms = next()?.parse().ok()?;
    let admitted_from_ms = match next()? {
        "-" => None,
        a => Some(a.parse().ok()?),
    };
    Some(ChainFacts {
        ticket_id,
        sequence,
        joined_at_ms,
        expires_at_ms,
        admitted_from_ms,
    })
}

fn items(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(bad_answer()),
    }
}

fn hex_binding(b: &Binding) -> String {
    b.to_string()
}

impl RoomState for RedisRoomState {
    fn join(
        &self,
        queue: &str,
        join: &JoinRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        let max_waiting = join
            .max_waiting
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let fut = self.run(
            &self.scripts.join,
            queue,
            RuleArgs::of(rule),
            vec![
                hex_binding(&join.binding),
                join.live_until_ms.to_string(),
                max_waiting.to_string(),
            ],
        );
        async move {
            let reply = items(fut.await?)?;
            match reply.as_slice() {
                [code, place] if int(code)? == 0 => Ok(Joined::New(parse_place(place)?)),
                [code, place] if int(code)? == 1 => Ok(Joined::Existing(parse_place(place)?)),
                [code] if int(code)? == 2 => Ok(Joined::Full),
                _ => Err(bad_answer()),
            }
        }
    }

    fn beat(
        &self,
        queue: &str,
        beat: &BeatRecord,
        rule: &AdmissionRule,
    ) -> impl Future<Output = Result<Option<Place>, StoreError>> + Send {
        let fut = self.run(
            &self.scripts.beat,
            queue,
            RuleArgs::of(rule),
            vec![hex_binding(&beat.binding), beat.ticket_id.to_string()],
        );
        async move {
            let reply = items(fut.await?)?;
            match reply.as_slice() {
                [] => Ok(None),
                [place] => parse_place(place).map(Some),
                _ => Err(bad_answer()),
            }
        }
    }

    fn record(
        &self,
        queue: &str,
        issued: &IssuedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let fut = self.run(
            &self.scripts.record,
            queue,
            RuleArgs::at(0),
            vec![
                hex_binding(&issued.binding),
                issued.chain.ticket_id.to_string(),
                format_facts(&issued.chain),
                issued.live_until_ms.to_string(),
            ],
        );
        async move { fut.await.map(|_| ()) }
    }

    fn leave(
        &self,
        queue: &str,
        binding: &Binding,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let fut = self.run(
            &self.scripts.leave,
            queue,
            RuleArgs::at(0),
            vec![hex_binding(binding)],
        );
        async move { fut.await.map(|_| ()) }
    }

    fn sweep(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let fut = self.run(&self.scripts.sweep, queue, RuleArgs::at(now_ms), vec![]);
        async move { u64::try_from(int(&fut.await?)?).map_err(|_| bad_answer()) }
    }

    fn stats(
        &self,
        queue: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<RoomStats, StoreError>> + Send {
        let fut = self.run(&self.scripts.stats, queue, RuleArgs::at(now_ms), vec![]);
        async move {
            let reply = items(fut.await?)?;
            let [waiting, alive, total, entries, last, opened] = reply.as_slice() else {
                return Err(bad_answer());
            };
            let count = |v: &Value| u64::try_from(int(v)?).map_err(|_| bad_answer());
            Ok(RoomStats {
                waiting: count(waiting)?,
                admitted_alive: count(alive)?,
                admitted_total: count(total)?,
                entries: count(entries)?,
                last_position: u64::try_from(int(last)?).map_err(|_| bad_answer())?,
                opened: int(opened)? == 1,
            })
        }
    }
}
