-- budget_pause: the provider answered 429; no worker of the fleet calls this model until the
-- pause is over. A pause never shortens one already in force.
-- Returns the pause left in ms.
local pause_key = KEYS[1]
local stats_key = KEYS[2]
local pause_ms  = tonumber(ARGV[1])

local left = redis.call("PTTL", pause_key)
if left < pause_ms then
  redis.call("SET", pause_key, "429", "PX", pause_ms)
  redis.call("HINCRBY", stats_key, "provider_pauses", 1)
  redis.call("HINCRBY", stats_key, "provider_paused_ms", pause_ms)
  return pause_ms
end
return left
