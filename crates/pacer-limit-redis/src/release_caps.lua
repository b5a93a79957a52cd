-- Uncounts slots given back unused from the caps of a quota (see caps.lua): a cap counts
-- slots that may be sent, and these never will be. Applied whether or not the quota's own
-- state took the slot back (a GCRA slot among others' cannot be): either way it is not sent.
-- KEYS: per cap, its sorted set of stamps and its hash of counts
-- ARGV[1..caps]: each cap's granule (us); ARGV[caps + 1..]: the slots' times (us since epoch)
local caps = #KEYS / 2
for c = 0, caps - 1 do
  local at_key, count_key = KEYS[1 + 2 * c], KEYS[2 + 2 * c]
  local granule = tonumber(ARGV[1 + c])
  for i = caps + 1, #ARGV do
    local at = string.format('%.0f', math.ceil(tonumber(ARGV[i]) / granule) * granule)
    if redis.call('HEXISTS', count_key, at) == 1 then
      if redis.call('HINCRBY', count_key, at, -1) <= 0 then
        redis.call('HDEL', count_key, at)
        redis.call('ZREM', at_key, at)
      end
      redis.call('HINCRBY', count_key, 'n', -1)
    end
  end
end
return 0
