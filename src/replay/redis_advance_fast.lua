-- The common heartbeat's advance, before the prelude (same KEYS and ARGV
-- as redis_advance.lua). When the epoch matches, the chain's record is
-- there with a kind, the presented sequence is its highest (or later) and
-- the kind does not change, the advance needs no capacity check: it moves
-- the record's count from the bucket of its old keep-until to the bucket
-- of its new one (the kind's total is unchanged) and writes the record.
-- Anything else falls through to the prelude and redis_advance.lua, which
-- decide exactly as before.
--
-- Safe without the prelude's clock check and bucket sweep: the record is
-- there, so Redis's clock has not passed its keep-until, which is its
-- expiry (`PXAT`); its bucket and every later one are at or after the
-- first bucket not yet subtracted (`lo` is only ever set to the bucket of
-- Redis's time), so both buckets touched are still counted, and the
-- record, not the clock, proves the sequence. A sweep and the clock check
-- run on every call that may add to a count (a new record, a kind change).
do
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    local rec = redis.call('GET', KEYS[2])
    local h, i, s, k, kd
    if rec then
      h, i, s, k, kd = string.match(rec, '^(%d+) (%d+) (%d) (%d+) ([wa])$')
    end
    local seq = tonumber(ARGV[3])
    local kind = ARGV[#ARGV - 2]
    if kd == 'a' then kind = 'a' end
    if kd and kd == kind and seq < 4294967295 and seq >= tonumber(h) then
      local kept = tonumber(k)
      local keep = math.max(kept, tonumber(ARGV[6]))
      local from, to = math.floor(kept / 5000), math.floor(keep / 5000)
      if from ~= to then
        redis.call('HINCRBY', KEYS[CAPIDX], kd .. ':' .. from, -1)
        redis.call('HINCRBY', KEYS[CAPIDX], kd .. ':' .. to, 1)
      end
      local now = tonumber(ARGV[4])
      redis.call('SET', KEYS[2], string.format('%d %d 0 %d %s', seq + 1, now, keep, kd), 'PXAT', keep)
      return {0, seq + 1, now}
    end
  end
end
