--! use: clock end_turn
-- cancel: withdraw a turn that is still waiting.
--
-- Returns {"cancelled"} if the turn was queued: it left the inbox and is "cancelled" with
-- the reason in `error`. Returns {"state", <state>} if it is running or already ended (a
-- running generation is never interrupted: its outcome is committed as usual), {"missing"}
-- if there is no such turn. Atomic against advance.lua: a turn is either begun or cancelled.
local turn_key      = KEYS[1]  -- turn record (HASH)
local inbox_key     = KEYS[2]  -- its session's inbox (LIST)
local stream_key    = KEYS[3]  -- its token stream
local outbox_key    = KEYS[4]  -- webhooks due (end_turn.lua)
local turn_id       = ARGV[1]
local session_id    = ARGV[2]  -- as the caller read it from the record
local reason        = ARGV[3]
local turn_ttl_ms   = ARGV[4]
local stream_ttl_ms = ARGV[5]

local state = redis.call("HGET", turn_key, "state")
if not state or redis.call("HGET", turn_key, "session") ~= session_id then
  return {"missing"}
end
if state ~= "queued" then
  return {"state", state}
end
redis.call("LREM", inbox_key, 1, turn_id)
end_turn(turn_key, stream_key, "cancelled", "error", reason, redis_now_ms(), turn_ttl_ms, stream_ttl_ms, outbox_key)
return {"cancelled"}
