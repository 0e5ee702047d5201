-- Ends a chain. KEYS[1] person record. Returns 1 if there was one.
return redis.call('DEL', KEYS[1])
