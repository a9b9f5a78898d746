--! use: clock
-- webhook_claim: take a due webhook for delivery, with a visibility timeout: the entry stays in
-- the outbox, moved `visibility_ms` ahead, so a worker that dies while delivering leaves it to
-- be taken again then (at-least-once). The first claim stamps the turn's "webhook_first".
--
-- Returns {turn_id, webhook_url, attempt} to deliver, or {} if the entry is not due (another
-- worker took it) or its turn record is gone (the entry is dropped).
local outbox_key    = KEYS[1]
local turn_key      = KEYS[2]
local turn_id       = ARGV[1]
local visibility_ms = tonumber(ARGV[2])

local now = redis_now_ms()
local due = redis.call("ZSCORE", outbox_key, turn_id)
if not due or tonumber(due) > now then
  return {}
end
local url = redis.call("HGET", turn_key, "webhook")
if not url or url == "" then
  redis.call("ZREM", outbox_key, turn_id)
  return {}
end
redis.call("ZADD", outbox_key, "XX", now + visibility_ms, turn_id)
redis.call("HSETNX", turn_key, "webhook_first", now)
local attempt = redis.call("HINCRBY", turn_key, "webhook_attempts", 1)
return {turn_id, url, attempt}
