-- A join's place, on the queue's slot: O(log n), whatever the queue's size.
-- ARGV: [3] binding, [4] waiting cap (-1: none), [5] random draw (< 2^52)
-- for the pre-queue, [6] the instance's opening time (until the shared
-- settings exist), [7] the last place this instance has seen handed out:
-- the counter never goes below it, so a queue slot that lost writes (a
-- failover to a lagging replica) does not hand a place out twice.
-- Returns {2} full, {0, 'w', place, ahead, next} placed, {0, 'p', 0, 0}
-- in the pre-queue (the place is drawn at the opening).
local b = ARGV[3]
unwait(b, nil)
unlist(KEYS[5], b, nil)
unlist(KEYS[6], b, nil)
local maxw = tonumber(ARGV[4])
if maxw >= 0 and redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5]) >= maxw then
  return {2}
end
local opened = redis.call('HGET', KEYS[2], 'opened') == '1'
local opens = tonumber(redis.call('HGET', KEYS[3], 'opens_at') or ARGV[6])
if not opened and now >= opens and redis.call('ZCARD', KEYS[5]) == 0 then
  -- Nobody waits for the opening: it happens here, with nothing to draw.
  redis.call('HSET', KEYS[2], 'opened', '1')
  opened = true
end
if opened then
  local known = tonumber(ARGV[7] or '0')
  if tonumber(redis.call('HGET', KEYS[2], 'next') or '0') < known then
    redis.call('HSET', KEYS[2], 'next', string.format('%d', known))
  end
  local place = redis.call('HINCRBY', KEYS[2], 'next', 1)
  redis.call('ZADD', KEYS[4], place, b)
  count(place, 1)
  return {0, 'w', place, redis.call('ZCOUNT', KEYS[4], '-inf', '(' .. place), place}
end
local score = ARGV[5]
if now >= opens then
  -- The opening is being drawn: joins from now on go behind the draw, in
  -- the order they came.
  score = string.format('%d', 2^52 + redis.call('HINCRBY', KEYS[2], 'late', 1))
end
redis.call('ZADD', KEYS[5], score, b)
return {0, 'p', 0, 0, 0}
