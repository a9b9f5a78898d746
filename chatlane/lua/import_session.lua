--! use: clock trim_history session_idle
-- import_session: write an exported session's history (and its summary, if any) into a session
-- that has none, atomically (chatlane/export.py, ChatProducer.import_session).
--
-- Refuses, writing nothing, unless the session is empty: no lease (no drain runs it, so no commit
-- can land between this check and the write, and a stale ex-holder's token matches no lease: the
-- fence of advance.lua), nothing in its inbox, no history, no turn index, no summary, no trimmed
-- count. The entries keep their absolute indexes: `history_start` (the export's trimmed count)
-- becomes the trimmed count, so a summary's `upto` and message indexes mean what they meant. The
-- history bound applies as at a commit (trim_history.lua); with nothing queued, the session is
-- left to expire when idle (session_idle.lua).
-- Returns {"ok", entries stored, entries trimmed now} or {"not_empty", why}.
local lease_key     = KEYS[1]
local inbox_key     = KEYS[2]
local history_key   = KEYS[3]
local turns_key     = KEYS[4]
local summary_key   = KEYS[5]  -- HASH upto, text, at (save_summary.lua)
local trimmed_key   = KEYS[6]
local fence_key     = KEYS[7]
local history_start = tonumber(ARGV[1])
local summary_upto  = tonumber(ARGV[2])  -- -1: no summary
local summary_text  = ARGV[3]
local max_messages  = tonumber(ARGV[4])
local idle_ttl_ms   = tonumber(ARGV[5])
local FIRST_ENTRY   = 6                  -- ARGV[6..]: the history entries, oldest first

if redis.call("EXISTS", lease_key) == 1 then
  return {"not_empty", "is being drained (a worker holds its lease)"}
end
if redis.call("LLEN", inbox_key) > 0 then
  return {"not_empty", "has queued turns"}
end
if redis.call("LLEN", history_key) > 0 then
  return {"not_empty", "has history"}
end
if redis.call("LLEN", turns_key) > 0 then
  return {"not_empty", "has turns"}
end
if redis.call("EXISTS", summary_key, trimmed_key) > 0 then
  return {"not_empty", "has a summary or trimmed history"}
end
-- In slices: unpack() of a very long list would overflow Lua's C stack (~8000 values).
for first = FIRST_ENTRY, #ARGV, 1000 do
  redis.call("RPUSH", history_key, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if history_start > 0 then
  redis.call("SET", trimmed_key, history_start)
end
if summary_upto >= 0 then
  redis.call("HSET", summary_key, "upto", summary_upto, "text", summary_text, "at", redis_now_ms())
end
local trimmed = trim_history(history_key, trimmed_key, max_messages)
session_idle({keys = {history_key, fence_key, summary_key, turns_key, trimmed_key}, ttl_ms = idle_ttl_ms})
return {"ok", redis.call("LLEN", history_key), trimmed}
