-- Shared head of the reservation scripts (KEYS[2] is the pause deadline in both): Redis's
-- clock in microseconds, and the first instant a slot may take, after any pause.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local base = now
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > base then base = pause end
