-- (After prelude.lua: `now` and `base`.) Reserves ARGV[3] slots of a GCRA quota at once, atomically, on Redis's clock.
-- KEYS[1]: the theoretical arrival time (TAT, microseconds since the epoch)
-- KEYS[2]: the pause deadline (microseconds), set from a server's Retry-After
-- ARGV[1]: emission interval (us); ARGV[2]: tolerance, (burst - 1) x interval (us); ARGV[3]: slots
-- Returns Redis's now (microseconds since the epoch), then each slot as microseconds from it.
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slots = {now}
for i = 1, count do
  local slot = math.max(base, tat - tolerance)
  tat = math.max(tat, slot) + interval
  slots[i + 1] = math.floor(slot - now)
end
-- Forget the key once it no longer constrains anything.
local ttl = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
return slots
