--! use: queue_drain
-- sweep: re-queue a drain job for a pending session that nobody will serve.
--
-- KEYS[1] lease   KEYS[2] inbox   KEYS[3] drain flag   KEYS[4] pending (SET)
-- KEYS[5] arq job key for the new job ARGV[3]   KEYS[6] arq queue (ZSET)
-- KEYS[7] arq in-progress key of the job named by the drain flag as observed (ARGV[2])
-- ARGV[1] session id   ARGV[2] drain flag value observed by the caller, or ""
-- ARGV[3] new drain job id   ARGV[4] serialized job   ARGV[5] job score ms   ARGV[6] job expiry ms
-- ARGV[7] arq's in-progress ttl ms (job_timeout + 10 s)
-- ARGV[8] ms after which a started job that has not claimed the lease is presumed dead
--
-- Returns 1 if it queued a new drain job, 0 if the session is held, empty, or already has a
-- live drain job (queued, or started less than ARGV[8] ms ago). A flag that changed since the
-- caller read it is left for the next sweep.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
if redis.call("LLEN", KEYS[2]) == 0 then
  redis.call("SREM", KEYS[4], ARGV[1])
  return 0
end
local flag = redis.call("GET", KEYS[3])
if flag then
  if flag ~= ARGV[2] then
    return 0
  end
  if redis.call("ZSCORE", KEYS[6], flag) then
    local ttl = redis.call("PTTL", KEYS[7])
    if ttl < 0 or tonumber(ARGV[7]) - ttl < tonumber(ARGV[8]) then
      return 0
    end
  end
end
queue_drain(KEYS[3], KEYS[5], KEYS[6], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
