-- Records the ticket just issued for a chain: its id, its chain facts
-- (kept unless facts of a later sequence are there already) and its
-- deadline (never shortened). Ignored if the chain is gone or is another
-- chain. KEYS[1] person record. ARGV: ticket id, facts
-- (`sequence:joined:expires:admitted-from[:epoch]`), deadline, now, slack ms.
local r = redis.call('HMGET', KEYS[1], 'tid', 'live', 'facts')
if not r[2] then return 0 end
if r[1] ~= '' and r[1] ~= ARGV[1] then return 0 end
local function seq(f) return tonumber(string.match(f or '', '^(%d+):') or '-1') end
local facts = r[3] or ''
if seq(ARGV[2]) >= seq(facts) then facts = ARGV[2] end
local live = math.max(tonumber(r[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tid', ARGV[1], 'facts', facts, 'live', string.format('%d', live))
redis.call('PEXPIRE', KEYS[1], math.max(live - tonumber(ARGV[4]), 0) + tonumber(ARGV[5]))
return 1
