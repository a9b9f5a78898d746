--! use: clock deadline
-- expire: end a queued turn whose deadline (expires_after_s) passed before any worker began it.
-- Where turns begin, begin_head.lua does the same check (head_gate.lua); this script is for turns
-- nobody begins: the sweep calls it for due entries of the deadlines ZSET, and a producer calls it
-- when a reader finds a queued turn past its deadline (so it ends, and its stream with it, even
-- while no worker runs). Atomic against begin_head.lua: a turn is either begun or expired.
--
-- Returns "expired" (it left the inbox and ended "expired"), "not_due" (queued, deadline ahead),
-- or "gone" (no longer waiting to start: begun, ended, or its record expired); the turn leaves
-- the deadlines ZSET unless "not_due".
local turn_key      = KEYS[1]  -- turn record (HASH)
local inbox_key     = KEYS[2]  -- its session's inbox (LIST)
local stream_key    = KEYS[3]  -- its token stream
local outbox_key    = KEYS[4]  -- webhooks due (end_turn.lua)
local deadlines_key = KEYS[5]  -- ZSET turn id -> deadline ms
local turn_id       = ARGV[1]
local session_id    = ARGV[2]  -- as the caller read it from the record
local turn_ttl_ms   = ARGV[3]
local stream_ttl_ms = ARGV[4]

local f = redis.call("HMGET", turn_key, "state", "session", "attempts", "stop")
if f[1] ~= "queued" or f[2] ~= session_id or tonumber(f[3] or "0") > 0 or f[4] then
  redis.call("ZREM", deadlines_key, turn_id)
  return "gone"
end
if not expire_if_due(turn_key, stream_key, redis_now_ms(), turn_ttl_ms, stream_ttl_ms, outbox_key) then
  return "not_due"
end
redis.call("LREM", inbox_key, 1, turn_id)
redis.call("ZREM", deadlines_key, turn_id)
return "expired"
