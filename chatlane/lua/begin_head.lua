--! use: end_turn head_gate session_idle
-- begin_head: library (see chatlane/scripts/loader.py) for the scripts that start a session's
-- next turn, claim.lua and advance.lua.
--
-- Begins the turn at the head of the inbox: counts the attempt, marks it running, and returns
-- {"turn", id, text, attempts, started_ms, metadata, created_ms, 0, more, trace} (metadata: the turn's
-- JSON object, or ""; created_ms: when it was enqueued, for the queue-wait metric; claim.lua and
-- advance.lua put the model's provider pause in 8th place; more: the JSON array of the texts that
-- joined it after `text`, or ""). Unless head_gate.lua says the head has a stop request to commit
-- ({"stopping", ...}), must wait for more texts ({"defer", ms}), or has expired (ended here, and
-- the next head is tried). With the inbox empty it releases the lease, takes the session out of
-- the pending set, leaves the session to expire when idle (session_idle.lua) and returns
-- {"released"}. On the way it drops (and counts) a head whose record
-- was deleted by hand, and fails a head that has already used all its attempts (each interrupted
-- by a crash or a lost lease), so a poison turn cannot wedge a session.
-- Each attempt's start is kept as "a<n>s" beside "started" (the latest): see record_attempt.lua.
--   lease_key, inbox_key, stats_key, pending_key, session_id
--   prefix, suffix   turn key prefix, stream key suffix     max_attempts, now_ms
--   turn_ttl_ms, stream_ttl_ms   retention of a turn failed here   outbox_key  see end_turn.lua
--   idle  the session's keys and idle TTL, see session_idle.lua
-- Stream entries use the fields of chatlane/stream.py: t=type, a=attempt.
local function begin_head(lease_key, inbox_key, stats_key, pending_key, session_id, prefix, suffix,
                          max_attempts, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key, idle)
  while true do
    local head = redis.call("LINDEX", inbox_key, 0)
    if not head then
      redis.call("DEL", lease_key)
      redis.call("SREM", pending_key, session_id)
      session_idle(idle)
      return {"released"}
    end
    local tk = prefix .. head
    if redis.call("EXISTS", tk) == 0 then
      -- Its record was deleted by hand: nothing to run. Counted, never silent.
      redis.call("LPOP", inbox_key)
      redis.call("HINCRBY", stats_key, "orphan_turns_dropped", 1)
    else
      local gate = gate_head(tk, head, tk .. suffix, now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
      if gate == "expired" then
        redis.call("LPOP", inbox_key)
      elseif gate then
        return gate
      else
        local attempts = redis.call("HINCRBY", tk, "attempts", 1)
        if attempts <= max_attempts then
          redis.call("HSET", tk, "state", "running", "started", now_ms, "a" .. attempts .. "s", now_ms)
          if attempts > 1 then
            redis.call("XADD", tk .. suffix, "*", "t", "reset", "a", attempts)
            redis.call("PUBLISH", tk .. suffix, "")  -- wakes the stream's followers (Keys.stream_channels)
          end
          local f = redis.call("HMGET", tk, "text", "metadata", "created", "more", "trace")
          return {"turn", head, f[1], attempts, now_ms, f[2] or "", tonumber(f[3]) or 0, 0, f[4] or "", f[5] or ""}
        end
        redis.call("HSET", tk, "attempts", max_attempts)
        redis.call("HINCRBY", stats_key, "turns_abandoned", 1)
        redis.call("LPOP", inbox_key)
        end_turn(tk, tk .. suffix, "failed", "error",
          "abandoned after " .. max_attempts .. " attempts, each interrupted (worker crash or lost lease)",
          now_ms, turn_ttl_ms, stream_ttl_ms, outbox_key)
      end
    end
  end
end
