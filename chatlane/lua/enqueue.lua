--! use: clock queue_drain
-- enqueue: accept one chat turn for a session, atomically.
--
-- Returns {status, turn_id, drain_queued, position, created_ms}:
--   "new"  turn recorded and pushed at `position`; drain_queued 1 if no runner held the session
--          and no drain job was queued, so this call queued job `drain_job_id`.
--   "dup"  the idempotency key (or the turn id itself, on a client retry) already names turn_id;
--          nothing was written.
--   "full" the inbox already holds `max_waiting` turns; nothing was written.
-- The turn record and idempotency key get a TTL only when the turn ends (end_turn.lua), so an
-- accepted turn never expires while it waits.
local inbox_key     = KEYS[1]  -- session inbox (LIST)
local lease_key     = KEYS[2]  -- session lease (STRING)
local drain_job_key = KEYS[3]  -- session's queued drain job id (STRING)
local idem_key      = KEYS[4]  -- idempotency key (unused when idem == "")
local turn_key      = KEYS[5]  -- turn record (HASH)
local pending_key   = KEYS[6]  -- pending sessions (SET)
local job_key       = KEYS[7]  -- arq job key for drain_job_id
local queue_key     = KEYS[8]  -- arq queue (ZSET)
local turns_key     = KEYS[9]  -- the session's turn ids in enqueue order (LIST; delete_session.lua owns it)
local session_id    = ARGV[1]
local turn_id       = ARGV[2]
local text          = ARGV[3]
local max_waiting   = tonumber(ARGV[4])
local drain_job_id  = ARGV[5]
local idem          = ARGV[6]  -- idempotency key or ""
local job_payload   = ARGV[7]  -- serialized drain job
local job_expiry_ms = ARGV[8]
local metadata      = ARGV[9]  -- the turn's metadata (compact JSON object) or ""
local webhook_url   = ARGV[10] -- called back when the turn ends (end_turn.lua), or ""

if idem ~= "" then
  local existing = redis.call("GET", idem_key)
  if existing then
    return {"dup", existing, 0, -1, 0}
  end
end
if redis.call("EXISTS", turn_key) == 1 then
  return {"dup", turn_id, 0, -1, 0}
end
local waiting = redis.call("LLEN", inbox_key)
if waiting >= max_waiting then
  return {"full", "", 0, waiting, 0}
end
local now_ms = redis_now_ms()
local stored_idem_key = ""
if idem ~= "" then
  redis.call("SET", idem_key, turn_id)
  stored_idem_key = idem_key
end
redis.call("HSET", turn_key, "session", session_id, "text", text, "state", "queued",
  "created", now_ms, "attempts", 0, "idem", stored_idem_key, "webhook", webhook_url)
if metadata ~= "" then
  redis.call("HSET", turn_key, "metadata", metadata)
end
local position = redis.call("RPUSH", inbox_key, turn_id) - 1
redis.call("RPUSH", turns_key, turn_id)
redis.call("SADD", pending_key, session_id)
local queued = 0
if redis.call("EXISTS", lease_key) == 0 and redis.call("EXISTS", drain_job_key) == 0 then
  queue_drain(drain_job_key, job_key, queue_key, drain_job_id, job_payload, job_expiry_ms, 0)
  queued = 1
end
return {"new", turn_id, queued, position, now_ms}
