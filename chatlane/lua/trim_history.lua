-- trim_history: library (see chatlane/scripts/loader.py) for the scripts that append to a
-- session's history (advance.lua, import_session.lua): CHATLANE_HISTORY_MAX_MESSAGES.
--
-- Drops the oldest entries so that at most `max_messages` remain, never splitting a tool-call
-- group: the history is cut before a turn's user message (whole turns go, the unit of the window,
-- worker/window.py) if one is among the newest `max_messages` entries; otherwise (the newest turn
-- alone is longer) before the first entry there that is not a tool message, so the history never
-- opens on a tool result, nor on an AI message whose tool results were cut. If even that point does
-- not exist (one tool-call group longer than the bound) nothing is cut: the group stays whole.
-- The count of entries cut so far is kept in `trimmed_key`: an entry's absolute index is that count
-- plus its place in the list, so indexes never shift (paging, the summary's `upto`).
-- Entries are told apart by their text alone (chatlane/messages.py, encode_message, writes compact
-- JSON with "type" first and the message id last): a turn's user message starts {"type":"human",
-- and ends with an id "<turn_id>:user"; a tool message starts {"type":"tool",.
-- Returns the number of entries cut now.
-- A turn's user message is usually among the first few entries past the cut: read 8, then more.
local FIRST_BATCH, MAX_BATCH = 8, 128

local function trim_history(history_key, trimmed_key, max_messages)
  if max_messages <= 0 then
    return 0
  end
  local len = redis.call("LLEN", history_key)
  local need = len - max_messages
  if need <= 0 then
    return 0
  end
  local cut, safe = nil, nil
  local i, size = need, FIRST_BATCH
  while i < len and not cut do
    local batch = redis.call("LRANGE", history_key, i, math.min(i + size, len) - 1)
    for j, entry in ipairs(batch) do
      if string.sub(entry, 1, 16) == '{"type":"human",' and string.sub(entry, -8) == ':user"}}' then
        cut = i + j - 1
        break
      end
      if not safe and string.sub(entry, 1, 15) ~= '{"type":"tool",' then
        safe = i + j - 1
      end
    end
    i = i + size
    size = math.min(size * 4, MAX_BATCH)
  end
  cut = cut or safe
  if not cut or cut == 0 then
    return 0
  end
  redis.call("LTRIM", history_key, cut, -1)
  redis.call("INCRBY", trimmed_key, cut)
  return cut
end
