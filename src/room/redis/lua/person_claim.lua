-- A join's first step, on the person's own slot: the binding's live chain,
-- or a placeholder ('j') that holds the binding while a place is drawn, so
-- a second join of the same binding meanwhile gets "busy", never a second
-- place.
-- KEYS[1] person record. ARGV: now, provisional deadline, slack ms, the
-- time liveness is judged at (optional: now; earlier during an amnesty).
-- Returns {1, tid, place, status, deadline, facts} (live chain) or
-- {0, old status or ''} (placeholder made). `facts` are the latest
-- ticket's chain facts (`sequence:joined:expires:admitted-from[:epoch]`).
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'tid', 'place', 'st', 'live', 'facts')
if r[4] and tonumber(r[4]) > tonumber(ARGV[4] or ARGV[1]) then
  return {1, r[1], tonumber(r[2]), r[3], tonumber(r[4]), r[5]}
end
local old = r[3] or ''
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'tid', '', 'place', '0', 'st', 'j', 'live', ARGV[2], 'facts', '')
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]) - now, 0) + tonumber(ARGV[3]))
return {0, old}
