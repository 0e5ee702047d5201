-- A heartbeat, on the person's own slot only.
-- KEYS[1] person record. ARGV: now, ticket id (hex).
-- Returns {place, status, deadline, facts}, or {} when the binding has no live
-- chain with this id (a dead one is dropped here; the queue's slot forgets
-- its place when the front or the sweep reaches it).
local r = redis.call('HMGET', KEYS[1], 'tid', 'place', 'st', 'live', 'facts')
if not r[1] or r[1] ~= ARGV[2] then return {} end
if tonumber(r[4]) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return {}
end
return {tonumber(r[2]), r[3], tonumber(r[4]), r[5] or ''}
