-- The admission tick, step 3 of 3: records what the people's slots
-- decided about the front places. ARGV: [3] unused, then quadruples
-- binding, place, code (1 admitted now, 2 admitted already, 0 dead),
-- deadline. Applied even if the lease was lost meanwhile: the people's
-- records have changed already. Returns how many were admitted now.
local admitted = 0
for i = 4, #ARGV, 4 do
  local b, place, code, live = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  unwait(b, place)
  if code == '1' or code == '2' then
    redis.call('ZADD', KEYS[6], live, b)
  end
  if code == '1' then admitted = admitted + 1 end
end
if admitted > 0 then
  local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens') or '0')
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.17g', math.max(tokens - admitted, 0)))
  redis.call('HINCRBY', KEYS[2], 'admitted_total', admitted)
end
return admitted
