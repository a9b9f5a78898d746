--! use: clock record_attempt
-- attempt_ended: record when a generation attempt stopped, for a holder that cannot go through
-- advance.lua (it lost its lease, or is shutting down). Unfenced on purpose: it is evidence, not
-- state; it changes nothing that a drain, a reader or a commit depends on.
--
-- Returns 1 if recorded, 0 if the turn record is gone.
local turn_key = KEYS[1]
local attempt  = ARGV[1]
local end_ms   = ARGV[2]  -- the holder's upper bound of the end, in Redis time (ms)

if redis.call("EXISTS", turn_key) == 0 then
  return 0
end
record_attempt_end(turn_key, attempt, end_ms, redis_now_ms())
return 1
