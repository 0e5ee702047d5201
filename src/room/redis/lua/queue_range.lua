-- A bounded slice of one of the queue's lists, after a cursor (for the
-- sweep). ARGV: [3] which (4 waiting, 5 pre-queue, 6 admitted), [4]
-- exclusive lower score ('-inf' to start), [5] at most this many.
-- Returns {binding, score, binding, score, ...}.
local key = KEYS[tonumber(ARGV[3])]
return redis.call('ZRANGEBYSCORE', key, ARGV[4], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[5]))
