-- clock: library (see chatlane/scripts/loader.py) for scripts that stamp times.
-- Redis' own clock, so workers on hosts with skewed clocks still share one timeline.
local function redis_now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
