--! use: clock
-- save_summary: fenced. Store the session's history summary (history strategy "summarize"): a
-- summary of the history entries [0, upto), written by the lease holder and fed to the model as a
-- system message before the recent window. The history itself is never touched.
--
-- Returns "ok"; "lost" if the lease is not ours (nothing written: the fence, as in advance.lua);
-- "behind" if the stored summary already covers `upto` entries or more (nothing written: a
-- summary only moves forward).
local lease_key   = KEYS[1]
local summary_key = KEYS[2]  -- HASH upto, text, at (Redis TIME, ms)
local history_key = KEYS[3]
local trimmed_key = KEYS[4]  -- entries trimmed from the history's front: `upto` is an absolute index
local token       = ARGV[1]  -- our lease token
local upto        = tonumber(ARGV[2])
local text        = ARGV[3]

if redis.call("GET", lease_key) ~= token then
  return "lost"
end
if tonumber(redis.call("HGET", summary_key, "upto") or "0") >= upto then
  return "behind"
end
if upto > tonumber(redis.call("GET", trimmed_key) or "0") + redis.call("LLEN", history_key) then
  return redis.error_reply("chatlane: a summary cannot cover entries the history does not have")
end
redis.call("HSET", summary_key, "upto", upto, "text", text, "at", redis_now_ms())
return "ok"
