-- (After prelude.lua, `now` and `base`, and caps.lua.) Reserves ARGV[3] slots of a GCRA quota at once, atomically, on Redis's clock.
-- KEYS[1]: the theoretical arrival time (TAT, microseconds since the epoch)
-- KEYS[2]: the pause deadline (microseconds), set from a server's Retry-After
-- KEYS[3]: the spacing margin the processes learned (see spacing.lua): widens the interval
-- ARGV[1]: emission interval (us); ARGV[2]: tolerance, (burst - 1) x interval (us); ARGV[3]: slots
-- ARGV[4]: the horizon (us; 0 = none): no slot later than this after now is booked, so that a
--   bulk reservation never keeps other processes' urgent requests waiting behind it
-- ARGV[5]: the TAT the calling process's last reservation left (0: none): while a margin is in
--   force, a reservation that does not continue it follows another process's slot, and its
--   first slot leaves a junction gap of JUNCTION margins more (see below)
-- Returns Redis's now (microseconds since the epoch), then for each slot its time as
-- microseconds from now and the TAT before and after it: release.lua restores the one before
-- while the TAT is still the one after, when the slot is given back unused. When the horizon
-- cut the reservation short, one more number: the first slot not booked, from now. Then, per
-- cap (KEYS[4..], see caps.lua), its count and when its oldest slot leaves its window. Then
-- the pause deadline in force (microseconds since the epoch; 0: none). Last, the junction gap
-- in force (microseconds; 0: no margin).
-- Two slots in a row from two processes reach the server further from their schedule than two
-- from one process: each maps Redis's clock to its own with an error, and a late send of the
-- first goes unseen by the second (a process holds its own next send after a late one, see
-- pacer-limit's arrival.rs). So where a margin is in force (the server was found strict), a
-- slot following another process's is spaced JUNCTION times the margin further (and its
-- owner sends it no later than a third of that, see slots.rs). Measured on four processes
-- against nginx without burst: a send 2-4 ms late just before another process's slot was
-- where the fleet was refused; three margins (0.9 ms at 3 %) left about one such refusal a
-- run, six none in most. Blocks of slots run as long as a process's demand (about ten slots
-- for ten busy tasks), so there this costs well under the margin; processes that each have
-- one request waiting alternate slot by slot and pay it on every slot, seven margins in all,
-- for as long as the margin lasts (it halves every half-life).
local JUNCTION = 6
local interval = tonumber(ARGV[1])
local junction = 0
local spacing = redis.call('GET', KEYS[3])
if spacing then
  local extra, set_at, life = string.match(spacing, '(%S+) (%S+) (%S+)')
  local margin = tonumber(extra) * 2 ^ (-(now - tonumber(set_at)) / tonumber(life))
  junction = interval * margin * JUNCTION
  interval = interval * (1 + margin)
end
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4] or '0')
local follows = tonumber(ARGV[5] or '0')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
-- The next slot counts from `from`: the TAT, plus the junction gap for the first slot only.
-- The gap is never stored on its own: a reservation the horizon cuts short before its first
-- slot leaves the TAT as it was (or the next try would find a gap added to a gap).
-- (The reply truncates a TAT that SET rounds: one microsecond apart is the same.)
local from = tat
-- (Also when the TAT just passed: the other process's last slot may still be on its way.)
if junction > 0 and tat + junction > now and math.abs(tat - follows) > 1 then from = tat + junction end
-- After a pause, slots leave evenly spaced, as if the quota had been used at its full rate up
-- to the pause's end: the burst allowance does not release every waiter at once.
if pause > 0 then
  tat = math.max(tat, pause + tolerance)
  from = math.max(from, pause + tolerance)
end
local reply = {now}
local last = now
for i = 1, count do
  -- A spent cap (caps.lua) holds the slot back; the interval then counts from it.
  local slot = caps_slot(math.max(base, from - tolerance))
  if horizon > 0 and slot - now > horizon then
    reply[3 * i - 1] = math.floor(slot - now)
    break
  end
  caps_record(slot)
  reply[3 * i - 1] = math.floor(slot - now)
  reply[3 * i] = tat
  tat = math.max(from, slot) + interval
  from = tat
  reply[3 * i + 1] = tat
  last = slot
end
-- Forget the key once it no longer constrains anything.
local ttl = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
caps_expire(last)
caps_report(reply)
-- Last, the pause in force (0: none): a process learns of another's pause with its next
-- reservation and drops the slots it holds inside it.
reply[#reply + 1] = math.max(pause, 0)
-- And the junction gap: a process the server never refused learns that another found it
-- strict, and holds its next send after a late one as the refused process does; and how late
-- its last slot before another process's may go without crowding it.
reply[#reply + 1] = math.floor(junction)
return reply
