--! use: clock end_turn begin_head
-- claim: take a session's lease for a drain job and begin its head turn, or say why not.
--
-- KEYS[1] lease   KEYS[2] fence counter   KEYS[3] inbox   KEYS[4] drain flag
-- KEYS[5] pending sessions (SET)   KEYS[6] arq queue (ZSET)   KEYS[7] stats (HASH)   KEYS[8] history
-- ARGV[1] session id   ARGV[2] holder id (worker id)   ARGV[3] lease ttl ms   ARGV[4] this arq job id
-- ARGV[5] turn key prefix   ARGV[6] stream key suffix   ARGV[7] max attempts per turn
-- ARGV[8] ttl ms of finished turn records   ARGV[9] ttl ms of finished token streams
-- ARGV[10] how many of the newest history entries to return
--
-- Returns {1, token, step, tail} on success: token = "<fence>:<holder>", unique for all time per
--   session; step is what begin_head returned ({"turn", ...}, or {"released"} if no head turn was
--   runnable); tail is the newest ARGV[10] history entries, oldest first (the drain's window starts
--   there). Beginning and reading here saves a drain two round trips before its first turn.
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
local step = begin_head(KEYS[1], KEYS[3], KEYS[7], KEYS[5], ARGV[1], ARGV[5], ARGV[6], tonumber(ARGV[7]),
  redis_now_ms(), ARGV[8], ARGV[9])
local tail = {}
if step[1] == "turn" then
  tail = redis.call("LRANGE", KEYS[8], -tonumber(ARGV[10]), -1)
end
return {1, token, step, tail}
