--! use: clock
-- budget_release: give back a concurrency slot after a model call, and settle its tokens.
--
-- The tokens taken before the call were an estimate; `unused` (estimate - actual, negative when
-- the call used more) goes back into the tokens-per-minute bucket, which may go below zero: the
-- next calls then wait until the debt is paid.
-- Returns the session id of the oldest slot waiter for the caller to wake (wake.lua), or "".
local slots_key   = KEYS[1]
local bucket_key  = KEYS[2]
local waiters_key = KEYS[3]
local member      = ARGV[1]  -- "" if no slot was held
local unused      = tonumber(ARGV[2])
local tpm         = tonumber(ARGV[3])
local burst_s     = tonumber(ARGV[4])

if member ~= "" then
  redis.call("ZREM", slots_key, member)
end
if tpm > 0 and unused ~= 0 then
  local left = tonumber(redis.call("HGET", bucket_key, "tpm"))
  if left then
    redis.call("HSET", bucket_key, "tpm", tostring(math.min(tpm * burst_s / 60, left + unused)))
  end
end
local first = redis.call("ZRANGE", waiters_key, 0, 0)
return first[1] or ""
