--! use: clock
-- wake: make a session's delayed drain job due now (it waits for budget that has just freed).
-- Returns 1 if a delayed job was brought forward, 0 otherwise (no job, or already due).
local drain_job_key = KEYS[1]
local queue_key     = KEYS[2]

local job_id = redis.call("GET", drain_job_key)
if not job_id then
  return 0
end
local now = redis_now_ms()
local score = redis.call("ZSCORE", queue_key, job_id)
if score and tonumber(score) > now then
  redis.call("ZADD", queue_key, "XX", now, job_id)
  return 1
end
return 0
