-- stop_request: library (see chatlane/scripts/loader.py) for the scripts that stop a running turn
-- at a client's request: cancel.lua, and enqueue.lua's interrupt and rollback policies.
--
-- Only the lease holder writes a turn's outcome. This records the request on the turn record
-- ("stop" = "interrupt" | "cancel", and the "reason"), then tells the holder: a PUBLISH of the
-- turn id on the holder's own channel (chatlane/keys.py: Keys.stop_channel; one subscription per
-- worker process, worker/stops.py). The holder stops the model call and commits the outcome with
-- advance.lua, which reads "stop" atomically with the commit; a holder that misses the message
-- sees the request on its next lease renewal (renew.lua), and a holder that died leaves it to the
-- next one, whose begin_head.lua finds it. The first request decides the outcome: a later one
-- changes nothing (and is told which outcome stands).
--   turn_key, turn_id   a running turn           mode  "interrupt" (keep the partial reply) | "cancel"
--   reason              kept as the turn's reason lease_key  its session's lease
--   channel_prefix      Keys.stop_channel_prefix
-- Returns the stop mode that stands.
local function request_stop(turn_key, turn_id, mode, reason, lease_key, channel_prefix)
  if redis.call("HSETNX", turn_key, "stop", mode) == 1 then
    redis.call("HSET", turn_key, "reason", reason)
  end
  local token = redis.call("GET", lease_key)
  if token then
    -- A lease token is "<fence>:<worker id>:<nonce>" (claim.lua).
    local holder = string.match(token, "^[^:]+:(.+):[^:]+$")
    if holder then
      redis.call("PUBLISH", channel_prefix .. holder, turn_id)
    end
  end
  return redis.call("HGET", turn_key, "stop")
end
