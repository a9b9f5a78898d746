--! use: clock hurry_drain
-- wake: make a session's delayed drain job due now (it waits for budget that has just freed).
-- Returns 1 if a delayed job was brought forward, 0 otherwise (no job, or already due).
local drain_job_key = KEYS[1]
local queue_key     = KEYS[2]

return hurry_drain(drain_job_key, queue_key)
