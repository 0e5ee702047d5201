-- The fence of a Cluster shard, run first by every script of the Cluster
-- replay store. KEYS[1] is the shard's epoch, KEYS[#KEYS] its owner: the
-- Cluster node id of the primary that last served the shard; ARGV[2] a
-- fresh random epoch.
--
-- A primary other than the owner (a replica promoted by a failover, which
-- may lack writes its old primary acknowledged, or whose data diverged) or
-- a shard whose records were lost with their primary starts a new epoch
-- before serving anything: every ticket of the shard minted before is
-- refused (`{4, epoch}`), never checked against records that may be gone.
local CAPIDX = #KEYS - 1
local OWNERKEY = KEYS[#KEYS]
do
  local me = redis.call('CLUSTER', 'MYID')
  if redis.call('GET', OWNERKEY) ~= me then
    local fresh = ARGV[2]
    if redis.call('GET', KEYS[1]) == fresh then
      fresh = tostring((tonumber(fresh) + 1) % 4294967296)
    end
    redis.call('SET', KEYS[1], fresh)
    redis.call('SET', OWNERKEY, me)
    return {4, fresh}
  end
end
