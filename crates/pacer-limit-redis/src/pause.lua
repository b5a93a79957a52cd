-- Pauses a quota until ARGV[1] microseconds from Redis's now, unless a longer pause is set.
-- The deadline stays on record ARGV[2] milliseconds after it passes: the reservations of the
-- window after a pause read it to space their slots evenly.
-- KEYS[1]: the pause deadline (microseconds since the epoch)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local deadline = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if deadline > current then
  redis.call('SET', KEYS[1], string.format('%.0f', deadline), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + tonumber(ARGV[2]))
end
return math.floor(math.max(deadline, current) - now)
