-- Settle a batch of delivered entries atomically: each op acks its entry and records the outcome.
-- KEYS: 1 stream, 2 delayed, 3 dlq, 4 completed index, 5 dead index, 6 counters, 7 audit stream (tq:{q}:audit),
--       8 started markers (tq:{q}:started: cleared for every op while it exists)
-- ARGV: 1 prefix, 2 group, 3 now (ms), 4 queue, 5 retention completed, 6 retention failed,
--       7 audit (0/1; never trimmed here: the AuditWriter deletes what it wrote, the worker's intake
--       waits while the backlog is at its bound - tq.audit), 8 publish events (0/1), 9 consumer id,
--       10 DLQ cap (its oldest entries beyond it are trimmed, counted as dlq_trimmed),
--       then one per op, its 11 fields joined by the unit separator (\31) - one argument per job
--       keeps the client's command packing cheap: kind, entry id, job id, job name, attempt,
--       started (ms), duration (ms), idempotency key, trace id, a, b
--   kind c (completed):   a = result summary
--   kind s (skipped):     a = reason
--   kind r (retry):       a = due (ms), b = failure json {type, message, stack[, suspect]}; suspect:
--                         the job was running when its consumer died, it runs alone next time
--   kind d (dead-letter): b = failure json; a = the raw entry when there is no job record (forged entry)
--   kind q (requeue an unstarted entry, no attempt charged; job id '' when unreadable)
--   kind x (cancelled, tq.cancel: recorded 'cancelled' in the completed index, its marker dropped)
-- Returns the number of ops that found their entry still pending (others were settled before).
local prefix, group, now, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keep_completed, keep_failed = tonumber(ARGV[5]), tonumber(ARGV[6])
local audit_on, events, consumer, dlq_max = ARGV[7] == '1', ARGV[8] == '1', ARGV[9], tonumber(ARGV[10])
local n_completed, n_skipped, n_retried, n_dead, n_requeued, settled = 0, 0, 0, 0, 0, 0
local n_dlq_trimmed, n_cancelled = 0, 0

-- Events of jobs that ran are built by concatenation (hot path: their id is pattern-checked and
-- their name is in the registry); every other event goes through cjson (names may be forged).
local function publish_completed(id, name, data)
  if events then
    redis.call('PUBLISH', 'tq:events', '{"type":"job.completed","queue":"' .. queue .. '","job_id":"' .. id
      .. '","name":"' .. name .. '","at":' .. now / 1000 .. ',"data":' .. data .. '}')
  end
end

local function publish(kind, id, name, data)
  if events then
    redis.call('PUBLISH', 'tq:events', cjson.encode({type = kind, queue = queue, job_id = id, name = name,
      at = now / 1000, data = data}))
  end
end

local function audit(action, id, name, outcome, trace, details)
  if audit_on then
    redis.call('XADD', KEYS[7], '*', 'a', action, 'q', queue, 'id', id,
      'n', name, 'o', outcome, 'tr', trace, 'at', now, 'd', details)
  end
end

local function trim(index, keep)
  local over = redis.call('ZCARD', index) - keep
  if over > 0 then
    local popped = redis.call('ZPOPMIN', index, over)
    for i = 1, #popped, 2 do redis.call('DEL', prefix .. 'job:' .. popped[i]) end
  end
end

