-- The run times of the newest completed jobs in one round trip: the stats leader's samples
-- (tq.stats), in place of a command per record. Read only.
-- KEYS: 1 completed index
-- ARGV: 1 the queue's key prefix (tq:{q}:), 2 newest finish time (ms, or '+inf'), 3 oldest (ms, or
-- '-inf'), 4 how many jobs at most
-- Returns each found record's 'd' (run time, ms), newest first; a record gone or without one is
-- left out.
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])
local out = {}
for i = 1, #ids do
  local d = redis.call('HGET', ARGV[1] .. 'job:' .. ids[i], 'd')
  if d then out[#out + 1] = d end
end
return out
