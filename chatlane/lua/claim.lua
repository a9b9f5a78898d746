--! use: clock begin_head session_idle
-- claim: take a session's lease for a drain job and begin its head turn, or say why not.
--
-- Returns {1, token, step, tail} on success: token = "<fence>:<holder>:<nonce>", unique for all time
--   per session, even if the fence counter rolls back; a begun step carries an 8th item, the ms
--   left of the model's provider pause (0: none), so no turn calls a paused model; step is what
--   begin_head returned ({"turn", ...}; {"stopping", ...} or {"defer", ms}, see head_gate.lua; or
--   {"released"} if no head turn was runnable); tail (with "turn" and "stopping") is the newest
--   `tail_len` history entries, oldest first (the drain's window starts there). Beginning and
--   reading here saves a drain two round trips before its first turn.
--   The drain-job key is cleared (the next enqueue after our release must queue a new job), and
--   this job leaves arq's queue: while it holds the lease, recovery is the lease's business
--   (expiry + sweep), and arq would otherwise re-check the running job on every poll.
-- Returns {0, ""} if another holder has the lease; {-1, ""} if the inbox is empty (the session
--   leaves the pending set, the drain-job key is cleared, the session is left to expire when idle:
--   session_idle.lua).
local lease_key     = KEYS[1]
local fence_key     = KEYS[2]  -- fence counter
local inbox_key     = KEYS[3]
local drain_job_key = KEYS[4]
local pending_key   = KEYS[5]  -- pending sessions (SET)
local queue_key     = KEYS[6]  -- arq queue (ZSET)
local stats_key     = KEYS[7]  -- fleet counters (HASH)
local history_key   = KEYS[8]
local pause_key     = KEYS[9]  -- the model's provider pause (budget_pause.lua)
local outbox_key    = KEYS[10] -- webhooks due (end_turn.lua)
local summary_key   = KEYS[11] -- with history, fence: SessionKeys.idle_keys (session_idle.lua)
local turns_key     = KEYS[12]
local trimmed_key   = KEYS[13]
local session_id    = ARGV[1]
local holder        = ARGV[2]  -- worker id
local ttl_ms        = ARGV[3]
local job_id        = ARGV[4]  -- this arq job's id
local prefix        = ARGV[5]  -- turn key prefix
local suffix        = ARGV[6]  -- stream key suffix
local max_attempts  = tonumber(ARGV[7])
local turn_ttl_ms   = ARGV[8]
local stream_ttl_ms = ARGV[9]
local tail_len      = tonumber(ARGV[10])
local nonce         = ARGV[11] -- random, per claim: see below
local idle = {keys = {history_key, fence_key, summary_key, turns_key, trimmed_key}, ttl_ms = tonumber(ARGV[12])}

if redis.call("EXISTS", lease_key) == 1 then
  return {0, ""}
end
if redis.call("LLEN", inbox_key) == 0 then
  redis.call("DEL", drain_job_key)
  redis.call("SREM", pending_key, session_id)
  session_idle(idle)
  return {-1, ""}
end
-- The counter alone could repeat after it rolls back (AOF everysec losing its last second, or a
-- failover to a replica that missed the last INCR): the same holder would get the same token, and
-- a stale runner inside it would pass the fence. The caller's random nonce makes that impossible.
local token = redis.call("INCR", fence_key) .. ":" .. holder .. ":" .. nonce
redis.call("SET", lease_key, token, "PX", ttl_ms)
redis.call("DEL", drain_job_key)
redis.call("ZREM", queue_key, job_id)
local step = begin_head(lease_key, inbox_key, stats_key, pending_key, session_id, prefix, suffix, max_attempts,
  redis_now_ms(), turn_ttl_ms, stream_ttl_ms, outbox_key, idle)
local tail = {}
if step[1] == "turn" or step[1] == "stopping" then
  tail = redis.call("LRANGE", history_key, -tail_len, -1)
end
if step[1] == "turn" then
  step[8] = math.max(0, redis.call("PTTL", pause_key))
end
return {1, token, step, tail}
