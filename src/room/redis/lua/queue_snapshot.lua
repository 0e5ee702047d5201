-- What every instance caches for about a second: the counters, the
-- settings and the live counts of the blocks from the front's on.
-- Returns {next, opened, front, first block, counts (bytes), per_sec,
-- burst, max_admitted, opens_at, paused, max_waiting, closed, amnesty}
-- (settings as queue_settings.lua returns them, '' where absent).
local f = front()
local first = 0
local counts = ''
if f > 0 then
  first = math.floor(f / BLOCK)
  counts = redis.call('GETRANGE', KEYS[7], first * 4, -1)
end
local s = redis.call('HMGET', KEYS[3], 'per_sec', 'burst', 'max_admitted', 'opens_at', 'paused',
  'max_waiting', 'closed', 'amnesty')
return {
  tonumber(redis.call('HGET', KEYS[2], 'next') or '0'),
  redis.call('HGET', KEYS[2], 'opened') == '1' and 1 or 0,
  f, first, counts,
  s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '',
  s[6] or '', s[7] or '', s[8] or '',
}
