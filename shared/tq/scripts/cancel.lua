-- Cancel a job in one step (tq.cancel). The caller read the job's state and entry id just before;
-- this script re-checks them atomically and answers 'stale' when the job moved in between (the
-- caller reads again).
-- KEYS: 1 stream, 2 delayed, 3 job record, 4 cancel markers (tq:{q}:cancels), 5 counters, 6 audit stream
-- ARGV: 1 group, 2 now (ms), 3 queue, 4 job id, 5 job name, 6 state read ('waiting', 'active',
--       'delayed' or 'failed'), 7 stream entry id or '', 8 attempt, 9 trace id, 10 audit (0/1),
--       11 publish events (0/1)
-- Returns 'removed' (waiting or delayed: gone, never runs), 'requested' (running: marker set and
-- the consumers told on tq:control) or 'stale'.
local group, now, queue, id, name, was, eid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local attempt = tonumber(ARGV[8])

local function pending()
  local ok, rows = pcall(redis.call, 'XPENDING', KEYS[1], group, eid, eid, 1)
  return ok and #rows > 0
end

if was == 'waiting' or was == 'active' then
  if eid == '' then return 'stale' end
  if pending() then
    -- delivered: running, or fetched and about to start. The marker outlives a lost message.
    redis.call('HSET', KEYS[4], id, now)
    redis.call('PUBLISH', 'tq:control', cjson.encode({queue = queue, cancel = id}))
    return 'requested'
  end
  if redis.call('XDEL', KEYS[1], eid) == 0 then return 'stale' end
  was = 'waiting'
else
  if redis.call('ZREM', KEYS[2], id) == 0 then return 'stale' end
end
-- Removed before it ran: like a removal, the record goes and the idempotency key stays bound.
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
if ARGV[11] == '1' then
  redis.call('PUBLISH', 'tq:events', cjson.encode({type = 'job.cancelled', queue = queue, job_id = id,
    name = name, at = now / 1000, data = {was = was, attempt = attempt}}))
end
if ARGV[10] == '1' then
  redis.call('XADD', KEYS[6], '*', 'a', 'job.cancelled', 'q', queue, 'id', id, 'n', name, 'o', 'cancelled',
    'tr', ARGV[9], 'at', now, 'd', cjson.encode({attempt = attempt, was = was}))
end
return 'removed'
