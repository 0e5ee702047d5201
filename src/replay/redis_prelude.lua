-- The prelude of the replay store's check and advance scripts.
--
-- KEYS[1] is the epoch key, KEYS[2] the chain record, the last key this
-- chain's capacity shard (KEYS[CAPIDX]: the last key, or on a Cluster the
-- last but one, before the shard's owner key). ARGV[1] is the epoch this instance knows, ARGV[2]
-- a fresh random one in case the key is gone, ARGV[6] the chain record's
-- keep-until; the last three ARGV are the presented (or issued) ticket's
-- kind (`w` or `a`) and the waiting and admitted capacities of one shard.

-- A missing epoch key means Redis lost its data (a restart without
-- persistence, a flush, a failover to an empty replica): the script starts
-- a new epoch, and the caller learns it with code 4.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  return {4, ARGV[2]}
end
if epoch ~= ARGV[1] then
  return {4, epoch}
end

-- Records expire on Redis's clock (`PXAT`), not the caller's. A ticket
-- whose retention (ARGV[6]) has already ended by Redis's clock may have had
-- a record that is gone (a caller whose clock is behind Redis's, or was
-- stepped back, would otherwise find no record of a consumed ticket and
-- admit it again): it cannot be proven fresh, and gets {5}.
local t = redis.call('TIME')
local NOW_R = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[6]) <= NOW_R then
  return {5}
end

-- Capacity: per shard, a hash of record counts per kind and per 5-second
-- bucket of retention end (`w:<bucket>`, `a:<bucket>`), their totals
-- (`tw`, `ta`) and the first bucket not yet subtracted (`lo`). A bucket is
-- subtracted once it has wholly passed on Redis's clock, when every record
-- in it has expired: no global index, O(1) per call once warm.
local BUCKET = 5000
local NKIND = ARGV[#ARGV - 2]
local CAP = {w = tonumber(ARGV[#ARGV - 1]), a = tonumber(ARGV[#ARGV])}
local CAPKEY = KEYS[CAPIDX]

local function bucket_of(keep)
  return math.floor(keep / BUCKET)
end

local function cap_add(kind, bucket, n)
  redis.call('HINCRBY', CAPKEY, kind .. ':' .. bucket, n)
  redis.call('HINCRBY', CAPKEY, 't' .. kind, n)
end

local function cap_total(kind)
  return tonumber(redis.call('HGET', CAPKEY, 't' .. kind) or '0')
end

local function cap_sweep()
  local cur = bucket_of(NOW_R)
  local lo = redis.call('HGET', CAPKEY, 'lo')
  if not lo then
    redis.call('HSET', CAPKEY, 'lo', cur)
    return
  end
  lo = tonumber(lo)
  -- Nothing due (or Redis's clock went back: wait for it).
  if lo >= cur then return end
  if cur - lo > 4096 then
    -- Idle for hours: recount from the live buckets at once.
    local all = redis.call('HGETALL', CAPKEY)
    local total = {w = 0, a = 0}
    for i = 1, #all, 2 do
      local k, b = string.match(all[i], '^([wa]):(%d+)$')
      if k then
        if tonumber(b) < cur then
          redis.call('HDEL', CAPKEY, all[i])
        else
          total[k] = total[k] + tonumber(all[i + 1])
        end
      end
    end
    redis.call('HSET', CAPKEY, 'tw', total.w, 'ta', total.a)
  else
    for b = lo, cur - 1 do
      for _, k in ipairs({'w', 'a'}) do
        local n = redis.call('HGET', CAPKEY, k .. ':' .. b)
        if n then
          -- A bucket every record moved out of holds 0: `-tonumber('0')`
          -- is Lua's -0, which Redis refuses as an increment ("-0"), and
          -- the sweep would fail on every call of the shard from then on.
          if tonumber(n) ~= 0 then
            redis.call('HINCRBY', CAPKEY, 't' .. k, 0 - tonumber(n))
          end
          redis.call('HDEL', CAPKEY, k .. ':' .. b)
        end
      end
    end
  end
  redis.call('HSET', CAPKEY, 'lo', cur)
end

-- The chain record `highest issued seen keep kind` (or nothing) at
-- KEYS[2]. A record without a kind predates the counters: uncounted.
local highest, issued, seen, kept, rkind
local rec = redis.call('GET', KEYS[2])
if rec then
  local h, i, s, k, kd = string.match(rec, '^(%d+) (%d+) (%d) (%d+) ?([wa]?)$')
  highest, issued, seen, kept = tonumber(h), tonumber(i), tonumber(s), tonumber(k)
  if kd ~= '' then rkind = kd end
end

-- The kind the chain record will have, and what it needs from the
-- capacities (`need` is added to by the caller for other records).
local function chain_plan(keep)
  local kind = NKIND
  if rkind == 'a' then kind = 'a' end
  if kept and kept > keep then keep = kept end
  return kind, keep
end

-- Refuses ({7}) when a capacity would be exceeded; writes nothing.
local function cap_check(need)
  for k, n in pairs(need) do
    if n > 0 and cap_total(k) + n > CAP[k] then
      return false
    end
  end
  return true
end

-- Writes the chain record (retention only ever grows: an older ticket of
-- the chain with a later deadline may still be presented) and moves its
-- count to its kind and bucket.
local function write_chain(kind, keep)
  if rkind ~= kind or bucket_of(kept) ~= bucket_of(keep) then
    if rkind then cap_add(rkind, bucket_of(kept), -1) end
    cap_add(kind, bucket_of(keep), 1)
  end
  redis.call('SET', KEYS[2], string.format('%d %d %d %d %s', highest, issued, seen, keep, kind), 'PXAT', keep)
end
