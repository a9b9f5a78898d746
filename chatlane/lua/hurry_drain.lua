--! use: clock
-- hurry_drain: library (see chatlane/scripts/loader.py): make a session's delayed drain job due
-- now (wake.lua: budget freed; enqueue.lua: a new head replaced one that was waiting).
-- Returns 1 if a delayed job was brought forward, 0 otherwise (no job, or already due).
local function hurry_drain(drain_job_key, queue_key)
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
end
