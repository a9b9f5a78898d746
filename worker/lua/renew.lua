-- renew: extend the lease if, and only if, we still hold it.
--
-- KEYS[1] lease   KEYS[2] stats (HASH)   ARGV[1] our token   ARGV[2] lease ttl ms
-- Returns 1 if renewed, 0 if the lease expired or belongs to another holder; the latter is
-- counted as `leases_lost_on_renewal` (the holder learns of the loss before trying to commit;
-- a holder that tries first is counted by advance.lua as `stale_commits_rejected`).
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
redis.call("HINCRBY", KEYS[2], "leases_lost_on_renewal", 1)
return 0
