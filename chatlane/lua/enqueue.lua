--! use: clock queue_drain hurry_drain on_busy token_bucket
-- enqueue: accept one chat turn for a session, atomically, applying the caller's on_busy policy
-- towards a busy session (one with a queued or running turn: a non-empty inbox).
--
-- Returns {status, turn_id, drain_queued, position, created_ms}:
--   "new"    turn recorded and pushed at `position`; drain_queued 1 if no runner held the session
--            and no drain job was queued, so this call queued job `drain_job_id`. With "interrupt"
--            or "rollback" the turns ahead were stopped or cancelled first (on_busy.lua).
--   "joined" (on_busy "coalesce") the text joined turn_id, the session's newest turn that has not
--            begun (on_busy.lua); `drain_queued` holds its new "coalesced" count. No new turn.
--   "dup"    the idempotency key (or the turn id itself, on a client retry) already names turn_id;
--            nothing was written.
--   "full"   the inbox already holds `max_waiting` turns; nothing was written.
--   "busy"   (on_busy "reject") the session has `position` turns queued or running; nothing was
--            written.
--   "quota"  {"quota", which, limit, retry_after_ms, 0}: the tenant is at a quota, `which` is
--            "max_queued" (it has `limit` turns queued or running, across all its sessions) or
--            "turns_per_min" (its token bucket is empty); nothing was written.
-- Quotas count only new turns: "dup" and "joined" answer before they are checked. A counted turn
-- is in the tenant's active SET and names that SET in its record ("active"), so every ending
-- (end_turn.lua) and delete_session.lua takes it out.
-- The turn record and idempotency key get a TTL only when the turn ends (end_turn.lua), so an
-- accepted turn never expires while it waits (a deadline, `expires_after_ms`, ends it "expired":
-- deadline.lua).
local inbox_key     = KEYS[1]  -- session inbox (LIST)
local lease_key     = KEYS[2]  -- session lease (STRING)
local drain_job_key = KEYS[3]  -- session's queued drain job id (STRING)
local idem_key      = KEYS[4]  -- idempotency key (unused when idem == "")
local turn_key      = KEYS[5]  -- turn record (HASH)
local pending_key   = KEYS[6]  -- pending sessions (SET)
local job_key       = KEYS[7]  -- arq job key for drain_job_id
local queue_key     = KEYS[8]  -- arq queue (ZSET)
local turns_key     = KEYS[9]  -- the session's turn ids in enqueue order (LIST; delete_session.lua owns it)
local outbox_key    = KEYS[10] -- webhooks due (end_turn.lua, for the turns a policy cancels)
local deadlines_key = KEYS[11] -- queued turns' deadlines (ZSET turn id -> ms; expire.lua)
local active_key    = KEYS[12] -- the tenant's queued and running turns (SET; used when max_queued > 0)
local bucket_key    = KEYS[13] -- the tenant's turns-per-minute bucket (HASH, token_bucket.lua)
local idle_keys     = {KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18]}  -- SessionKeys.idle_keys
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
local on_busy       = ARGV[11] -- "enqueue" | "reject" | "interrupt" | "rollback" | "coalesce"
local expires_after_ms = tonumber(ARGV[12])  -- 0: no deadline
local window_ms     = tonumber(ARGV[13])     -- coalesce debounce (on_busy.lua, join_turn)
local max_wait_ms   = tonumber(ARGV[14])
local max_texts     = tonumber(ARGV[15])
local prefix        = ARGV[16] -- turn key prefix
local suffix        = ARGV[17] -- stream key suffix
local turn_ttl_ms   = ARGV[18] -- retention of the turns a policy cancels
local stream_ttl_ms = ARGV[19]
local channel_prefix = ARGV[20] -- stop channels (stop_request.lua)
local tenant        = ARGV[21]
local max_queued    = tonumber(ARGV[22])  -- the tenant's queued + running turns; 0: no limit
local per_min       = tonumber(ARGV[23])  -- the tenant's new turns a minute (burst: as many); 0: no limit
local trace         = ARGV[24] -- the enqueue span's W3C traceparent (chatlane/tracing.py) or ""

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
if on_busy == "reject" and waiting > 0 then
  return {"busy", "", 0, waiting, 0}
end
local now_ms = redis_now_ms()
if on_busy == "coalesce" then
  local target = coalesce_target(inbox_key, prefix, max_texts)
  if target then
    local tk = prefix .. target
    local coalesced = join_turn(tk, target, text, idem ~= "" and idem_key or "", now_ms, window_ms, max_wait_ms)
    return {"joined", target, coalesced, waiting - 1, tonumber(redis.call("HGET", tk, "created"))}
  end
