--! use: clock end_turn begin_head
-- advance: the fenced step of a drain. Finishes the head turn (commit or fail) and begins the
-- next one, in one atomic script, so a busy session costs about one round trip per turn.
--
-- KEYS[1] lease   KEYS[2] inbox   KEYS[3] history   KEYS[4] stats (HASH)   KEYS[5] pending (SET)
-- ARGV[1] our lease token        ARGV[2] lease ttl ms       ARGV[3] turn key prefix
-- ARGV[4] stream key suffix      ARGV[5] id of the turn to finish, or "" to only begin
-- ARGV[6] "completed" | "failed" ARGV[7] reply text, or error text
-- ARGV[8] user message JSON      ARGV[9] AI message JSON     (both only for "completed")
-- ARGV[10] ttl ms of finished turn records and idempotency keys
-- ARGV[11] ttl ms of a finished turn's token stream
-- ARGV[12] "begin": begin the next head turn, releasing the lease if the inbox is empty;
--          "stop": begin nothing, keep the lease (the caller hands the session back)
-- ARGV[13] max attempts per turn   ARGV[14] session id
--
-- Returns one of
--   {"lost"}      the lease is not ours (expired or taken over): nothing written. This is the
--                 fence: a paused or partitioned ex-holder can never commit.
--   {"turn", id, text, attempts, started_ms}   the next turn is now running (attempt counted)
--   {"released"}  the inbox is empty: lease deleted, session left the pending set
--   {"stopped"}   ARGV[12] was "stop"
-- Beginning the next turn is begin_head's (producer/lua/begin_head.lua), shared with claim.lua.
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  if ARGV[5] ~= "" then
    redis.call("HINCRBY", KEYS[4], "stale_commits_rejected", 1)
  end
  return {"lost"}
end
local now_ms = redis_now_ms()
local prefix, suffix = ARGV[3], ARGV[4]

local function finish(turn_id, state, field, value)
  local tk = prefix .. turn_id
  redis.call("LPOP", KEYS[2])
  end_turn(tk, tk .. suffix, state, field, value, now_ms, ARGV[10], ARGV[11])
end

if ARGV[5] ~= "" then
  if redis.call("LINDEX", KEYS[2], 0) ~= ARGV[5] then
    return redis.error_reply("chatlane: turn " .. ARGV[5] .. " is not at the head of its inbox")
  end
  if ARGV[6] == "completed" then
    redis.call("RPUSH", KEYS[3], ARGV[8], ARGV[9])
    finish(ARGV[5], "completed", "reply", ARGV[7])
  else
    finish(ARGV[5], "failed", "error", ARGV[7])
  end
end

redis.call("PEXPIRE", KEYS[1], ARGV[2])
if ARGV[12] == "stop" then
  return {"stopped"}
end
return begin_head(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[14], prefix, suffix, tonumber(ARGV[13]), now_ms,
  ARGV[10], ARGV[11])
