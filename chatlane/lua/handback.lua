--! use: queue_drain session_idle
-- handback: give a session back to the fleet while turns still wait (drain budget spent,
-- worker shutting down, or the drain job cancelled mid-turn).
--
-- Returns 0 if the lease is not ours (nothing written); 1 if the inbox was empty (lease
-- released, session left pending and to expire when idle: session_idle.lua); 2 if a new drain
-- job was queued and the lease released.
-- A head turn left "running" by an interrupted generation goes back to "queued": it has not
-- been committed and will run again (its attempt stays counted, unless `refund` says the
-- attempt never reached the model: it waited for budget, or the provider refused it with 429).
-- With `delay_ms` the new drain job is due only then: the session waits for budget without
-- holding a job slot, and keeps its order (the head turn stays at the head).
local lease_key     = KEYS[1]
local inbox_key     = KEYS[2]
local drain_job_key = KEYS[3]
local pending_key   = KEYS[4]  -- pending sessions (SET)
local job_key       = KEYS[5]  -- arq job key for job_id
local queue_key     = KEYS[6]  -- arq queue (ZSET)
-- KEYS[7..11]: SessionKeys.idle_keys (session_idle.lua)
local token         = ARGV[1]  -- our lease token
local session_id    = ARGV[2]
local job_id        = ARGV[3]  -- the new drain job
local job_payload   = ARGV[4]
local job_expiry_ms = ARGV[5]
local prefix        = ARGV[6]  -- turn key prefix
local delay_ms      = tonumber(ARGV[7])
local refund        = ARGV[8]  -- "1": the head turn's current attempt does not count
local idle          = {keys = {KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]}, ttl_ms = tonumber(ARGV[9])}

if redis.call("GET", lease_key) ~= token then
  return 0
end
redis.call("DEL", lease_key)
local head = redis.call("LINDEX", inbox_key, 0)
if not head then
  redis.call("SREM", pending_key, session_id)
  session_idle(idle)
  return 1
end
local tk = prefix .. head
if redis.call("HGET", tk, "state") == "running" then
  redis.call("HSET", tk, "state", "queued")
  if refund == "1" and tonumber(redis.call("HGET", tk, "attempts") or "0") > 0 then
    redis.call("HINCRBY", tk, "attempts", -1)
  end
end
queue_drain(drain_job_key, job_key, queue_key, job_id, job_payload, job_expiry_ms, delay_ms)
return 2
