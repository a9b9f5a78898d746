--! use: clock
-- budget_acquire: take what one model call needs from a model's fleet-wide budget, or say how
-- long to wait. One script, so every worker of the fleet sees one consistent budget.
--
-- The budget of a model: a provider pause (set by budget_pause.lua after a 429), a concurrency
-- cap (a ZSET of slot leases scored by expiry: a dead worker's slot frees itself), and token
-- buckets for requests and tokens per minute (refilled continuously, each holding at most
-- `burst_s` seconds' worth). Sessions waiting for a slot queue in `waiters` (FIFO): a slot that
-- frees goes to the oldest waiter, not to whoever asks next, so no session starves.
--
-- Returns {"ok"}: a slot is held as `member` (renew it with the lease; release it with
-- budget_release.lua) and the request and `est_tokens` were taken from the buckets.
-- Returns {"wait", ms, why}: nothing taken; try again in `ms` (why: "paused" | "slot" | "rpm" |
-- "tpm"). For "slot" the caller is woken earlier by budget_release.lua (see wake.lua); `ms` is
-- the fallback.
local slots_key   = KEYS[1]  -- ZSET slot member -> expiry ms
local bucket_key  = KEYS[2]  -- HASH rpm, tpm (tokens left), at (ms of the last refill)
local pause_key   = KEYS[3]  -- STRING with PX while the provider asked us to back off
local waiters_key = KEYS[4]  -- ZSET session -> ms it started waiting for a slot (its place)
local seen_key    = KEYS[5]  -- HASH session -> ms it last asked (a waiter that stopped asking
                             -- for 2 slot TTLs is gone: its session was deleted, or it moved on)
local stats_key   = KEYS[6]
local member      = ARGV[1]  -- this call's slot id
local session_id  = ARGV[2]
local slot_ttl_ms = tonumber(ARGV[3])
local max_conc    = tonumber(ARGV[4])  -- 0: no cap
local rpm         = tonumber(ARGV[5])  -- 0: no limit
local tpm         = tonumber(ARGV[6])  -- 0: no limit
local est_tokens  = tonumber(ARGV[7])
local burst_s     = tonumber(ARGV[8])

local now = redis_now_ms()
local paused = redis.call("PTTL", pause_key)
if paused > 0 then
  return {"wait", paused, "paused"}
end

if max_conc > 0 then
  redis.call("ZREMRANGEBYSCORE", slots_key, "-inf", now)
  local free = max_conc - redis.call("ZCARD", slots_key)
  -- Drop waiters ahead of us that stopped asking, so a vanished session cannot hold the line.
  for _, w in ipairs(redis.call("ZRANGE", waiters_key, 0, math.max(free, 1) - 1)) do
    local seen = tonumber(redis.call("HGET", seen_key, w) or "0")
    if w ~= session_id and seen < now - 2 * slot_ttl_ms then
      redis.call("ZREM", waiters_key, w)
      redis.call("HDEL", seen_key, w)
    end
  end
  local rank = redis.call("ZRANK", waiters_key, session_id)
  local ahead = rank or redis.call("ZCARD", waiters_key)
  if free <= 0 or ahead >= free then
    redis.call("ZADD", waiters_key, "NX", now, session_id)
    redis.call("HSET", seen_key, session_id, now)
    redis.call("HINCRBY", stats_key, "budget_waits_slot", 1)
    return {"wait", slot_ttl_ms, "slot"}
  end
end

-- Token buckets: capacity = limit * burst_s / 60, refilled at limit per minute.
local b = redis.call("HMGET", bucket_key, "rpm", "tpm", "at")
local at = tonumber(b[3]) or now
local elapsed = math.max(0, now - at)
local function level(limit, left)
  local cap = limit * burst_s / 60
  if not left then return cap, cap end  -- HMGET answers false for a missing field
  return math.min(cap, tonumber(left) + elapsed * limit / 60000), cap
end
local r_left, t_left = 0, 0
local wait, why = 0, ""
if rpm > 0 then
  local cap
  r_left, cap = level(rpm, b[1])
  if r_left < 1 then
    wait, why = math.ceil((1 - r_left) * 60000 / rpm), "rpm"
  end
end
if tpm > 0 then
  local cap
  t_left, cap = level(tpm, b[2])
  local need = math.min(est_tokens, cap)  -- a request larger than the bucket waits for a full one
  if t_left < need then
    local w = math.ceil((need - t_left) * 60000 / tpm)
    if w > wait then wait, why = w, "tpm" end
  end
end
if wait > 0 then
  redis.call("HINCRBY", stats_key, "budget_waits_" .. why, 1)
  return {"wait", wait, why}
end
if rpm > 0 then
  redis.call("HSET", bucket_key, "rpm", tostring(r_left - 1), "at", now)
end
if tpm > 0 then
  redis.call("HSET", bucket_key, "tpm", tostring(t_left - est_tokens), "at", now)
end
if max_conc > 0 then
  redis.call("ZADD", slots_key, now + slot_ttl_ms, member)
  redis.call("ZREM", waiters_key, session_id)
  redis.call("HDEL", seen_key, session_id)
end
return {"ok"}
