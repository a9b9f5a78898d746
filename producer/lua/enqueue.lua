--! use: queue_drain clock
-- enqueue: accept one chat turn for a session, atomically.
--
-- KEYS[1] session inbox (LIST)      KEYS[2] session lease (STRING)
-- KEYS[3] session drain flag        KEYS[4] idempotency key (unused when ARGV[6] == "")
-- KEYS[5] turn record (HASH)        KEYS[6] pending sessions (SET)
-- KEYS[7] arq job key for ARGV[5]   KEYS[8] arq queue (ZSET)
-- ARGV[1] session id   ARGV[2] turn id   ARGV[3] text   ARGV[4] max waiting turns per session
-- ARGV[5] drain job id   ARGV[6] idempotency key or ""   ARGV[7] serialized drain job
-- ARGV[8] job score (epoch ms)   ARGV[9] job expiry (ms)
--
-- Returns {status, turn_id, drain_queued, position, created_ms}:
--   "new"  turn recorded and pushed at `position`; drain_queued 1 if no runner held the session
--          and no drain job was queued, so this call queued job ARGV[5].
--   "dup"  the idempotency key (or the turn id itself, on a client retry) already names turn_id;
--          nothing was written.
--   "full" the inbox already holds ARGV[4] turns; nothing was written.
-- The turn record and idempotency key get a TTL only when the turn ends (advance.lua), so an
-- accepted turn never expires while it waits.
if ARGV[6] ~= "" then
  local existing = redis.call("GET", KEYS[4])
  if existing then
    return {"dup", existing, 0, -1, 0}
  end
end
if redis.call("EXISTS", KEYS[5]) == 1 then
  return {"dup", ARGV[2], 0, -1, 0}
end
local waiting = redis.call("LLEN", KEYS[1])
if waiting >= tonumber(ARGV[4]) then
  return {"full", "", 0, waiting, 0}
end
local now_ms = redis_now_ms()
local idem_key = ""
if ARGV[6] ~= "" then
  redis.call("SET", KEYS[4], ARGV[2])
  idem_key = KEYS[4]
end
redis.call("HSET", KEYS[5], "session", ARGV[1], "text", ARGV[3], "state", "queued",
  "created", now_ms, "attempts", 0, "idem", idem_key)
local position = redis.call("RPUSH", KEYS[1], ARGV[2]) - 1
redis.call("SADD", KEYS[6], ARGV[1])
local queued = 0
if redis.call("EXISTS", KEYS[2]) == 0 and redis.call("EXISTS", KEYS[3]) == 0 then
  queue_drain(KEYS[3], KEYS[7], KEYS[8], ARGV[5], ARGV[7], ARGV[8], ARGV[9])
  queued = 1
end
return {"new", ARGV[2], queued, position, now_ms}
