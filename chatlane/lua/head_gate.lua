--! use: deadline
-- head_gate: library (see chatlane/scripts/loader.py) for begin_head.lua: what keeps the head
-- turn from beginning now. Checked before an attempt is counted, in the script that would begin
-- it, so each of these is decided atomically against the begin:
--   a stop request (stop_request.lua) whose holder could not commit it (it died, or handed the
--     session back): {"stopping", id, text, attempts, 0, metadata, 0, 0, more}; nothing begun, no attempt
--     counted; the caller commits the stop with advance.lua (outcome "stopped"), generating nothing;
--   a deadline passed before it ever began (deadline.lua): "expired"; the turn has ended and the
--     caller pops it;
--   a debounce (on_busy.lua, join_turn): {"defer", ms}; nothing begun; the caller hands the session
--     back with a drain job due in `ms` (no job slot is held while a turn waits for more texts).
-- Returns nil when the head may begin now.
local function gate_head(turn_key, turn_id, stream_key, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  local f = redis.call("HMGET", turn_key, "stop", "nb", "text", "attempts", "metadata", "more")
  if f[1] then
    return {"stopping", turn_id, f[3], tonumber(f[4] or "0"), 0, f[5] or "", 0, 0, f[6] or ""}
  end
  if expire_if_due(turn_key, stream_key, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key) then
    return "expired"
  end
  local nb = tonumber(f[2] or "0")
  if nb > now_ms then
    return {"defer", nb - now_ms}
  end
  return nil
end
