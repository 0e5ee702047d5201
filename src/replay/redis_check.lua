-- `ChainState::present` and the single-use hold, atomically (after the
-- prelude). KEYS[3] is this scope's hold/consumption record: `h <token>
-- <until> <kind> <bucket>` while held, `c <kind> <bucket>` once committed
-- (any other value reads as committed, uncounted). ARGV[3..11]: sequence,
-- now, grace, chain keep-until, hold (0/1), same client (0/1), hold token,
-- hold until, use keep-until.
-- Returns {0} fresh, {1} stale, {2} consumed (same client), {3} consumed or
-- held (another client), {6, until} held by a live hold, {7} at capacity,
-- {4, epoch} state lost, {5} past retention.
local seq, now, grace, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local new_chain = not rec
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
local retake, new_use
if ARGV[7] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    if ARGV[8] ~= '1' then return {3} end
    local untl = string.match(prev, '^h %d+ (%d+)')
    if not untl then return {2} end
    if now < tonumber(untl) then return {6, untl} end
    retake = prev
  else
    new_use = true
  end
end
cap_sweep()
local kind, chain_keep = chain_plan(keep)
local need = {w = 0, a = 0}
if rkind ~= kind then need[kind] = need[kind] + 1 end
local ukeep = tonumber(ARGV[11])
if new_use then need[NKIND] = need[NKIND] + 1 end
if not cap_check(need) then return {7} end
if new_use then
  local b = bucket_of(ukeep)
  redis.call('SET', KEYS[3], string.format('h %s %s %s %d', ARGV[9], ARGV[10], NKIND, b), 'PXAT', ukeep)
  cap_add(NKIND, b, 1)
elseif retake then
  -- An expired hold, retaken by the same client: same record (and count),
  -- new hold.
  local kb = string.match(retake, '^h %d+ %d+ ([wa] %d+)$')
  local v = 'h ' .. ARGV[9] .. ' ' .. ARGV[10]
  if kb then v = v .. ' ' .. kb end
  redis.call('SET', KEYS[3], v, 'KEEPTTL')
end
write_chain(kind, chain_keep)
return {0}
