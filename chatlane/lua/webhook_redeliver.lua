--! use: clock
-- webhook_redeliver: send an ended turn's webhook again, now (an operator or the caller asks).
-- Starts a new retry span. Returns "queued", "no_webhook", "not_ended" or "missing".
local outbox_key = KEYS[1]
local turn_key   = KEYS[2]
local session_id = ARGV[1]  -- the caller's view of the turn's session ("" = any)

local state = redis.call("HGET", turn_key, "state")
if not state or (session_id ~= "" and redis.call("HGET", turn_key, "session") ~= session_id) then
  return "missing"
end
if state == "queued" or state == "running" then
  return "not_ended"
end
local url = redis.call("HGET", turn_key, "webhook")
if not url or url == "" then
  return "no_webhook"
end
redis.call("HDEL", turn_key, "webhook_first")
redis.call("ZADD", outbox_key, redis_now_ms(), string.sub(turn_key, -32))
return "queued"
