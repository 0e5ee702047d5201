-- Forgets dead entries found by the sweep, each only if it is still at
-- the score the sweep saw. ARGV: [3] which (4, 5 or 6), then pairs
-- binding, score. Returns how many were forgotten.
local which = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, 2 do
  local b, s = ARGV[i], tonumber(ARGV[i + 1])
  local gone
  if which == 4 then gone = unwait(b, s) else gone = unlist(KEYS[which], b, s) end
  if gone then n = n + 1 end
end
return n
