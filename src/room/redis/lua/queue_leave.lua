-- Forgets a binding's entries (it left). ARGV: [3] binding.
-- Returns {was waiting (0/1), front}.
local b = ARGV[3]
local was = unwait(b, nil) and 1 or 0
unlist(KEYS[5], b, nil)
unlist(KEYS[6], b, nil)
return {was, front()}
