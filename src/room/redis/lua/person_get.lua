-- Where a chain stands (read only). KEYS[1] person record.
-- Returns {tid, place, status, deadline, facts} or {}.
local r = redis.call('HMGET', KEYS[1], 'tid', 'place', 'st', 'live', 'facts')
if not r[4] then return {} end
return {r[1], tonumber(r[2]), r[3], tonumber(r[4]), r[5]}