end
local stopping = on_busy == "interrupt" or on_busy == "rollback"
if waiting >= max_waiting and not stopping then
  return {"full", "", 0, waiting, 0}
end
-- Before supersede: a refusal writes nothing.
local PRUNE_SAMPLE = 16
local level = 0
if per_min > 0 then
  local wait_ms
  level, wait_ms = bucket_level(bucket_key, per_min, per_min, now_ms)
  if wait_ms > 0 then
    return {"quota", "turns_per_min", per_min, wait_ms, 0}
  end
end
-- interrupt / rollback cancel the session's queued turns (on_busy.lua, supersede) in this same
-- script: the places they hold count as free, so a tenant at its limit can still double-text.
-- A running turn keeps its place until its stop ends it. The inbox holds at most max_waiting ids.
local freed = 0
if stopping and waiting > 0 and max_queued > 0 then
  for _, id in ipairs(redis.call("LRANGE", inbox_key, 0, -1)) do
    local f = redis.call("HMGET", prefix .. id, "state", "stop")
    if f[1] == "queued" and not f[2] and redis.call("SISMEMBER", active_key, id) == 1 then
      freed = freed + 1
    end
  end
end
if max_queued > 0 and redis.call("SCARD", active_key) - freed >= max_queued then
  -- At the limit, drop members whose turn is gone without an ending (its record deleted by hand,
  -- or expired), so no lost turn holds the quota for ever. A sample, not the whole SET: a tenant
  -- that keeps knocking at its limit must not cost Redis O(limit) per knock; such members are
  -- rare, and every refusal looks at another sample.
  for _, id in ipairs(redis.call("SRANDMEMBER", active_key, PRUNE_SAMPLE)) do
    local st = redis.call("HGET", prefix .. id, "state")
    if st ~= "queued" and st ~= "running" then
      redis.call("SREM", active_key, id)
    end
  end
  if redis.call("SCARD", active_key) - freed >= max_queued then
    return {"quota", "max_queued", max_queued, 1000, 0}
  end
end
if stopping and waiting > 0 then
  supersede(inbox_key, lease_key, turn_id, on_busy == "interrupt" and "interrupt" or "cancel", prefix, suffix,
    channel_prefix, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
end

local stored_idem_key = ""
if idem ~= "" then
  redis.call("SET", idem_key, turn_id)
  stored_idem_key = idem_key
end
redis.call("HSET", turn_key, "session", session_id, "text", text, "state", "queued",
  "created", now_ms, "attempts", 0, "idem", stored_idem_key, "webhook", webhook_url, "tenant", tenant)
if per_min > 0 then
  bucket_take(bucket_key, level, per_min, per_min, now_ms)
end
if max_queued > 0 then
  redis.call("SADD", active_key, turn_id)
  redis.call("HSET", turn_key, "active", active_key)
end
if metadata ~= "" then
  redis.call("HSET", turn_key, "metadata", metadata)
end
if trace ~= "" then
  redis.call("HSET", turn_key, "trace", trace)
end
local delay_ms = 0
if on_busy == "coalesce" then
  -- It can absorb the texts that follow: it begins `window_ms` after its newest (head_gate.lua).
  delay_ms = window_ms
  redis.call("HSET", turn_key, "nb", now_ms + window_ms)
end
if expires_after_ms > 0 then
  redis.call("HSET", turn_key, "expires", now_ms + expires_after_ms)
  redis.call("ZADD", deadlines_key, now_ms + expires_after_ms, turn_id)
end
local position = redis.call("RPUSH", inbox_key, turn_id) - 1
redis.call("RPUSH", turns_key, turn_id)
redis.call("SADD", pending_key, session_id)
for _, key in ipairs(idle_keys) do
  redis.call("PERSIST", key)  -- a session with a queued turn never expires (session_idle.lua)
end
local queued = 0
if redis.call("EXISTS", lease_key) == 0 then
  if redis.call("EXISTS", drain_job_key) == 0 then
    queue_drain(drain_job_key, job_key, queue_key, drain_job_id, job_payload, job_expiry_ms,
      position == 0 and delay_ms or 0)
    queued = 1
  elseif position == 0 and delay_ms == 0 then
    -- This turn replaced a head that was waiting (for more texts, or for budget): no reason to wait.
    hurry_drain(drain_job_key, queue_key)
  end
end
return {"new", turn_id, queued, position, now_ms}
