--! use: queue_drain
-- sweep: re-queue a drain job for a pending session that nobody will serve.
--
-- Returns 1 if it queued a new drain job, 0 if the session is held, empty, or already has a
-- live drain job (queued, or started less than `presumed_dead_ms` ago). A drain-job key that
-- changed since the caller read it is left for the next sweep.
local lease_key        = KEYS[1]
local inbox_key        = KEYS[2]
local drain_job_key    = KEYS[3]
local pending_key      = KEYS[4]  -- pending sessions (SET)
local job_key          = KEYS[5]  -- arq job key for the new job
local queue_key        = KEYS[6]  -- arq queue (ZSET)
local in_progress_key  = KEYS[7]  -- arq in-progress key of the job `observed` names
local session_id       = ARGV[1]
local observed         = ARGV[2]  -- drain-job key value the caller read, or ""
local job_id           = ARGV[3]  -- the new drain job
local job_payload      = ARGV[4]
local job_expiry_ms    = ARGV[5]
local in_progress_ttl  = tonumber(ARGV[6])  -- arq's in-progress ttl ms (job_timeout + 10 s)
local presumed_dead_ms = tonumber(ARGV[7])  -- a started job that has not claimed by then is dead

if redis.call("EXISTS", lease_key) == 1 then
  return 0
end
if redis.call("LLEN", inbox_key) == 0 then
  redis.call("SREM", pending_key, session_id)
  return 0
end
local current = redis.call("GET", drain_job_key)
if current then
  if current ~= observed then
    return 0
  end
  if redis.call("ZSCORE", queue_key, current) then
    local ttl = redis.call("PTTL", in_progress_key)
    if ttl < 0 or in_progress_ttl - ttl < presumed_dead_ms then
      return 0
    end
  end
end
queue_drain(drain_job_key, job_key, queue_key, job_id, job_payload, job_expiry_ms, 0)
return 1
