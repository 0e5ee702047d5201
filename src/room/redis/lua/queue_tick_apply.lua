-- The admission tick, step 2 of 3: applies what the people's slots said,
-- places a batch of the pre-queue in draw order (the opening, cut into
-- bounded batches), refills the admission bucket and picks the front
-- places to admit. The instance sends the tick's entries in parts of at
-- most `APPLY_CHUNK` (so no call of this script is long); only the last
-- part finishes the tick. ARGV: [3] instance id, [4] most admissions per
-- tick, [5] dead places skippable per tick, [6] empty for a part that
-- does not finish the tick, else the sweep cursor to keep (0: start
-- again), then three sections, each a count followed by that many
-- triples:
--   expired admitted: binding, score, deadline now (0: dead)
--   pre-queue: binding, draw, 1 alive / 0 dead (the instance sends
--     nothing from the first join still being set up on: draw order)
--   sweep: binding, place, 1 alive / 0 dead
-- Returns {0} (lease lost), {1, placed (binding, place ...)} for a part,
-- or {1, placed, admissions allowed, front places (binding, place ...)}.
if not leader() then return {0} end
local at = 7
local function nxt()
  at = at + 1
  return ARGV[at - 1]
end
for _ = 1, tonumber(nxt()) do
  local b, s, live = nxt(), tonumber(nxt()), tonumber(nxt())
  if live > now then
    if redis.call('ZSCORE', KEYS[6], b) then redis.call('ZADD', KEYS[6], live, b) end
  else
    unlist(KEYS[6], b, s)
  end
end
local placed = {}
for _ = 1, tonumber(nxt()) do
  local b, s, code = nxt(), tonumber(nxt()), nxt()
  if unlist(KEYS[5], b, s) and code == '1' then
    local place = redis.call('HINCRBY', KEYS[2], 'next', 1)
    redis.call('ZADD', KEYS[4], place, b)
    count(place, 1)
    placed[#placed + 1] = b
    placed[#placed + 1] = place
  end
end
for _ = 1, tonumber(nxt()) do
  local b, place, code = nxt(), tonumber(nxt()), nxt()
  if code == '0' then unwait(b, place) end
end
if ARGV[6] == '' then return {1, placed} end
local opens = tonumber(redis.call('HGET', KEYS[3], 'opens_at') or ARGV[2])
if redis.call('HGET', KEYS[2], 'opened') ~= '1' and now >= opens
    and redis.call('ZCARD', KEYS[5]) == 0 then
  redis.call('HSET', KEYS[2], 'opened', '1')
end
redis.call('HSET', KEYS[2], 'sweep_at', string.format('%d', tonumber(ARGV[6])))
-- TokenBucket::refill, from the shared settings.
local s = redis.call('HMGET', KEYS[3], 'per_sec', 'burst', 'max_admitted', 'paused')
local per_sec, burst = tonumber(s[1] or '0'), tonumber(s[2] or '1')
local cap, paused = tonumber(s[3] or '-1'), s[4] == '1' or not (tonumber(s[1] or '0') > 0)
local saved = math.max(burst, 1)
local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens') or '0')
local last_ms = redis.call('HGET', KEYS[2], 'last_ms')
if not last_ms then
  tokens, last_ms = saved, now
else
  last_ms = tonumber(last_ms)
  if not paused then
    local most = math.max(saved, redis.call('ZCARD', KEYS[4]))
    local from = math.max(last_ms, opens)
    tokens = math.min(tokens + per_sec * math.max(now - from, 0) / 1000, most)
  end
  last_ms = math.max(last_ms, now)
end
redis.call('HSET', KEYS[2], 'tokens', string.format('%.17g', tokens), 'last_ms', string.format('%d', last_ms))
local n = 0
local cands = {}
if not paused and redis.call('HGET', KEYS[2], 'opened') == '1' then
  n = math.min(math.floor(tokens), tonumber(ARGV[4]))
  if cap >= 0 then n = math.min(n, cap - redis.call('ZCARD', KEYS[6])) end
  if n > 0 then
    cands = redis.call('ZRANGE', KEYS[4], 0, n + tonumber(ARGV[5]) - 1, 'WITHSCORES')
  else
    n = 0
  end
end
return {1, placed, n, cands}
