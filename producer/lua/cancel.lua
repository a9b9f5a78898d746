--! use: clock end_turn
-- cancel: withdraw a turn that is still waiting.
--
-- KEYS[1] turn record (HASH)   KEYS[2] its session's inbox (LIST)   KEYS[3] its token stream
-- ARGV[1] turn id   ARGV[2] session id the caller read from the record   ARGV[3] reason
-- ARGV[4] turn ttl ms   ARGV[5] stream ttl ms
--
-- Returns {"cancelled"} if the turn was queued: it left the inbox and is "cancelled" with
-- the reason in `error`. Returns {"state", <state>} if it is running or already ended (a
-- running generation is never interrupted: its outcome is committed as usual), {"missing"}
-- if there is no such turn. Atomic against advance.lua: a turn is either begun or cancelled.
local state = redis.call("HGET", KEYS[1], "state")
if not state or redis.call("HGET", KEYS[1], "session") ~= ARGV[2] then
  return {"missing"}
end
if state ~= "queued" then
  return {"state", state}
end
redis.call("LREM", KEYS[2], 1, ARGV[1])
end_turn(KEYS[1], KEYS[3], "cancelled", "error", ARGV[3], redis_now_ms(), ARGV[4], ARGV[5])
return {"cancelled"}
