--! use: clock end_turn begin_head record_attempt trim_history session_idle
-- advance: the fenced step of a drain. Finishes the head turn (commit or fail) and begins the
-- next one, in one atomic script, so a busy session costs about one round trip per turn.
--
-- Returns one of
--   {"lost"}      the lease is not ours (expired or taken over): nothing written. This is the
--                 fence: a paused or partitioned ex-holder can never commit.
--   {"turn", id, text, attempts, started_ms, metadata, created_ms, paused_ms, more, trace}   the next turn
--                 is now running (attempt counted); paused_ms: what is left of the model's provider
--                 pause, 0 if none; more: the texts that joined it (JSON array) or ""
--   {"stopping", id, text, attempts, 0, metadata, 0, 0, more}   a turn with a stop request
--                 (stop_request.lua) is at the head: either the one `finish_id` names, whose
--                 "completed" or "failed" was then NOT committed (the request came first and
--                 decides the outcome; the caller commits it again as "stopped"), or the next one
--                 (see head_gate.lua)
--   {"defer", ms} the next turn waits for more texts (head_gate.lua): nothing begun, the lease is
--                 still ours (the caller hands the session back, its drain job due in `ms`)
--   {"released"}  the inbox is empty: lease deleted, session left the pending set
--   {"stopped"}   `next_step` was "stop", or "yield" and another session's drain job has waited
--                 for a slot longer than `yield_grace_ms`: nothing begun, the lease is still ours
--                 (the caller hands the session back, freeing its job slot)
-- Beginning the next turn is begin_head's (begin_head.lua), shared with claim.lua.
-- Retention: a commit that appends to the history trims its oldest entries beyond `max_messages`
-- (trim_history.lua); every commit forgets up to two ids at the front of the session's turn index
-- whose records have expired, so the index stays as long as the records kept; a release leaves the
-- session to expire after `idle_ttl_ms` (session_idle.lua).
local lease_key     = KEYS[1]
local inbox_key     = KEYS[2]
local history_key   = KEYS[3]
local stats_key     = KEYS[4]  -- fleet counters (HASH)
local pending_key   = KEYS[5]  -- pending sessions (SET)
local queue_key     = KEYS[6]  -- arq queue (ZSET), read for "yield"
local pause_key     = KEYS[7]  -- the model's provider pause (budget_pause.lua)
local outbox_key    = KEYS[8]  -- webhooks due (end_turn.lua)
local turns_key     = KEYS[9]  -- the session's turn ids (LIST, enqueue.lua)
local trimmed_key   = KEYS[10] -- history entries trimmed so far (trim_history.lua)
local fence_key     = KEYS[11] -- KEYS[9..13]: SessionKeys.idle_keys (session_idle.lua)
local summary_key   = KEYS[12]
local token         = ARGV[1]  -- our lease token
local ttl_ms        = ARGV[2]
local prefix        = ARGV[3]  -- turn key prefix
local suffix        = ARGV[4]  -- stream key suffix
local finish_id     = ARGV[5]  -- id of the turn to finish, or "" to only begin
local outcome       = ARGV[6]  -- "completed" | "failed" | "stopped" (it has a stop request: its
                               -- "stop" field decides "interrupted" or "cancelled")
local result        = ARGV[7]  -- reply text, error text, or the partial reply of a stopped turn
local turn_ttl_ms   = ARGV[8]  -- retention of finished turn records and idempotency keys
local stream_ttl_ms = ARGV[9]  -- retention of a finished turn's token stream
local next_step     = ARGV[10] -- "begin" the next head turn (releasing the lease if the inbox is
                               -- empty), "yield" (begin unless others wait), or "stop"
local max_attempts  = tonumber(ARGV[11])
local session_id    = ARGV[12]
local ended_id      = ARGV[13] -- turn whose generation attempt just stopped, or ""
local ended_attempt = ARGV[14] -- its attempt number
local ended_ms      = ARGV[15] -- when it stopped (see record_attempt.lua)
local yield_grace_ms = tonumber(ARGV[16])
local max_messages  = tonumber(ARGV[17]) -- history bound, 0: none
local idle_ttl_ms   = tonumber(ARGV[18]) -- session idle expiry, 0: never
local FIRST_ENTRY   = 19       -- ARGV[19..]: history entries of a "completed" turn, in order: its
                               -- user message(s), then every message the turn added (an agent's AI
                               -- tool calls, tool results, answer); of a "stopped" one that ends
                               -- interrupted: its user message(s) and the partial reply. All or
                               -- nothing, in this script.

