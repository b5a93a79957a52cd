-- A process back from its local share after an outage rejoins a quota's shared schedule.
-- The first one back pauses the quota for ARGV[1] microseconds (long enough for every other
-- process to find Redis again, while each keeps sending at its local share) and records that
-- instant; those back later, while it is on record (until ARGV[2] ms after it), find the same
-- instant and do not push it further: a latecomer must not stall those already sharing again.
-- KEYS[1]: the pause deadline (microseconds since the epoch); KEYS[2]: the rejoin instant
-- ARGV[1]: the rejoin pause (us, 0: none); ARGV[2]: how long (ms) a pause stays on record after
-- it ends (see pause.lua)
-- Returns Redis's now, the pause in force and the rejoin instant (0: none), all in microseconds.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local keep = tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local deadline = current
local rejoin = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > 0 and rejoin == 0 then
  rejoin = now + tonumber(ARGV[1])
  redis.call('SET', KEYS[2], string.format('%.0f', rejoin), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + keep)
  deadline = math.max(deadline, rejoin)
end
if deadline > current then
  redis.call('SET', KEYS[1], string.format('%.0f', deadline), 'PX', math.ceil((deadline - now) / 1000) + keep)
end
return {now, deadline, rejoin}
