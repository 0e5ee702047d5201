-- Gives a chain its status and place once the queue's slot has drawn it,
-- if the chain is still in the expected status (it may have left).
-- KEYS[1] person record. ARGV: status, place, expected status.
-- Returns 1 if set, 0 if not.
local st = redis.call('HGET', KEYS[1], 'st')
if st ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'place', ARGV[2])
return 1
