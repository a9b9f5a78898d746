-- end_turn: library (see chatlane/scripts/loader.py) for scripts that end a turn.
--
-- Marks the turn record terminal, starts the retention clocks of the record, its idempotency
-- key and its token stream, and writes the stream's final entry (fields of chatlane/stream.py:
-- t=type, s=state). It does not touch the inbox: callers pop or remove the turn themselves.
--   turn_key   the turn record (HASH)      stream_key  its token stream
--   state      "completed" | "failed" | "cancelled" | "interrupted" | "expired"
--   field, value  "reply"/"error"/"reason" and its text (an error is also the turn's "reason",
--                 unless a stop request gave one already)      now_ms  Redis TIME in ms
--   turn_ttl_ms, stream_ttl_ms  retention after the end
--   outbox_key  webhooks due (ZSET turn id -> due ms): a turn with a webhook URL enters it here, in
--               the same script that ends it, so no ended turn's webhook is ever forgotten
-- A turn counted against its tenant's max_queued names the tenant's active SET in its record
-- ("active", enqueue.lua): it leaves that SET here, on every ending.
local function end_turn(turn_key, stream_key, state, field, value, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
  redis.call("HSET", turn_key, "state", state, field, value, "finished", now_ms)
  if field == "error" then
    redis.call("HSETNX", turn_key, "reason", value)
  end
  local hook = redis.call("HGET", turn_key, "webhook")
  if hook and hook ~= "" then
    -- A turn record's key ends with its 32-hex-digit turn id (chatlane/keys.py, Keys.turn).
    redis.call("ZADD", outbox_key, now_ms, string.sub(turn_key, -32))
  end
  local active = redis.call("HGET", turn_key, "active")
  if active then
    redis.call("SREM", active, string.sub(turn_key, -32))
  end
  redis.call("PEXPIRE", turn_key, turn_ttl_ms)
  local idem = redis.call("HGET", turn_key, "idem")
  if idem and idem ~= "" then
    redis.call("PEXPIRE", idem, turn_ttl_ms)
  end
  -- The keys of texts that joined a coalesced turn (on_busy.lua), space-separated.
  for key in string.gmatch(redis.call("HGET", turn_key, "idem_more") or "", "%S+") do
    redis.call("PEXPIRE", key, turn_ttl_ms)
  end
  redis.call("XADD", stream_key, "*", "t", "end", "s", state)
  redis.call("PUBLISH", stream_key, "end")  -- wakes the stream's followers (chatlane/keys.py, stream_channels)
  redis.call("PEXPIRE", stream_key, stream_ttl_ms)
end
