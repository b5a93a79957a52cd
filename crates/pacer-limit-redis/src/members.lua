-- Counts the processes sharing a prefix: each one's heartbeat is its member's score (Redis's
-- clock, microseconds); members not heard from for ARGV[2] microseconds are gone.
-- KEYS[1]: sorted set of members; ARGV[1]: this process's member; ARGV[2]: how long a member lives
-- Returns how many members are alive, this one among them, and this one's rank among their
-- names in byte order (0-based): a place every member agrees on, whenever each last asked.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local life = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - life))
redis.call('PEXPIRE', KEYS[1], math.ceil(life / 1000))
local names = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(names)
local rank = 0
for i, name in ipairs(names) do
  if name == ARGV[1] then rank = i - 1 end
end
return {#names, rank}
