-- renew: extend the lease if, and only if, we still hold it.
--
-- Returns 1 if renewed, 0 if the lease expired or belongs to another holder; the latter is
-- counted as `leases_lost_on_renewal` (the holder learns of the loss before trying to commit;
-- a holder that tries first is counted by advance.lua as `stale_commits_rejected`).
local lease_key = KEYS[1]
local stats_key = KEYS[2]  -- HASH of fleet counters
local token     = ARGV[1]  -- our lease token
local ttl_ms    = ARGV[2]

if redis.call("GET", lease_key) == token then
  redis.call("PEXPIRE", lease_key, ttl_ms)
  return 1
end
redis.call("HINCRBY", stats_key, "leases_lost_on_renewal", 1)
return 0
