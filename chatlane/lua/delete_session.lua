-- delete_session: erase a session, atomically: every key of it, and every turn it enqueued.
--
-- Cancels its queued and running turns by deleting them with the rest: the lease goes, so a
-- running holder's next renewal or commit (renew.lua, advance.lua) finds another token (none) and
-- writes nothing (the fence), and its late chunks find no turn record (publish_chunks.lua). Removes
-- the history, the inbox, the fence counter, the queued drain job's marker, the session's turn
-- index, the summary, the trimmed count and, for each turn in it (or in the inbox): the record, its
-- token stream, its webhook log, its idempotency key, its place in the webhook outbox and in its
-- tenant's active SET (enqueue.lua). The session leaves the pending set. An enqueue after this
-- starts a new, empty session. A drain job still in arq's queue finds an empty inbox and writes nothing.
-- Returns {turns removed, of them queued or running, history messages removed}.
local inbox_key     = KEYS[1]
local history_key   = KEYS[2]
local lease_key     = KEYS[3]
local fence_key     = KEYS[4]
local drain_job_key = KEYS[5]
local turns_key     = KEYS[6]  -- the session's turn ids (LIST, enqueue.lua)
local pending_key   = KEYS[7]  -- pending sessions (SET)
local outbox_key    = KEYS[8]  -- webhooks due (ZSET turn id -> ms)
local summary_key   = KEYS[9]
local trimmed_key   = KEYS[10] -- history entries trimmed so far (trim_history.lua)
local session_id    = ARGV[1]
local prefix        = ARGV[2]  -- turn key prefix
local stream_suffix = ARGV[3]
local webhook_suffix = ARGV[4]

local ids = redis.call("LRANGE", turns_key, 0, -1)
-- The inbox too: turns enqueued before the index existed.
for _, id in ipairs(redis.call("LRANGE", inbox_key, 0, -1)) do
  ids[#ids + 1] = id
end
local removed, active = 0, 0
for _, id in ipairs(ids) do
  local tk = prefix .. id
  local rec = redis.call("HMGET", tk, "session", "state", "idem", "active")
  -- Checked, so a turn id in the index can never name another session's turn.
  if rec[1] == session_id then
    if rec[2] == "queued" or rec[2] == "running" then
      active = active + 1
    end
    if rec[3] and rec[3] ~= "" then
      redis.call("DEL", rec[3])
    end
    if rec[4] then
      redis.call("SREM", rec[4], id)
    end
    redis.call("DEL", tk, tk .. stream_suffix, tk .. webhook_suffix)
    -- An open stream of the turn reads again at once, finds no record and ends (404), not at its
    -- next keepalive tick.
    redis.call("PUBLISH", tk .. stream_suffix, "")
    redis.call("ZREM", outbox_key, id)
    removed = removed + 1
  end
end
local messages = redis.call("LLEN", history_key)
redis.call("DEL", inbox_key, history_key, lease_key, fence_key, drain_job_key, turns_key, summary_key, trimmed_key)
redis.call("SREM", pending_key, session_id)
return {removed, active, messages}
