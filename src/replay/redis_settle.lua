-- Settles a single-use hold. KEYS[1] is the hold/consumption record,
-- KEYS[2] its capacity shard (see redis_prelude.lua); ARGV[1] `c` (commit)
-- or `r` (release), ARGV[2] the hold's token, ARGV[3] the record's
-- keep-until for a commit that finds no record, ARGV[4] the ticket's kind.
--
-- A commit always consumes (a handler succeeded, whichever hold it had),
-- and is never refused for capacity. A release drops the record only while
-- it is still this token's hold.
local BUCKET = 5000
local prev = redis.call('GET', KEYS[1])
if ARGV[1] == 'c' then
  if prev then
    local kb = string.match(prev, '^h %d+ %d+ ([wa] %d+)$') or string.match(prev, '^c ([wa] %d+)$')
    local v = 'c'
    if kb then v = v .. ' ' .. kb end
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    return 1
  end
  local t = redis.call('TIME')
  local now_r = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local keep = tonumber(ARGV[3])
  if keep <= now_r then return 1 end
  local b = math.floor(keep / BUCKET)
  redis.call('SET', KEYS[1], string.format('c %s %d', ARGV[4], b), 'PXAT', keep)
  local lo = redis.call('HGET', KEYS[2], 'lo')
  if not lo or b >= tonumber(lo) then
    redis.call('HINCRBY', KEYS[2], ARGV[4] .. ':' .. b, 1)
    redis.call('HINCRBY', KEYS[2], 't' .. ARGV[4], 1)
  end
  return 1
end
if prev then
  local tok, kb = string.match(prev, '^h (%d+) %d+ ?(.*)$')
  if tok == ARGV[2] then
    redis.call('DEL', KEYS[1])
    local k, b = string.match(kb or '', '^([wa]) (%d+)$')
    if k then
      redis.call('HINCRBY', KEYS[2], k .. ':' .. b, -1)
      redis.call('HINCRBY', KEYS[2], 't' .. k, -1)
    end
    return 1
  end
end
return 0
