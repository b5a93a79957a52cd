-- Gives back slots reserved but never used, so that other processes may take them.
-- ARGV[1] = 'sliding': KEYS[1] is the sorted set; ARGV[2..] are the members to remove (always
--   safe: a window holding fewer slots only lets later reservations go earlier, though never
--   before the newest slot still reserved, since slots are appended in order).
-- ARGV[1] = 'gcra': KEYS[1] is the TAT; ARGV[2..] are pairs (the TAT after a slot, the TAT
--   before it), newest slot first. Each pair applies only while the TAT is still the one that
--   slot left, i.e. nobody reserved after it: a slot in the middle of others' cannot be taken
--   back.
-- Returns how many slots came back.
local applied = 0
if ARGV[1] == 'sliding' then
  for i = 2, #ARGV do
    applied = applied + redis.call('ZREM', KEYS[1], ARGV[i])
  end
  return applied
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
for i = 2, #ARGV - 1, 2 do
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat ~= tonumber(ARGV[i]) then break end
  local restore = tonumber(ARGV[i + 1])
  redis.call('SET', KEYS[1], string.format('%.0f', restore), 'PX', math.max(0, math.ceil((restore - now) / 1000)) + 1000)
  applied = applied + 1
end
return applied
