-- Move due jobs from the delayed set back onto the stream, with the attempt they are due for (and
-- the suspect flag 'sx' of a job that was running when its consumer died). The envelope's fields
-- move from the record to the entry (the payload is stored once); a legacy record's envelope
-- ('e', JSON) goes as the legacy entry field 'j'.
-- KEYS: 1 delayed, 2 stream
-- ARGV: 1 prefix, 2 now (ms), 3 limit
local prefix = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = {'n', 'p', 't', 'k', 'tr', 'rp', 'm'}
for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local rec = redis.call('HMGET', jk, 'e', 'a', 's', 'sx', 'q', 'n', 'p', 't', 'k', 'tr', 'rp', 'm')
  if rec[1] or rec[7] then
    local attempt = 1
    if rec[3] == 'failed' then attempt = tonumber(rec[2]) + 1 end
    local f
    if rec[1] then
      f = {'j', rec[1], 'a', attempt}
    else
      f = {'i', id, 'a', attempt}
      for k = 1, #moved do
        if rec[5 + k] then f[#f + 1] = moved[k]; f[#f + 1] = rec[5 + k] end
      end
      if rec[3] == 'delayed' and rec[5] then f[#f + 1] = 'nb'; f[#f + 1] = rec[5] end
    end
    if rec[4] then f[#f + 1] = 'sx'; f[#f + 1] = '1' end -- a suspect: the consumer runs it alone
    redis.call('HSET', jk, 's', 'waiting', 'x', redis.call('XADD', KEYS[2], '*', unpack(f)))
    if not rec[1] then redis.call('HDEL', jk, 'p') end
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
