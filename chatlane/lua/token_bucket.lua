-- token_bucket: library (see chatlane/scripts/loader.py) for a token bucket kept in a HASH
-- (fields "tokens" and "at", the ms of the last refill). It holds at most `burst` tokens and refills
-- continuously at `per_min` a minute; a missing HASH is a full bucket. Two steps, so that a script
-- can check several limits before it takes anything (a refusal writes nothing):
--   bucket_level(key, per_min, burst, now_ms) -> level, wait_ms
--       the tokens there now (fractional), and the ms until one whole token is (0 if there is)
--   bucket_take(key, level, per_min, burst, now_ms)
--       take one token from `level` (as bucket_level read it, in the same script); the HASH expires
--       once the bucket would be full again, so idle buckets leave no keys behind
local function bucket_level(key, per_min, burst, now_ms)
  local b = redis.call("HMGET", key, "tokens", "at")
  local level = burst
  if b[1] then
    local elapsed = math.max(0, now_ms - (tonumber(b[2]) or now_ms))
    level = math.min(burst, tonumber(b[1]) + elapsed * per_min / 60000)
  end
  if level >= 1 then
    return level, 0
  end
  return level, math.ceil((1 - level) * 60000 / per_min)
end

local function bucket_take(key, level, per_min, burst, now_ms)
  local left = level - 1
  redis.call("HSET", key, "tokens", tostring(left), "at", now_ms)
  redis.call("PEXPIRE", key, math.max(1, math.ceil((burst - left) * 60000 / per_min)))
end