if redis.call("GET", lease_key) ~= token then
  if finish_id ~= "" then
    redis.call("HINCRBY", stats_key, "stale_commits_rejected", 1)
  end
  return {"lost"}
end
local now_ms = redis_now_ms()
if ended_id ~= "" then
  record_attempt_end(prefix .. ended_id, ended_attempt, ended_ms, now_ms)
end

if finish_id ~= "" then
  if redis.call("LINDEX", inbox_key, 0) ~= finish_id then
    return redis.error_reply("chatlane: turn " .. finish_id .. " is not at the head of its inbox")
  end
  if outcome == "completed" and #ARGV < FIRST_ENTRY then
    return redis.error_reply("chatlane: a completed turn writes at least its user message")
  end
  local tk = prefix .. finish_id
  local stop = redis.call("HGET", tk, "stop")
  if outcome == "stopped" and not stop then
    return redis.error_reply("chatlane: turn " .. finish_id .. " has no stop request to commit")
  end
  if stop and outcome ~= "stopped" then
    -- A stop was requested before this commit: it decides the outcome. Nothing is committed.
    redis.call("PEXPIRE", lease_key, ttl_ms)
    local f = redis.call("HMGET", tk, "text", "attempts", "metadata", "more")
    return {"stopping", finish_id, f[1], tonumber(f[2] or "0"), 0, f[3] or "", 0, 0, f[4] or ""}
  end
  if stop == "interrupt" and #ARGV < FIRST_ENTRY + 1 then
    return redis.error_reply("chatlane: interrupted turn " .. finish_id .. " writes no user message and reply")
  end
  redis.call("LPOP", inbox_key)
  if outcome == "completed" or stop == "interrupt" then
    -- In slices: unpack() of a very long list would overflow Lua's C stack (~8000 values).
    for first = FIRST_ENTRY, #ARGV, 1000 do
      redis.call("RPUSH", history_key, unpack(ARGV, first, math.min(first + 999, #ARGV)))
    end
    redis.call("HSET", tk, "entries", #ARGV - FIRST_ENTRY + 1)
    trim_history(history_key, trimmed_key, max_messages)
  end
  for _ = 1, 2 do
    local oldest = redis.call("LINDEX", turns_key, 0)
    if not oldest or redis.call("EXISTS", prefix .. oldest) == 1 then
      break
    end
    redis.call("LPOP", turns_key)
  end
  if outcome == "completed" then
    end_turn(tk, tk .. suffix, "completed", "reply", result, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  elseif outcome == "failed" then
    end_turn(tk, tk .. suffix, "failed", "error", result, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  elseif stop == "interrupt" then
    end_turn(tk, tk .. suffix, "interrupted", "reply", result, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  else
    end_turn(tk, tk .. suffix, "cancelled", "error", redis.call("HGET", tk, "reason") or "cancelled", now_ms,
      turn_ttl_ms, stream_ttl_ms, outbox_key)
  end
end

redis.call("PEXPIRE", lease_key, ttl_ms)
if next_step == "stop" then
  return {"stopped"}
end
if next_step == "yield" and redis.call("LLEN", inbox_key) > 0
    and #redis.call("ZRANGEBYSCORE", queue_key, "-inf", now_ms - yield_grace_ms, "LIMIT", 0, 1) > 0 then
  redis.call("HINCRBY", stats_key, "drains_yielded", 1)
  return {"stopped"}
end
local idle = {keys = {history_key, fence_key, summary_key, turns_key, trimmed_key}, ttl_ms = idle_ttl_ms}
local step = begin_head(lease_key, inbox_key, stats_key, pending_key, session_id, prefix, suffix, max_attempts,
  now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key, idle)
if step[1] == "turn" then
  step[8] = math.max(0, redis.call("PTTL", pause_key))
end
return step
