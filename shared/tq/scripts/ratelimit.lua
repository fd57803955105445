-- One rate limit per queue, shared by every replica (tq.ratelimit): a sliding window of job starts
-- on Redis's own clock, leases for the reads in flight, and the pause a RateLimited handler asks.
-- KEYS: 1 window (ZSET permit -> start ms), 2 leases (ZSET lease -> expiry ms), 3 pause (STRING, PX)
-- ARGV[1] is the operation:
--   take   token want jobs per_ms lease_ms -> {granted, wait_ms, paused}
--          grants up to `want` permits as one lease `token:granted` (0 while paused, or when the
--          window and the leases in flight already hold `jobs`); wait_ms: when to ask again
--   commit lease got per_ms                -> got
--          ends the lease: its `got` permits enter the window at now (the entries the read
--          received, i.e. the jobs started); the rest are given back
--   pause  ms                              -> the pause left (ms)
--          pauses intake for at least `ms` (an existing longer pause is kept)
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if op == 'take' then
  local token, want, jobs = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local per, lease = tonumber(ARGV[5]), tonumber(ARGV[6])
  local paused = redis.call('PTTL', KEYS[3])
  if paused > 0 then return {0, paused, 1} end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)  -- leases of a consumer that died mid-read
  local used = redis.call('ZCARD', KEYS[1])
  local leased = 0
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    leased = leased + tonumber(string.match(member, ':(%d+)$'))
  end
  local granted = math.min(want, jobs - used - leased)
  if granted <= 0 then
    local wait = per
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if oldest[2] then wait = tonumber(oldest[2]) + per - now end
    if leased > 0 then wait = math.min(wait, 100) end  -- a lease may end with permits given back
    return {0, math.max(1, wait), 0}
  end
  redis.call('ZADD', KEYS[2], now + lease, token .. ':' .. granted)
  redis.call('PEXPIRE', KEYS[2], lease)
  return {granted, 0, 0}
elseif op == 'commit' then
  local lease, got, per = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  redis.call('ZREM', KEYS[2], lease)
  if got > 0 then
    local args = {}
    for i = 1, got do
      args[#args + 1] = now
      args[#args + 1] = lease .. ':' .. i
    end
    redis.call('ZADD', KEYS[1], unpack(args))
    redis.call('PEXPIRE', KEYS[1], per)
  end
  return got
elseif op == 'pause' then
  local ms = tonumber(ARGV[2])
  local left = redis.call('PTTL', KEYS[3])
  if left < ms then
    redis.call('SET', KEYS[3], now + ms, 'PX', ms)
    return ms
  end
  return left
end
return redis.error_reply('ratelimit.lua: unknown operation ' .. tostring(op))
