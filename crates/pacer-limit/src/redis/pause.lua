-- Pauses a quota until ARGV[1] microseconds from Redis's now, unless a longer pause is set.
-- KEYS[1]: the pause deadline (microseconds since the epoch)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local deadline = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if deadline > current then
  redis.call('SET', KEYS[1], string.format('%.0f', deadline), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return math.floor(math.max(deadline, current) - now)
