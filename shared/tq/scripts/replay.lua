-- Replay dead-lettered jobs: each DLQ entry still present is deleted and its job re-enqueued
-- under a new id with a fresh attempt count, in one step (a replay can never run twice).
-- KEYS: 1 dlq, 2 stream, 3 counters
-- ARGV: 1 prefix, 2 now (ms), 3 queue, 4 publish events (0/1),
--       then 5 per entry: dlq entry id, old job id, new job id, new envelope json, job name
-- Returns per entry: the new job id, or '' when the entry was gone.
local prefix, now, queue, events = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local out, n = {}, 0
for i = 5, #ARGV, 5 do
  local did, old, new, env, name = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('XDEL', KEYS[1], did) == 1 then
    local xid = redis.call('XADD', KEYS[2], '*', 'j', env)
    redis.call('HSET', prefix .. 'job:' .. new, 's', 'waiting', 'e', env, 'n', name, 't', now, 'x', xid,
      'rp', old)
    local ok = prefix .. 'job:' .. old
    if redis.call('EXISTS', ok) == 1 then redis.call('HSET', ok, 'ra', new) end
    if events then
      redis.call('PUBLISH', 'tq:events', cjson.encode({type = 'dlq.replayed', queue = queue, job_id = new,
        name = name, at = tonumber(now) / 1000, data = {replay_of = old, dlq_id = did}}))
    end
    out[#out + 1] = new
    n = n + 1
  else
    out[#out + 1] = ''
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[3], 'replayed', n) end
return out
