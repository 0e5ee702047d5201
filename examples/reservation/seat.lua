-- Takes one seat of a slot if one is left: KEYS[1] the slot's count of seats
-- taken, ARGV[1] the seats it has, ARGV[2] how long the count is kept (ms).
-- Returns the new count, or -1 when the slot is full (nothing written).
local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
if taken >= tonumber(ARGV[1]) then
  return -1
end
taken = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return taken
