-- The queue's shared settings. ARGV: [3] mode ('get', 'seed': write only
-- if none exist yet, 'set'), [4] admissions per second, [5] burst, [6]
-- admitted cap (-1: none), [7] opening time (ms), [8] paused (0/1); an
-- empty value keeps what is there.
-- Moving the opening time once it has passed is refused: {1, current...}
-- and nothing is written. Returns {0 or 1, per_sec, burst, max_admitted,
-- opens_at, paused} (the values in force afterwards).
local fields = {'per_sec', 'burst', 'max_admitted', 'opens_at', 'paused'}
local s = redis.call('HMGET', KEYS[3], unpack(fields))
local exists = s[1] ~= false
local mode = ARGV[3]
local code = 0
if mode == 'set' or (mode == 'seed' and not exists) then
  if exists and ARGV[7] ~= '' and ARGV[7] ~= s[4] and tonumber(s[4]) <= now then
    code = 1
  else
    for i, f in ipairs(fields) do
      local v = ARGV[3 + i]
      if v ~= '' then
        redis.call('HSET', KEYS[3], f, v)
        s[i] = v
      end
    end
  end
end
return {code, s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or ''}
