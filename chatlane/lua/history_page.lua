-- history_page: read (writes nothing) one page of a session's history, by absolute index.
--
-- An entry's absolute index is the count of entries trimmed from the history's front
-- (trim_history.lua) plus its place in the list, so a page asked for by index stays the same page
-- while the oldest entries go. One script, so the count and the entries are from the same instant.
-- Returns {first, total, start, entries}: first = the oldest index still kept (the trimmed count),
-- total = first + entries kept, entries = those with index in [start, end), oldest first, where
-- end = `before` clamped to [first, total] (the newest when -1) and start = max(first, end - `limit`)
-- (first when `limit` is -1).
local history_key = KEYS[1]
local trimmed_key = KEYS[2]
local limit       = tonumber(ARGV[1])  -- -1: all
local before      = tonumber(ARGV[2])  -- -1: up to the newest

local first = tonumber(redis.call("GET", trimmed_key) or "0")
local total = first + redis.call("LLEN", history_key)
local stop = total
if before >= 0 then
  stop = math.max(first, math.min(before, total))
end
local start = first
if limit >= 0 then
  start = math.max(first, stop - limit)
end
local entries = {}
if stop > start then
  entries = redis.call("LRANGE", history_key, start - first, stop - first - 1)
end
return {first, total, start, entries}
