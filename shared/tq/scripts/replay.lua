-- Replay dead-lettered jobs: each DLQ entry still present is deleted and its job re-enqueued
-- under a new id with a fresh attempt count, in one step (a replay can never run twice). An
-- idempotency key the dead job still holds passes to the new job (its TTL kept): an enqueue with
-- the key answers with the job that runs the work now.
-- KEYS: 1 dlq, 2 stream, 3 counters
-- ARGV: 1 prefix, 2 now (ms), 3 queue, 4 publish events (0/1),
--       then 8 per entry: dlq entry id, old job id, new job id, job name, payload json,
--       idempotency key or '', trace id or '', max attempts or ''
-- Returns per entry: the new job id, or '' when the entry was gone.
local prefix, now, queue, events = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local out, n = {}, 0
for i = 5, #ARGV, 8 do
  local did, old, new, name, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local idem, trace, max_attempts = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  if redis.call('XDEL', KEYS[1], did) == 1 then
    local f = {'i', new, 'n', name, 'p', payload, 't', now, 'rp', old}
    if idem ~= '' then
      f[#f + 1] = 'k'; f[#f + 1] = idem
      local ik = prefix .. 'idem:' .. idem
      if redis.call('GET', ik) == old then redis.call('SET', ik, new, 'XX', 'KEEPTTL') end
    end
    if trace ~= '' then f[#f + 1] = 'tr'; f[#f + 1] = trace end
    if max_attempts ~= '' then f[#f + 1] = 'm'; f[#f + 1] = max_attempts end
    redis.call('HSET', prefix .. 'job:' .. new, 'x', redis.call('XADD', KEYS[2], '*', unpack(f)), 'rp', old)
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
