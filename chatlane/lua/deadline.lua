--! use: end_turn
-- deadline: library (see chatlane/scripts/loader.py) for the scripts that end a turn that was not
-- started in time (expires_after_s): begin_head.lua, where turns begin, and expire.lua, which the
-- sweep and the producer's readers call for turns nobody begins (no worker running).
--
-- A turn expires if it is queued, has never begun an attempt, has no stop request (a stop, once
-- accepted, decides the outcome) and its "expires" (epoch ms, Redis time) is not after now_ms.
-- It then ends "expired" with its reason. The caller removes it from the inbox.
-- Returns true if it expired the turn.
local function expire_if_due(turn_key, stream_key, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  local f = redis.call("HMGET", turn_key, "state", "attempts", "stop", "expires", "created")
  local expires = tonumber(f[4] or "")
  if f[1] ~= "queued" or tonumber(f[2] or "0") > 0 or f[3] or not expires or expires > now_ms then
    return false
  end
  local waited_s = (expires - tonumber(f[5] or expires)) / 1000
  end_turn(turn_key, stream_key, "expired", "reason", "not started within " .. waited_s .. " s (expires_after_s)",
    now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  return true
end
