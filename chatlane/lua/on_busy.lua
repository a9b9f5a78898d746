--! use: end_turn stop_request
-- on_busy: library (see chatlane/scripts/loader.py) for enqueue.lua's policies towards a busy
-- session (one with a queued or running turn). See chatlane/turns.py OnBusy.

-- interrupt / rollback: stop the running turn ("interrupt" keeps its partial reply, "cancel"
-- rolls it back) and cancel every queued turn ahead of `new_id`, the reason naming it. A turn
-- that already has a stop request keeps the outcome that request decided.
--   inbox_key, lease_key   prefix, suffix  turn key prefix, stream key suffix   now_ms
--   turn_ttl_ms, stream_ttl_ms, outbox_key  see end_turn.lua   channel_prefix  see stop_request.lua
local function supersede(inbox_key, lease_key, new_id, mode, prefix, suffix, channel_prefix, now_ms, turn_ttl_ms,
                         stream_ttl_ms, outbox_key)
  local by = (mode == "interrupt" and "interrupted by " or "rolled back by ") .. new_id
  for _, id in ipairs(redis.call("LRANGE", inbox_key, 0, -1)) do
    local tk = prefix .. id
    local f = redis.call("HMGET", tk, "state", "stop")
    if f[1] == "running" and not f[2] then
      request_stop(tk, id, mode, by, lease_key, channel_prefix)
    elseif f[1] == "queued" and not f[2] then
      redis.call("LREM", inbox_key, 1, id)
      end_turn(tk, tk .. suffix, "cancelled", "error", "superseded by " .. new_id, now_ms, turn_ttl_ms, stream_ttl_ms,
        outbox_key)
    end
  end
end

-- coalesce: the turn a new text may join: the newest of the session, if it is queued, has never
-- begun an attempt (a begun turn can no longer absorb: begin_head.lua marks it running in the same
-- atomic step that would make this false), has no stop request and holds fewer than `max_texts`
-- texts. nil if there is none.
local function coalesce_target(inbox_key, prefix, max_texts)
  local tail = redis.call("LINDEX", inbox_key, -1)
  if not tail then
    return nil
  end
  local f = redis.call("HMGET", prefix .. tail, "state", "attempts", "stop", "coalesced")
  if f[1] ~= "queued" or tonumber(f[2] or "0") > 0 or f[3] or 1 + tonumber(f[4] or "0") >= max_texts then
    return nil
  end
  return tail
end

-- Join `text` to the turn: appended to its texts ("more", a JSON array after the first "text"),
-- counted in "coalesced", and its begin put off to `window_ms` after now but no later than
-- `max_wait_ms` after its first text ("nb", not before: begin_head.lua defers until then). An
-- idempotency key of the text names the turn; end_turn.lua starts its retention with the turn's.
-- Returns the new "coalesced" count and "nb".
local function join_turn(turn_key, turn_id, text, idem_key, now_ms, window_ms, max_wait_ms)
  local f = redis.call("HMGET", turn_key, "more", "created", "idem_more")
  local more = cjson.decode(f[1] or "[]")
  table.insert(more, text)
  local nb = math.min(now_ms + window_ms, tonumber(f[2]) + max_wait_ms)
  redis.call("HSET", turn_key, "more", cjson.encode(more), "nb", nb)
  if idem_key ~= "" then
    redis.call("SET", idem_key, turn_id)
    redis.call("HSET", turn_key, "idem_more", ((f[3] or "") .. " " .. idem_key))
  end
  return redis.call("HINCRBY", turn_key, "coalesced", 1), nb
end
