--! use: clock
-- renew: extend the lease if, and only if, we still hold it, and with it the model budget's
-- concurrency slot the holder uses right now, if any (so a dead holder's slot frees itself
-- within a lease TTL, like its lease).
--
-- Returns 1 if renewed, 2 if renewed and the turn the holder generates has a stop request (the
-- fallback for a holder that missed the request's pub/sub message, stop_request.lua), 0 if the
-- lease expired or belongs to another holder; the latter is counted as `leases_lost_on_renewal`
-- (the holder learns of the loss before trying to commit; a holder that tries first is counted by
-- advance.lua as `stale_commits_rejected`).
local lease_key = KEYS[1]
local stats_key = KEYS[2]  -- HASH of fleet counters
local slots_key = KEYS[3]  -- a model budget's slot ZSET (any key when slot == "")
local turn_key  = KEYS[4]  -- the turn the holder generates now (any key when watch == "")
local token     = ARGV[1]  -- our lease token
local ttl_ms    = ARGV[2]
local slot      = ARGV[3]  -- the slot member we hold, or ""
local watch     = ARGV[4]  -- "1": look for a stop request on turn_key

if redis.call("GET", lease_key) == token then
  redis.call("PEXPIRE", lease_key, ttl_ms)
  if slot ~= "" then
    redis.call("ZADD", slots_key, "XX", redis_now_ms() + tonumber(ttl_ms), slot)
  end
  if watch == "1" and redis.call("HEXISTS", turn_key, "stop") == 1 then
    return 2
  end
  return 1
end
redis.call("HINCRBY", stats_key, "leases_lost_on_renewal", 1)
return 0
