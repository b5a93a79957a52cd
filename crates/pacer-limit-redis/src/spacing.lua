-- Widens a quota's shared spacing margin: every process's reservations then space their slots
-- by the quota's interval times (1 + margin). The margin halves every half-life, computed on
-- Redis's clock when read, so it needs no process to shrink it.
-- KEYS[1]: the margin, as "margin set_at_us half_life_us step"
-- ARGV[1]: the margin the widening process learned (millionths); ARGV[2]: the step it widens by
-- (millionths); ARGV[3]: the half-life (microseconds); ARGV[4]: the quota's window (microseconds)
-- The new margin is the wider of the process's own and the one in force widened by the step,
-- so that processes refused in turn widen in turn. A widening within two windows of the last
-- one (its pause and a window of sending), whichever process asked for either, a request
-- another process had in flight included, is a repeated round: the fleet's margin did not
-- cover how far apart its sends arrive, so the step is twice the last one, and the margin
-- shrinks back twice as slowly (at most 16 half-lives), as one process's own rounds do
-- (crate::spacing of pacer-limit). Later refusals are noise no margin absorbs: one step.
-- Returns the margin, in millionths.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local proposed = tonumber(ARGV[1]) / 1000000
local step = tonumber(ARGV[2]) / 1000000
local half_life = math.max(tonumber(ARGV[3]), 1)
local window = tonumber(ARGV[4] or '0')
local margin = proposed
local current = redis.call('GET', KEYS[1])
if current then
  local extra, set_at, life, last_step = string.match(current, '(%S+) (%S+) (%S+) ?(%S*)')
  local decayed = tonumber(extra) * 2 ^ (-(now - tonumber(set_at)) / tonumber(life))
  if last_step ~= '' and now - tonumber(set_at) < 2 * window then
    step = math.min(math.max(tonumber(last_step) * 2, step), 1)
    half_life = math.max(half_life, math.min(tonumber(life) * 2, half_life * 16))
  end
  margin = math.max(proposed, (1 + decayed) * (1 + step) - 1)
end
-- At most doubling the interval, as one process's own margin (MAX_EXTRA).
margin = math.min(margin, math.max(1, proposed))
-- Ten half-lives on: under a thousandth of it is left.
redis.call('SET', KEYS[1], string.format('%.6f %.0f %.0f %.6f', margin, now, half_life, step), 'PX', math.ceil(half_life / 1000) * 10)
return math.floor(margin * 1000000)
