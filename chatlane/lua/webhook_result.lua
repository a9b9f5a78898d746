--! use: clock
-- webhook_result: record one delivery attempt and decide what comes next.
--
-- The attempt goes to the turn's delivery log (a LIST, expiring with the turn record). Delivered:
-- the entry leaves the outbox. Not delivered: it is due again in `retry_ms`, unless that would be
-- past `span_ms` after the first attempt, when it is given up (and the log says so).
-- Returns "delivered", "retry" or "gave_up"; "gone" if the turn record is gone (its session was
-- deleted while the delivery was in flight): nothing is written, so no key comes back.
local outbox_key = KEYS[1]
local turn_key   = KEYS[2]
local log_key    = KEYS[3]
local turn_id    = ARGV[1]
local entry      = ARGV[2]  -- JSON of the attempt (attempt, status, error, at)
local ok         = ARGV[3] == "1"
local retry_ms   = tonumber(ARGV[4])
local span_ms    = tonumber(ARGV[5])

if redis.call("EXISTS", turn_key) == 0 then
  redis.call("ZREM", outbox_key, turn_id)
  return "gone"
end
local now = redis_now_ms()
local outcome
if ok then
  redis.call("ZREM", outbox_key, turn_id)
  outcome = "delivered"
else
  local first = tonumber(redis.call("HGET", turn_key, "webhook_first") or now)
  if now + retry_ms - first > span_ms then
    redis.call("ZREM", outbox_key, turn_id)
    outcome = "gave_up"
  else
    redis.call("ZADD", outbox_key, "XX", now + retry_ms, turn_id)
    outcome = "retry"
  end
end
redis.call("RPUSH", log_key, entry)
redis.call("HSET", turn_key, "webhook_state", outcome, "webhook_next", (outcome == "retry") and (now + retry_ms) or "")
local ttl = redis.call("PTTL", turn_key)
if ttl > 0 then
  redis.call("PEXPIRE", log_key, ttl)
end
return outcome
