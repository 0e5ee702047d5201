-- The prelude of the replay store's check and advance scripts.
--
-- KEYS[1] is the epoch key, ARGV[1] the epoch this instance knows, ARGV[2]
-- a fresh random one in case the key is gone. A missing key means Redis
-- lost its data (a restart without persistence, a flush, a failover to an
-- empty replica): the script starts a new epoch, and the caller learns it
-- with code 4.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  return {4, ARGV[2]}
end
if epoch ~= ARGV[1] then
  return {4, epoch}
end

-- Records expire on Redis's clock (`PXAT`), not the caller's. A ticket
-- whose retention (ARGV[6]) has already ended by Redis's clock may have had
-- a record that is gone (a caller whose clock is behind Redis's, or was
-- stepped back, would otherwise find no record of a consumed ticket and
-- admit it again): it cannot be proven fresh, and gets {5}.
local t = redis.call('TIME')
if tonumber(ARGV[6]) <= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
  return {5}
end

-- The chain record `highest issued seen keep` (or nothing) at KEYS[2].
local highest, issued, seen, kept
local rec = redis.call('GET', KEYS[2])
if rec then
  local h, i, s, k = string.match(rec, '^(%d+) (%d+) (%d) (%d+)$')
  highest, issued, seen, kept = tonumber(h), tonumber(i), tonumber(s), tonumber(k)
end
-- Retention only ever grows: an older ticket of the chain with a later
-- deadline may still be presented and must meet the record.
local function write_chain(keep)
  if kept and kept > keep then keep = kept end
  redis.call('SET', KEYS[2], string.format('%d %d %d %d', highest, issued, seen, keep), 'PXAT', keep)
end
