--! use: clock end_turn stop_request
-- cancel: withdraw a queued turn, or ask the holder of a running one to stop it.
--
-- Returns
--   {"cancelled"}        the turn was queued: it left the inbox and ended "cancelled" (`reason`,
--                        also in `error`). Atomic against advance.lua: a turn is either begun or
--                        cancelled.
--   {"stopping", mode}   the turn is running: the stop is recorded on it and its holder told
--                        (stop_request.lua); the holder ends it "interrupted" (mode "interrupt",
--                        its partial reply kept) or "cancelled" (mode "cancel", nothing in history)
--                        with its fenced commit. `mode` is the one that stands: the first request's.
--                        Atomic against advance.lua: if this ran first, that commit cannot complete
--                        the turn; if the commit ran first, the turn has ended and this answers
--                        {"state", ...}.
--   {"state", state}     the turn has ended already; nothing written.
--   {"missing"}          no such turn in that session.
local turn_key      = KEYS[1]  -- turn record (HASH)
local inbox_key     = KEYS[2]  -- its session's inbox (LIST)
local stream_key    = KEYS[3]  -- its token stream
local outbox_key    = KEYS[4]  -- webhooks due (end_turn.lua)
local lease_key     = KEYS[5]  -- its session's lease (the holder to tell)
local turn_id       = ARGV[1]
local session_id    = ARGV[2]  -- as the caller read it from the record
local reason        = ARGV[3]  -- for a queued turn
local turn_ttl_ms   = ARGV[4]
local stream_ttl_ms = ARGV[5]
local mode          = ARGV[6]  -- for a running turn: "interrupt" (keep the partial reply) | "cancel"
local stop_reason   = ARGV[7]  -- for a running turn
local channel_prefix = ARGV[8] -- see stop_request.lua

local f = redis.call("HMGET", turn_key, "state", "session", "stop")
local state = f[1]
if not state or f[2] ~= session_id then
  return {"missing"}
end
if state ~= "queued" and state ~= "running" then
  return {"state", state}
end
if f[3] then
  return {"stopping", f[3]}  -- asked before (a handed-back turn may be queued again meanwhile)
end
if state == "running" then
  return {"stopping", request_stop(turn_key, turn_id, mode, stop_reason, lease_key, channel_prefix)}
end
redis.call("LREM", inbox_key, 1, turn_id)
end_turn(turn_key, stream_key, "cancelled", "error", reason, redis_now_ms(), turn_ttl_ms, stream_ttl_ms, outbox_key)
return {"cancelled"}
