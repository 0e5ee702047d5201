-- Shared by every script on a queue's own slot. KEYS: [1] layout version,
-- [2] meta hash, [3] settings hash, [4] waiting (zset: place -> binding),
-- [5] pre-queue (zset: draw -> binding), [6] admitted (zset: deadline ->
-- binding), [7] live counts per block of places (u32 array, BITFIELD),
-- [8] the tick lease. ARGV[1] the layout this build knows, ARGV[2] now.
-- A queue written by another layout is never touched: {-1, layout}.
local layout = redis.call('GET', KEYS[1])
if not layout then
  redis.call('SET', KEYS[1], ARGV[1])
elseif layout ~= ARGV[1] then
  return {-1, layout}
end
local now = tonumber(ARGV[2])
local BLOCK = 1024
local function count(place, delta)
  redis.call('BITFIELD', KEYS[7], 'OVERFLOW', 'SAT', 'INCRBY', 'u32',
    '#' .. string.format('%d', math.floor(place / BLOCK)), delta)
end
-- Removes b from the waiting places if it is still at `place` (any place
-- when nil); a newer join of the same binding is never removed.
local function unwait(b, place)
  local s = redis.call('ZSCORE', KEYS[4], b)
  if s and (place == nil or tonumber(s) == place) then
    redis.call('ZREM', KEYS[4], b)
    count(tonumber(s), -1)
    return true
  end
  return false
end
local function unlist(key, b, score)
  local s = redis.call('ZSCORE', key, b)
  if s and (score == nil or tonumber(s) == score) then
    redis.call('ZREM', key, b)
    return true
  end
  return false
end
local function front()
  local f = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if #f == 0 then return 0 end
  return tonumber(f[2])
end
local function leader()
  return redis.call('GET', KEYS[8]) == ARGV[3]
end
