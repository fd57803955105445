-- Move due jobs from the delayed set back onto the stream, with the attempt they are due for (and
-- the suspect flag 'sx' of a job that was running when its consumer died).
-- KEYS: 1 delayed, 2 stream
-- ARGV: 1 prefix, 2 now (ms), 3 limit
local prefix = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local rec = redis.call('HMGET', jk, 'e', 'a', 's', 'sx')
  if rec[1] then
    local attempt = 1
    if rec[3] == 'failed' then attempt = tonumber(rec[2]) + 1 end
    local xid
    if rec[4] then  -- a suspect (it was running when its consumer died): the consumer runs it alone
      xid = redis.call('XADD', KEYS[2], '*', 'j', rec[1], 'a', attempt, 'sx', '1')
    else
      xid = redis.call('XADD', KEYS[2], '*', 'j', rec[1], 'a', attempt)
    end
    redis.call('HSET', jk, 's', 'waiting', 'x', xid)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
