-- Records the ticket just issued for a chain: its id, text and deadline
-- (never shortened). Ignored if the chain is gone or is another chain.
-- KEYS[1] person record. ARGV: ticket id, ticket, deadline, now, slack ms.
local r = redis.call('HMGET', KEYS[1], 'tid', 'live')
if not r[2] then return 0 end
if r[1] ~= '' and r[1] ~= ARGV[1] then return 0 end
local live = math.max(tonumber(r[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tid', ARGV[1], 'ticket', ARGV[2], 'live', string.format('%d', live))
redis.call('PEXPIRE', KEYS[1], math.max(live - tonumber(ARGV[4]), 0) + tonumber(ARGV[5]))
return 1
