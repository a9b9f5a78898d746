-- record_attempt: library (see chatlane/scripts/loader.py), and the body of attempt_ended.lua.
--
-- Evidence for G1, kept on the turn record: "a<n>s" is when attempt n began (Redis TIME, set by
-- begin_head.lua) and "a<n>e" when its generation stopped. Every attempt is recorded, committed or
-- not, so a checker can see an ousted holder that was still generating while the next one ran.
-- The end is the holder's own upper bound in Redis time (start as Redis stamped it + the holder's
-- monotonic time since it *sent* the script that began it), or now if that is earlier: the holder
-- sends this only after the attempt stopped. Never creates a record that is gone (expired or
-- deleted): evidence must not resurrect a key without its TTL.
local function record_attempt_end(turn_key, attempt, end_ms, now_ms)
  if attempt ~= "" and redis.call("EXISTS", turn_key) == 1 then
    redis.call("HSET", turn_key, "a" .. attempt .. "e", math.min(tonumber(end_ms), now_ms))
  end
end
