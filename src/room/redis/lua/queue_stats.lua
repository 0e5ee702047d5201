-- Counts for operators: O(log n). The admitted count goes by the
-- deadlines the tick last saw.
local w, p = redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5])
local a = redis.call('ZCARD', KEYS[6])
return {
  w + p,
  redis.call('ZCOUNT', KEYS[6], '(' .. ARGV[2], '+inf'),
  tonumber(redis.call('HGET', KEYS[2], 'admitted_total') or '0'),
  w + p + a,
  tonumber(redis.call('HGET', KEYS[2], 'next') or '0'),
  redis.call('HGET', KEYS[2], 'opened') == '1' and 1 or 0,
}
