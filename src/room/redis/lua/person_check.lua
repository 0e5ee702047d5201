-- Whether the chain behind a queue entry is alive (sweep, opening, the
-- admitted cap), on that person's slot; a dead record is deleted.
-- KEYS[1] person record. ARGV: expected status (`wa`: waiting or
-- admitted), place (-1: any), now.
-- Returns {1, deadline} alive; {2} being set up (a join in flight); {0}
-- dead, gone or moved.
local r = redis.call('HMGET', KEYS[1], 'place', 'st', 'live')
if not r[3] then return {0} end
local live = tonumber(r[3])
if live <= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return {0}
end
if r[2] == 'j' then return {2} end
if r[2] ~= ARGV[1] and not (ARGV[1] == 'wa' and (r[2] == 'w' or r[2] == 'a')) then return {0} end
if ARGV[2] ~= '-1' and tonumber(r[1]) ~= tonumber(ARGV[2]) then return {0} end
return {1, live}
