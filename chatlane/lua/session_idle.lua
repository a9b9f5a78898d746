-- session_idle: library (see chatlane/scripts/loader.py) for the scripts that leave a session with
-- nothing queued or running (its inbox empty, its lease released): begin_head.lua, handback.lua,
-- claim.lua, import_session.lua.
--
-- With CHATLANE_SESSION_IDLE_TTL_S set, what is left of the session (SessionKeys.idle_keys: history,
-- fence counter, summary, turn index, trimmed count) expires together that long after it went idle.
-- enqueue.lua makes them persistent again in the script that queues the next turn, so a session
-- with a queued or running turn never carries a TTL: both happen in scripts that see the inbox.
-- A fence counter that expires and restarts cannot admit a stale holder: a lease token is
-- "<fence>:<holder>:<nonce>" with a random nonce per claim, compared whole (claim.lua).
--   idle  {keys = {...}, ttl_ms = n}; ttl_ms 0: never expire
local function session_idle(idle)
  if idle.ttl_ms > 0 then
    for _, key in ipairs(idle.keys) do
      redis.call("PEXPIRE", key, idle.ttl_ms)
    end
  end
end
