--! use: queue_drain
-- handback: give a session back to the fleet while turns still wait (drain budget spent,
-- worker shutting down, or the drain job cancelled mid-turn).
--
-- KEYS[1] lease   KEYS[2] inbox   KEYS[3] drain flag   KEYS[4] pending (SET)
-- KEYS[5] arq job key for ARGV[3]   KEYS[6] arq queue (ZSET)
-- ARGV[1] our lease token   ARGV[2] session id   ARGV[3] drain job id   ARGV[4] serialized job
-- ARGV[5] job score ms   ARGV[6] job expiry ms   ARGV[7] turn key prefix
--
-- Returns 0 if the lease is not ours (nothing written); 1 if the inbox was empty (lease
-- released, session left pending); 2 if a new drain job was queued and the lease released.
-- A head turn left "running" by an interrupted generation goes back to "queued": it has not
-- been committed and will run again (its attempt stays counted).
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[1])
local head = redis.call("LINDEX", KEYS[2], 0)
if not head then
  redis.call("SREM", KEYS[4], ARGV[2])
  return 1
end
local tk = ARGV[7] .. head
if redis.call("HGET", tk, "state") == "running" then
  redis.call("HSET", tk, "state", "queued")
end
queue_drain(KEYS[3], KEYS[5], KEYS[6], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 2
