-- Drops a join's placeholder when the room was full.
-- KEYS[1] person record. Returns 1 if dropped.
if redis.call('HGET', KEYS[1], 'st') == 'j' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