local function fields(packed)
  local out, pos = {}, 1
  while true do
    local sep = string.find(packed, '\31', pos, true)
    if not sep then
      out[#out + 1] = string.sub(packed, pos)
      return out
    end
    out[#out + 1] = string.sub(packed, pos, sep - 1)
    pos = sep + 1
  end
end

local marked = redis.call('EXISTS', KEYS[8]) == 1
for i = 11, #ARGV do
  local f = fields(ARGV[i])
  local kind, eid, id, name, attempt, started, duration, idem, trace, a, b = unpack(f, 1, 11)
  if marked then redis.call('HDEL', KEYS[8], eid) end
  -- XACK answers 0 when the entry is no longer ours to settle (settled already, or reclaimed).
  if redis.call('XACK', KEYS[1], group, eid) == 1 then
    settled = settled + 1
    local jk = prefix .. 'job:' .. id
    if kind == 'q' then
      local fields = redis.call('XRANGE', KEYS[1], eid, eid)
      redis.call('XDEL', KEYS[1], eid)
      if #fields > 0 then
        local xid = redis.call('XADD', KEYS[1], '*', unpack(fields[1][2]))
        if id ~= '' then redis.call('HSET', jk, 'x', xid) end
      end
      n_requeued = n_requeued + 1
    else
      redis.call('XDEL', KEYS[1], eid)
      if kind == 'c' or kind == 's' then
        redis.call('HSET', jk, 's', 'completed', 'a', attempt, 'st', started, 'f', now, 'd', duration, 'r', a,
          'c', consumer)
        redis.call('HDEL', jk, 'x')
        redis.call('ZADD', KEYS[4], now, id)
        if kind == 'c' then
          if idem ~= '' then redis.call('SET', prefix .. 'idem:' .. idem, 'done:' .. id, 'XX', 'KEEPTTL') end
          n_completed = n_completed + 1
          publish_completed(id, name, '{"attempt":' .. attempt .. ',"duration_ms":' .. duration .. '}')
          audit('job.completed', id, name, 'completed', trace,
            '{"attempt":' .. attempt .. ',"duration_ms":' .. duration .. '}')
        else
          n_skipped = n_skipped + 1
          publish('job.skipped', id, name, {reason = a})
          audit('job.completed', id, name, 'skipped', trace, cjson.encode({attempt = tonumber(attempt), reason = a}))
        end
      elseif kind == 'x' then  -- cancelled (tq.cancel): final, the idempotency key stays bound
        redis.call('HSET', jk, 's', 'cancelled', 'a', attempt, 'st', started, 'f', now, 'd', duration, 'c', consumer)
        redis.call('HDEL', jk, 'x')
        redis.call('HDEL', prefix .. 'cancels', id)
        redis.call('ZADD', KEYS[4], now, id)
        n_cancelled = n_cancelled + 1
        publish('job.cancelled', id, name, {was = 'active', attempt = tonumber(attempt)})
        audit('job.cancelled', id, name, 'cancelled', trace, cjson.encode({attempt = tonumber(attempt), was = 'active'}))
      else
        local failure = cjson.decode(b)
        failure.attempt = tonumber(attempt)
        failure.at = tonumber(now)
        local history = redis.call('HGET', jk, 'h')
        history = history and cjson.decode(history) or {}
        history[#history + 1] = {attempt = failure.attempt, type = failure.type, message = failure.message, at = failure.at}
        local details = cjson.encode({attempt = failure.attempt, error_type = failure.type, error = failure.message})
        if kind == 'r' then
          redis.call('HSET', jk, 's', 'failed', 'a', attempt, 'st', started, 'f', now, 'd', duration, 'q', a,
            'et', failure.type, 'em', failure.message, 'es', failure.stack, 'h', cjson.encode(history), 'c', consumer)
          redis.call('HDEL', jk, 'x')
          if failure.suspect then redis.call('HSET', jk, 'sx', '1') else redis.call('HDEL', jk, 'sx') end
          redis.call('ZADD', KEYS[2], a, id)
          n_retried = n_retried + 1
          publish('job.retrying', id, name, {attempt = failure.attempt, due = tonumber(a) / 1000,
            error_type = failure.type, error = failure.message})
          audit('job.failed', id, name, 'retried', trace, details)
        else
          local env = redis.call('HGET', jk, 'e') or a
          -- self-contained (outlives the job record): first failure time and the attempt history too
          local over = redis.call('XLEN', KEYS[3]) + 1 - dlq_max
          if over > 0 then n_dlq_trimmed = n_dlq_trimmed + over end
          local h = cjson.encode(history)
          local did = redis.call('XADD', KEYS[3], 'MAXLEN', dlq_max, '*', 'id', id, 'q', queue, 'n', name,
            'et', failure.type, 'em', failure.message, 'es', failure.stack, 'a', attempt, 'f', now,
            'ff', history[1].at, 'e', env, 'tr', trace, 'h', h)
          redis.call('HSET', jk, 's', 'dead', 'a', attempt, 'st', started, 'f', now, 'd', duration, 'et', failure.type,
            'em', failure.message, 'es', failure.stack, 'h', h, 'dl', did, 'c', consumer)
          redis.call('HDEL', jk, 'x')
          redis.call('ZADD', KEYS[5], now, id)
          -- A dead job gives its idempotency key back, so the caller can submit the work again.
          if idem ~= '' then
            local ik = prefix .. 'idem:' .. idem
            if redis.call('GET', ik) == id then redis.call('DEL', ik) end
          end
          n_dead = n_dead + 1
          local data = {attempt = failure.attempt, error_type = failure.type, error = failure.message, dlq_id = did}
          publish('job.failed', id, name, data)
          publish('dlq.added', id, name, data)
          audit('job.failed', id, name, 'dead_lettered', trace, details)
        end
      end
    end
  end
end
trim(KEYS[4], keep_completed)
trim(KEYS[5], keep_failed)
if n_completed > 0 then redis.call('HINCRBY', KEYS[6], 'completed', n_completed) end
if n_skipped > 0 then redis.call('HINCRBY', KEYS[6], 'skipped', n_skipped) end
if n_retried > 0 then redis.call('HINCRBY', KEYS[6], 'retried', n_retried) end
if n_dead > 0 then redis.call('HINCRBY', KEYS[6], 'dead', n_dead) end
if n_requeued > 0 then redis.call('HINCRBY', KEYS[6], 'requeued', n_requeued) end
if n_cancelled > 0 then redis.call('HINCRBY', KEYS[6], 'cancelled', n_cancelled) end
if n_dlq_trimmed > 0 then redis.call('HINCRBY', KEYS[6], 'dlq_trimmed', n_dlq_trimmed) end
return settled
