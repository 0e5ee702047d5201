-- `ChainState::advance`, atomically (after the prelude). ARGV[3..]:
-- sequence, now, grace, chain keep-until. Returns {0, seq, issued} next,
-- {2, seq, issued} retry, {1} stale, {4, epoch} state lost, {5} past
-- retention.
local seq, now, grace, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if seq >= 4294967295 then return {1} end
if rec and seq < highest then
  if seq + 1 == highest and seen == 0 and now < issued + grace then
    return {2, highest, issued}
  end
  return {1}
end
highest, issued, seen = seq + 1, now, 0
write_chain(keep)
return {0, highest, issued}
