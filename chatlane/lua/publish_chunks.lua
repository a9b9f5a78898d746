-- publish_chunks: append a batch of stream entries (token chunks, tool events) to their turns'
-- token streams, in order, and refresh each stream's TTL. Fields are those of chatlane/stream.py.
--
-- Writes only to turns whose record still exists: a holder still generating after its session was
-- deleted (delete_session.lua) cannot re-create the stream. (A turn that ended keeps its record
-- for CHATLANE_TURN_TTL_S, so its late chunks land as before; readers ignore them after "end".)
-- Each written stream is announced on the pub/sub channel named like its key (chatlane/keys.py,
-- Keys.stream_channels): the API's stream hub wakes that stream's followers instead of every
-- follower holding a Redis connection in a blocking read.
-- Returns the number of streams written.
--   KEYS  stream_1, turn_1, stream_2, turn_2, ...   (each stream with its turn record)
--   ARGV  ttl_ms, entries_1, entries_2, ...   entries_i: JSON array of entries, each a flat array
--         of field names and values, for stream_i
local ttl_ms  = ARGV[1]
local written = 0
for i = 1, #KEYS, 2 do
  local stream_key, turn_key = KEYS[i], KEYS[i + 1]
  if redis.call("EXISTS", turn_key) == 1 then
    for _, fields in ipairs(cjson.decode(ARGV[(i + 1) / 2 + 1])) do
      redis.call("XADD", stream_key, "*", unpack(fields))
    end
    redis.call("PEXPIRE", stream_key, ttl_ms)
    redis.call("PUBLISH", stream_key, "")
    written = written + 1
  end
end
return written
