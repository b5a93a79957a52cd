-- (After prelude.lua, `now` and `base`, and caps.lua.) Reserves ARGV[3] slots of a sliding-window quota at once, atomically, on Redis's clock: never
-- more than ARGV[2] slots in any window of ARGV[1] microseconds. Slots are appended in order,
-- so checking the window that ends at each new slot keeps every window within the limit.
-- KEYS[1]: sorted set of reserved slots (score: microseconds since the epoch)
-- KEYS[2]: the pause deadline (microseconds); KEYS[3]: a counter for unique members
-- ARGV[4], ARGV[5]: unused (gcra.lua's horizon and junction: a sliding window books only free
-- slots of its window, wherever they are)
-- Returns Redis's now (microseconds since the epoch), then for each slot its time as
-- microseconds from now, its member (what release.lua removes when the slot is given back)
-- and 0; then, per cap (KEYS[4..], see caps.lua), its count and when its oldest slot leaves;
-- then the pause deadline in force (microseconds since the epoch; 0: none); last, 0 (the
-- junction gap of gcra.lua's reply: a sliding window spaces nothing).
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
-- In the window after a pause, slots are at least window / limit apart: the waiters of every
-- process leave evenly spaced at the quota's rate, not in one burst into an empty window.
local spacing = math.ceil(window / limit)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
local reply = {now}
local last = now
for i = 1, count do
  local slot = base
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if newest[2] then
    local previous = tonumber(newest[2])
    slot = math.max(slot, previous)
    if pause > 0 and previous >= pause and previous < pause + window then
      slot = math.max(slot, previous + spacing)
    end
  end
  local n = redis.call('ZCARD', KEYS[1])
  if n >= limit then
    local oldest_in_window = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
    slot = math.max(slot, tonumber(oldest_in_window[2]) + window)
  end
  -- A spent cap (caps.lua) holds the slot back further.
  slot = caps_slot(slot)
  caps_record(slot)
  local member = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], string.format('%.0f', slot), member)
  reply[3 * i - 1] = math.floor(slot - now)
  reply[3 * i] = member
  reply[3 * i + 1] = 0
  last = slot
end
local ttl = math.ceil((last - now + window) / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
caps_expire(last)
caps_report(reply)
-- Last, the pause in force (0: none): a process learns of another's pause with its next
-- reservation and drops the slots it holds inside it.
reply[#reply + 1] = math.max(pause, 0)
reply[#reply + 1] = 0
return reply
