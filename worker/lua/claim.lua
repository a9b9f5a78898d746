-- claim: take a session's lease for a drain job, or say why not.
--
-- KEYS[1] lease   KEYS[2] fence counter   KEYS[3] inbox   KEYS[4] drain flag
-- KEYS[5] pending sessions (SET)   KEYS[6] arq queue (ZSET)
-- ARGV[1] session id   ARGV[2] holder id (worker id)   ARGV[3] lease ttl ms   ARGV[4] this arq job id
--
-- Returns {1, token} on success: token = "<fence>:<holder>", unique for all time per session.
--   The drain flag is cleared (the next enqueue after our release must queue a new job), and
--   this job leaves arq's queue: while it holds the lease, recovery is the lease's business
--   (expiry + sweep), and arq would otherwise re-check the running job on every poll.
-- Returns {0, ""} if another holder has the lease; {-1, ""} if the inbox is empty (the session
--   leaves the pending set, the drain flag is cleared).
if redis.call("EXISTS", KEYS[1]) == 1 then
  return {0, ""}
end
if redis.call("LLEN", KEYS[3]) == 0 then
  redis.call("DEL", KEYS[4])
  redis.call("SREM", KEYS[5], ARGV[1])
  return {-1, ""}
end
local token = redis.call("INCR", KEYS[2]) .. ":" .. ARGV[2]
redis.call("SET", KEYS[1], token, "PX", ARGV[3])
redis.call("DEL", KEYS[4])
redis.call("ZREM", KEYS[6], ARGV[4])
return {1, token}
