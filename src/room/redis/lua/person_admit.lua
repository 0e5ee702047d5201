-- The admission tick's decision about one front place, on that person's
-- slot. KEYS[1] person record. ARGV: place, now.
-- Returns {1, deadline} admitted now; {2, deadline} admitted already;
-- {3} being set up (a join in flight: stop here, keep the order);
-- {0} dead, gone or moved (the place is skipped for free).
local r = redis.call('HMGET', KEYS[1], 'place', 'st', 'live')
if not r[3] then return {0} end
local live = tonumber(r[3])
if live <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return {0}
end
if r[2] == 'j' then return {3} end
if tonumber(r[1]) ~= tonumber(ARGV[1]) then return {0} end
if r[2] == 'a' then return {2, live} end
if r[2] ~= 'w' then return {0} end
redis.call('HSET', KEYS[1], 'st', 'a')
return {1, live}
