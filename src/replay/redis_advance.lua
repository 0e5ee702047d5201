-- `ChainState::advance`, atomically (after the prelude). ARGV[3..6]:
-- sequence, now, grace, chain keep-until. Returns {0, seq, issued} next,
-- {2, seq, issued} retry, {1} stale, {7} at capacity, {4, epoch} state
-- lost, {5} past retention.
local seq, now, grace, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if seq >= 4294967295 then return {1} end
if rec and seq < highest then
  if seq + 1 == highest and seen == 0 and now < issued + grace then
    return {2, highest, issued}
  end
  return {1}
end
cap_sweep()
local kind, chain_keep = chain_plan(keep)
local need = {w = 0, a = 0}
if rkind ~= kind then need[kind] = 1 end
if not cap_check(need) then return {7} end
highest, issued, seen = seq + 1, now, 0
write_chain(kind, chain_keep)
return {0, highest, issued}
