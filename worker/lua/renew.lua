-- renew: extend the lease if, and only if, we still hold it.
--
-- KEYS[1] lease   ARGV[1] our token   ARGV[2] lease ttl ms
-- Returns 1 if renewed, 0 if the lease expired or belongs to another holder.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
return 0
