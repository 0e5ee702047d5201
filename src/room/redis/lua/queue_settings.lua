-- The queue's shared settings. ARGV: [3] mode ('get'; 'seed': write each
-- value whose field is absent, so an instance's configuration only seeds
-- a new queue, or fields a newer build added; 'set'), [4] admissions per
-- second, [5] burst, [6] admitted cap (-1: none), [7] opening time (ms),
-- [8] paused (0/1), [9] waiting cap (-1: none), [10] closed ('0' open,
-- '1' followed by the closing message), [11] amnesty ('-' none,
-- 'from:until' ms); an empty value keeps what is there.
-- Moving the opening time once it has passed is refused: {1, current...}
-- and nothing is written. Returns {0 or 1, the eight values in force
-- afterwards ('' where absent)}.
local fields = {'per_sec', 'burst', 'max_admitted', 'opens_at', 'paused',
  'max_waiting', 'closed', 'amnesty'}
local s = redis.call('HMGET', KEYS[3], unpack(fields))
local mode = ARGV[3]
local code = 0
if mode == 'set' and s[4] and ARGV[7] ~= '' and ARGV[7] ~= s[4]
    and tonumber(s[4]) <= now then
  code = 1
elseif mode == 'set' or mode == 'seed' then
  for i, f in ipairs(fields) do
    local v = ARGV[3 + i]
    if v ~= '' and (mode == 'set' or not s[i]) then
      redis.call('HSET', KEYS[3], f, v)
      s[i] = v
    end
  end
end
local out = {code}
for i = 1, #fields do out[i + 1] = s[i] or '' end
return out
