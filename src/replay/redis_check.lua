-- `ChainState::present` and the single-use hold, atomically (after the
-- prelude). KEYS[3] is this scope's hold/consumption record: `h <token>
-- <until>` while held, `c` once committed (any other value reads as
-- committed). ARGV[3..]: sequence, now, grace, chain keep-until, hold
-- (0/1), same client (0/1), hold token, hold until, use keep-until.
-- Returns {0} fresh, {1} stale, {2} consumed (same client), {3} consumed or
-- held (another client), {6, until} held by a live hold, {4, epoch} state
-- lost, {5} past retention.
local seq, now, grace, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if not rec then
  highest, issued, seen = seq, now, 1
elseif seq >= highest then
  if seq > highest then
    highest, issued = seq, now
  end
  seen = 1
elseif not (seq + 1 == highest and seen == 0 and now < issued + grace) then
  return {1}
end
if ARGV[7] == '1' then
  local prev = redis.call('GET', KEYS[3])
  local hold = 'h ' .. ARGV[9] .. ' ' .. ARGV[10]
  if prev then
    if ARGV[8] ~= '1' then return {3} end
    local untl = string.match(prev, '^h %d+ (%d+)$')
    if not untl then return {2} end
    if now < tonumber(untl) then return {6, untl} end
    -- An expired hold, retaken by the same client: same record, new hold.
    redis.call('SET', KEYS[3], hold, 'KEEPTTL')
  else
    redis.call('SET', KEYS[3], hold, 'PXAT', ARGV[11])
  end
end
write_chain(keep)
return {0}
