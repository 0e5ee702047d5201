-- The queue's shared settings. ARGV: [3] mode ('get', 'seed': write only
-- if none exist yet, 'set'), [4] admissions per second, [5] burst, [6]
-- admitted cap (-1: none), [7] opening time (ms), [8] paused (0/1).
-- Moving the opening time once it has passed is refused: {1, current...}
-- and nothing is written. Returns {0 or 1, per_sec, burst, max_admitted,
-- opens_at, paused} (the values in force afterwards).
local fields = {'per_sec', 'burst', 'max_admitted', 'opens_at', 'paused'}
local s = redis.call('HMGET', KEYS[3], unpack(fields))
local exists = s[1] ~= false
local mode = ARGV[3]
local code = 0
if mode == 'set' or (mode == 'seed' and not exists) then
  if exists and ARGV[7] ~= s[4] and tonumber(s[4]) <= now then
    code = 1
  else
    redis.call('HSET', KEYS[3], 'per_sec', ARGV[4], 'burst', ARGV[5],
      'max_admitted', ARGV[6], 'opens_at', ARGV[7], 'paused', ARGV[8])
    s = {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]}
  end
end
return {code, s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or ''}
