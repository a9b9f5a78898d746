-- publish_chunks: append a batch of generation chunks to their turns' token streams, one entry per
-- stream (fields of chatlane/stream.py: t=type, a=attempt, d=text), and refresh each stream's TTL.
--
-- Writes only to turns whose record still exists: a holder still generating after its session was
-- deleted (delete_session.lua) cannot re-create the stream. (A turn that ended keeps its record
-- for CHATLANE_TURN_TTL_S, so its late chunks land as before; readers ignore them after "end".)
-- Returns the number of streams written.
--   KEYS  stream_1, turn_1, stream_2, turn_2, ...   (each stream with its turn record)
--   ARGV  ttl_ms, attempt_1, text_1, attempt_2, text_2, ...
local ttl_ms  = ARGV[1]
local written = 0
for i = 1, #KEYS, 2 do
  local stream_key, turn_key = KEYS[i], KEYS[i + 1]
  local attempt, text = ARGV[i + 1], ARGV[i + 2]
  if redis.call("EXISTS", turn_key) == 1 then
    redis.call("XADD", stream_key, "*", "t", "chunk", "a", attempt, "d", text)
    redis.call("PEXPIRE", stream_key, ttl_ms)
    written = written + 1
  end
end
return written
