-- The admission tick, step 1 of 3 (one instance at a time: the holder of
-- the lease). ARGV: [3] instance id, [4] lease ms, [5] batch size, [6]
-- the time this instance judges liveness at (now, or earlier during an
-- amnesty it knows of; optional).
-- Returns {0} (another instance holds the lease) or {1, expired admitted,
-- pre-queue batch to place (opening due), sweep batch, liveness time},
-- each list a bounded list of binding, score pairs for the instance to
-- check on the people's own slots. The liveness time also honours the
-- shared amnesty ('from:until' in the settings): while it lasts, the
-- deadlines from its start on are not judged (Amnesty::liveness_now), so
-- the first tick after a store outage already knows an amnesty declared
-- through another instance during it.
local holder = redis.call('GET', KEYS[8])
if holder and holder ~= ARGV[3] then return {0} end
redis.call('SET', KEYS[8], ARGV[3], 'PX', ARGV[4])
local B = tonumber(ARGV[5])
local live = math.min(now, tonumber(ARGV[6] or ARGV[2]))
local from, till = string.match(redis.call('HGET', KEYS[3], 'amnesty') or '', '^(-?%d+):(-?%d+)$')
if from and now < tonumber(till) then live = math.min(live, tonumber(from) - 1) end
local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', string.format('%d', live), 'WITHSCORES', 'LIMIT', 0, B)
local pre = {}
local opens = tonumber(redis.call('HGET', KEYS[3], 'opens_at') or ARGV[2])
if redis.call('HGET', KEYS[2], 'opened') ~= '1' and now >= opens then
  pre = redis.call('ZRANGE', KEYS[5], 0, B - 1, 'WITHSCORES')
end
local cursor = redis.call('HGET', KEYS[2], 'sweep_at') or '0'
local sweep = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, B)
return {1, expired, pre, sweep, string.format('%d', live)}
