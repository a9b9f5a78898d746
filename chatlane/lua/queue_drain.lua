--! use: clock
-- queue_drain: library (see chatlane/scripts/loader.py) for scripts that start a drain job.
--
-- Writes an arq job exactly as arq's ArqRedis.enqueue_job does (job key with PX expiry, queue
-- ZSET member scored by its due time: now, by Redis' clock, never a producer's) and records its id in the session's drain-job key, so that
-- accepting work and queuing the job that will serve it happen in the same atomic step.
--   drain_job_key  session's drain-job key    job_key  arq job key ("arq:job:" .. job_id)
--   queue_key  arq queue ZSET              job_id, payload (serialized arq job), expires_ms
--   delay_ms   0, or how long the job must wait ("not before": the session waits for budget)
local function queue_drain(drain_job_key, job_key, queue_key, job_id, payload, expires_ms, delay_ms)
  redis.call("SET", drain_job_key, job_id)
  redis.call("SET", job_key, payload, "PX", expires_ms + delay_ms)
  redis.call("ZADD", queue_key, redis_now_ms() + delay_ms, job_id)
end
