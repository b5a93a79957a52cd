-- Widens a quota's shared spacing margin: every process's reservations then space their slots
-- by the quota's interval times (1 + margin). The margin halves every half-life, computed on
-- Redis's clock when read, so it needs no process to shrink it.
-- KEYS[1]: the margin, as "margin set_at_us half_life_us"
-- ARGV[1]: the margin the widening process learned (millionths); ARGV[2]: the step it widens by
-- (millionths); ARGV[3]: the half-life (microseconds); ARGV[4]: a round (microseconds)
-- The new margin is the wider of the process's own and the one in force widened by the step,
-- so that processes refused in turn widen in turn; but within a round of the last widening,
-- only the wider of the two: the pause that came with it holds every process, so a refusal
-- then was of a slot booked before it, at the spacing it already widened (as the requests in
-- flight at one process's widening). Returns the margin, in millionths.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local proposed = tonumber(ARGV[1]) / 1000000
local step = tonumber(ARGV[2]) / 1000000
local half_life = math.max(tonumber(ARGV[3]), 1)
local round = tonumber(ARGV[4] or '0')
local margin = proposed
local current = redis.call('GET', KEYS[1])
if current then
  local extra, set_at, life = string.match(current, '(%S+) (%S+) (%S+)')
  local decayed = tonumber(extra) * 2 ^ (-(now - tonumber(set_at)) / tonumber(life))
  if now - tonumber(set_at) < round then
    -- Nothing wider: keep the set time, so that the round is counted from its widening. (A
    -- wider margin of the process's own is set below, and starts a round of its own.)
    if proposed <= decayed then return math.floor(decayed * 1000000) end
  else
    margin = math.max(proposed, (1 + decayed) * (1 + step) - 1)
  end
end
-- Ten half-lives on: under a thousandth of it is left.
redis.call('SET', KEYS[1], string.format('%.6f %.0f %.0f', margin, now, half_life), 'PX', math.ceil(half_life / 1000) * 10)
return math.floor(margin * 1000000)
