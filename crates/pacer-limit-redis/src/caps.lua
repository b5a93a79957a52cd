-- (After prelude.lua.) The windows a quota stacks on its own (Quota::and), each a cap: never
-- more than its limit of slots in any of its windows, counted as a sliding window whatever the
-- quota's model. A cap holds a slot back only when it is spent; it never paces.
-- KEYS[4..]: per cap, a sorted set of stamps (score and member: the stamp, in microseconds)
--   and a hash of counts (field: a stamp; field 'n': the total)
-- ARGV[6..]: per cap (after the reservation script's five), its window (us), its limit and its granule (us): a slot's stamp is its
--   time rounded up to the granule (1 us: exact), so a counted slot leaves the window no
--   earlier than the real one, and a cap of any limit keeps at most one entry per granule.
-- A cap counts every slot after `t - window`, later reserved ones included, so that a slot
-- taken before others (after a give-back) still never crowds a window.
local caps = {}
for c = 0, (#KEYS - 3) / 2 - 1 do
  caps[#caps + 1] = {
    at = KEYS[4 + 2 * c], count = KEYS[5 + 2 * c],
    window = tonumber(ARGV[6 + 3 * c]), limit = tonumber(ARGV[7 + 3 * c]),
    granule = tonumber(ARGV[8 + 3 * c]),
  }
end

-- Forgets the slots that left each cap's window by now.
local function caps_prune()
  for _, cap in ipairs(caps) do
    local gone = redis.call('ZRANGEBYSCORE', cap.at, '-inf', string.format('%.0f', now - cap.window))
    local total = 0
    for _, at in ipairs(gone) do
      total = total + tonumber(redis.call('HGET', cap.count, at) or '0')
      redis.call('HDEL', cap.count, at)
      redis.call('ZREM', cap.at, at)
    end
    if total > 0 then redis.call('HINCRBY', cap.count, 'n', -total) end
  end
end

-- The earliest instant at or after `slot` at which every cap has room for one more slot.
local function caps_slot(slot)
  for _, cap in ipairs(caps) do
    local total = tonumber(redis.call('HGET', cap.count, 'n') or '0')
    if total >= cap.limit then
      -- The oldest slots must leave the window until one place is free.
      local excess = total - cap.limit + 1
      local entries = redis.call('ZRANGE', cap.at, 0, -1, 'WITHSCORES')
      local left = 0
      for i = 1, #entries, 2 do
        left = left + tonumber(redis.call('HGET', cap.count, entries[i]) or '0')
        if left >= excess then
          slot = math.max(slot, tonumber(entries[i + 1]) + cap.window)
          break
        end
      end
    end
  end
  return slot
end

local function stamp(cap, slot)
  return string.format('%.0f', math.ceil(slot / cap.granule) * cap.granule)
end

-- Counts a slot at `slot` in every cap.
local function caps_record(slot)
  for _, cap in ipairs(caps) do
    local at = stamp(cap, slot)
    redis.call('ZADD', cap.at, at, at)
    redis.call('HINCRBY', cap.count, at, 1)
    redis.call('HINCRBY', cap.count, 'n', 1)
  end
end

-- Keeps each cap's state one window past its newest slot, `last`: a daily cap lives a day.
local function caps_expire(last)
  for _, cap in ipairs(caps) do
    local ttl = math.ceil((last - now + cap.window) / 1000) + 1000
    redis.call('PEXPIRE', cap.at, ttl)
    redis.call('PEXPIRE', cap.count, ttl)
  end
end

-- Appends to `reply`, per cap, how many slots it counts and when the oldest leaves its window
-- (0 when it counts none): how a process tells a spent daily quota from a rate too high.
local function caps_report(reply)
  for _, cap in ipairs(caps) do
    local total = tonumber(redis.call('HGET', cap.count, 'n') or '0')
    local oldest = redis.call('ZRANGE', cap.at, 0, 0, 'WITHSCORES')
    reply[#reply + 1] = total
    reply[#reply + 1] = oldest[2] and (tonumber(oldest[2]) + cap.window) or 0
  end
end

caps_prune()
