-- The admission tick, step 1 of 3 (one instance at a time: the holder of
-- the lease). ARGV: [3] instance id, [4] lease ms, [5] batch size.
-- Returns {0} (another instance holds the lease) or {1, expired admitted,
-- pre-queue batch to place (opening due), sweep batch}, each a bounded
-- list of binding, score pairs for the instance to check on the people's
-- own slots.
local holder = redis.call('GET', KEYS[8])
if holder and holder ~= ARGV[3] then return {0} end
redis.call('SET', KEYS[8], ARGV[3], 'PX', ARGV[4])
local B = tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, B)
local pre = {}
local opens = tonumber(redis.call('HGET', KEYS[3], 'opens_at') or ARGV[2])
if redis.call('HGET', KEYS[2], 'opened') ~= '1' and now >= opens then
  pre = redis.call('ZRANGE', KEYS[5], 0, B - 1, 'WITHSCORES')
end
local cursor = redis.call('HGET', KEYS[2], 'sweep_at') or '0'
local sweep = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, B)
return {1, expired, pre, sweep}
