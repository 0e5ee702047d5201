-- Settles a single-use hold. KEYS[1] is the hold/consumption record;
-- ARGV[1] `c` (commit) or `r` (release), ARGV[2] the hold's token, ARGV[3]
-- the record's keep-until for a commit that finds no record.
--
-- A commit always consumes (a handler succeeded, whichever hold it had). A
-- release drops the record only while it is still this token's hold.
local prev = redis.call('GET', KEYS[1])
if ARGV[1] == 'c' then
  if prev then
    redis.call('SET', KEYS[1], 'c', 'KEEPTTL')
  else
    redis.call('SET', KEYS[1], 'c', 'PXAT', ARGV[3])
  end
  return 1
end
if prev and string.match(prev, '^h (%d+) ') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
