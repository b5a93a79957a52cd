-- (After prelude.lua, `now` and `base`, and caps.lua.) Reserves ARGV[3] slots of a GCRA quota at once, atomically, on Redis's clock.
-- KEYS[1]: the theoretical arrival time (TAT, microseconds since the epoch)
-- KEYS[2]: the pause deadline (microseconds), set from a server's Retry-After
-- KEYS[3]: the spacing margin the processes learned (see spacing.lua): widens the interval
-- ARGV[1]: emission interval (us); ARGV[2]: tolerance, (burst - 1) x interval (us); ARGV[3]: slots
-- ARGV[4]: the horizon (us; 0 = none): no slot later than this after now is booked, so that a
--   bulk reservation never keeps other processes' urgent requests waiting behind it
-- Returns Redis's now (microseconds since the epoch), then for each slot its time as
-- microseconds from now and the TAT before and after it: release.lua restores the one before
-- while the TAT is still the one after, when the slot is given back unused. When the horizon
-- cut the reservation short, one more number: the first slot not booked, from now. Then, per
-- cap (KEYS[4..], see caps.lua), its count and when its oldest slot leaves its window.
local interval = tonumber(ARGV[1])
local spacing = redis.call('GET', KEYS[3])
if spacing then
  local extra, set_at, life = string.match(spacing, '(%S+) (%S+) (%S+)')
  interval = interval * (1 + tonumber(extra) * 2 ^ (-(now - tonumber(set_at)) / tonumber(life)))
end
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4] or '0')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
-- After a pause, slots leave evenly spaced, as if the quota had been used at its full rate up
-- to the pause's end: the burst allowance does not release every waiter at once.
if pause > 0 then tat = math.max(tat, pause + tolerance) end
local reply = {now}
local last = now
for i = 1, count do
  -- A spent cap (caps.lua) holds the slot back; the interval then counts from it.
  local slot = caps_slot(math.max(base, tat - tolerance))
  if horizon > 0 and slot - now > horizon then
    reply[3 * i - 1] = math.floor(slot - now)
    break
  end
  caps_record(slot)
  reply[3 * i - 1] = math.floor(slot - now)
  reply[3 * i] = tat
  tat = math.max(tat, slot) + interval
  reply[3 * i + 1] = tat
  last = slot
end
-- Forget the key once it no longer constrains anything.
local ttl = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
caps_expire(last)
caps_report(reply)
return reply
