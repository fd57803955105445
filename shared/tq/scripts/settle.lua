-- Settle a batch of delivered entries atomically: each op acks its entry and records the outcome.
-- KEYS: 1 stream, 2 delayed, 3 dlq, 4 completed index, 5 dead index, 6 counters, 7 audit stream (tq:{q}:audit),
--       8 started markers (tq:{q}:started: cleared for every op while it exists),
--       9 cancel markers (tq:{q}:cancels: a cancelled job's is dropped),
--       10 progress marks (tq:{q}:progress: the consumer's, carried for its writer - tq.worker)
-- ARGV: 1 prefix, 2 group, 3 now (ms), 4 queue, 5 retention completed, 6 retention failed,
--       7 audit (0/1; never trimmed here: the AuditWriter deletes what it wrote, the worker's intake
--       waits while the backlog is at its bound - tq.audit), 8 publish events (0/1), 9 consumer id,
--       10 DLQ cap (its oldest entries beyond it are trimmed, counted as dlq_trimmed),
--       11 the consumer's progress mark, the newest entry it took to run, or '' (kept when newer
--       than the stored one: a settle retried late never moves it back),
--       then one per op, its 13 fields joined by the unit separator (\31) - one argument per job
--       keeps the client's command packing cheap: kind, entry id, job id, job name, attempt,
--       started (ms), duration (ms), idempotency key, trace id, a, b, enqueued (ms), payload json
--       (last: the rest of the argument). Once its entry is deleted a job's record keeps its
--       envelope's fields (n, t, p, k, tr: tq.envelope), except a dead one's payload, which its DLQ
--       entry holds.
--   kind c (completed):   a = result summary
--   kind s (skipped):     a = reason
--   kind r (retry):       a = due (ms), b = failure json {type, message, stack[, suspect]}; suspect:
--                         the job was running when its consumer died, it runs alone next time
--   kind d (dead-letter): b = failure json; a = the envelope json (the raw entry of a forged entry)
--   kind q (requeue an unstarted entry, no attempt charged; job id '' when unreadable)
--   kind x (cancelled, tq.cancel: recorded 'cancelled' in the completed index, its marker dropped)
-- Returns the number of ops that found their entry still pending (others were settled before).
local prefix, group, now, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keep_completed, keep_failed = tonumber(ARGV[5]), tonumber(ARGV[6])
local audit_on, events, consumer, dlq_max = ARGV[7] == '1', ARGV[8] == '1', ARGV[9], tonumber(ARGV[10])
local n_completed, n_skipped, n_retried, n_dead, n_requeued, settled = 0, 0, 0, 0, 0, 0
local n_dlq_trimmed, n_cancelled = 0, 0
-- a dead job's record leaves these to its DLQ entry (or, for q and sx, to no one: it won't run again)
local LEFT_TO_THE_DEAD_LETTER = {e = true, es = true, p = true, em = true, h = true, f = true, q = true, sx = true}

-- Events of jobs that ran are built by concatenation (hot path: their id is pattern-checked and
-- their name is in the registry); every other event goes through cjson (names may be forged).
local at = tostring(now / 1000) -- the events' time, formatted once per call (not per job)
local function publish_completed(id, name, data)
  if events then
    redis.call('PUBLISH', 'tq:events', '{"type":"job.completed","queue":"' .. queue .. '","job_id":"' .. id
      .. '","name":"' .. name .. '","at":' .. at .. ',"data":' .. data .. '}')
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
    local popped, records = redis.call('ZPOPMIN', index, over), {}
    for i = 1, #popped, 2 do records[#records + 1] = prefix .. 'job:' .. popped[i] end
    for s = 1, #records, 1000 do -- one DEL per thousand records (Lua's unpack has a limit)
      redis.call('DEL', unpack(records, s, math.min(#records, s + 999)))
    end
  end
end

local OP = '^' .. string.rep('([^\31]*)\31', 12) .. '(.*)$' -- an op's 13 fields, in one match

local function fields(packed)
  local matched = {string.match(packed, OP)}
  if #matched == 13 then return matched end
  local out, pos = {}, 1
  while true do
    local sep = #out < 12 and string.find(packed, '\31', pos, true)
    if not sep then
      out[#out + 1] = string.sub(packed, pos)
      return out
    end
    out[#out + 1] = string.sub(packed, pos, sep - 1)
    pos = sep + 1
  end
end

-- One command for many ids, in slices (Lua's unpack has a limit); returns the sum of the replies.
local function each_slice(ids, cmd, key, extra)
  local n = 0
  for s = 1, #ids, 1000 do
    local args = {cmd, key}
    if extra then args[3] = extra end
    for k = s, math.min(#ids, s + 999) do args[#args + 1] = ids[k] end
    n = n + redis.call(unpack(args))
  end
  return n
end

-- Stream ids ('ms-seq', decimal without leading zeros) in order: a below b. Compared as digit
-- strings (shorter is smaller), exact where a Lua number would round
local function digits_below(a, b)
  return #a < #b or (#a == #b and a < b)
end
local function id_below(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  return digits_below(ams, bms) or (ams == bms and digits_below(aseq, bseq))
end

local mark = ARGV[11]
if mark ~= '' then
  local stored = redis.call('HGET', KEYS[10], consumer)
  if not stored or id_below(stored, mark) then redis.call('HSET', KEYS[10], consumer, mark) end
end

local ops, eids, gone, completed = {}, {}, {}, {}
for i = 12, #ARGV do
  ops[#ops + 1] = fields(ARGV[i])
  eids[#eids + 1] = ops[#ops][2]
end
if redis.call('EXISTS', KEYS[8]) == 1 then each_slice(eids, 'HDEL', KEYS[8]) end
-- One XACK for the batch; it answers how many entries were still pending. An entry that was not
-- (settled before, by this consumer or after a reclaim) is no longer ours to settle, and its entry
-- was deleted when it was settled: when the count falls short, an op is ours iff its entry exists.
local all_ours = each_slice(eids, 'XACK', KEYS[1], group) == #eids
local seen = {}
for _, f in ipairs(ops) do
  local kind, eid, id, name, attempt, started, duration, idem, trace, a, b, enq, payload = unpack(f, 1, 13)
  enq, payload = enq or '', payload or ''
  local ours = all_ours
  if not ours then
    ours = not seen[eid] and #redis.call('XRANGE', KEYS[1], eid, eid) > 0
    seen[eid] = true
  end
  if ours then
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
      gone[#gone + 1] = eid -- deleted below, with the batch's others
      -- the envelope's fields the record keeps (its entry is gone); 'e': a record of the legacy layout
      local env_fields = {'n', name}
      if enq ~= '' then env_fields[3] = 't'; env_fields[4] = enq end
      if idem ~= '' then env_fields[#env_fields + 1] = 'k'; env_fields[#env_fields + 1] = idem end
      if trace ~= '' then env_fields[#env_fields + 1] = 'tr'; env_fields[#env_fields + 1] = trace end
      if kind ~= 'd' and payload ~= '' then
        env_fields[#env_fields + 1] = 'p'; env_fields[#env_fields + 1] = payload
      end
      if kind == 'c' or kind == 's' then
        if a ~= '' then env_fields[#env_fields + 1] = 'r'; env_fields[#env_fields + 1] = a end
        -- 'x' emptied, not deleted: every record keeps the field (enqueue.lua); a legacy record's 'e'
        -- stays until the record is trimmed (it says what its fields say). No 'f': a completed job
        -- finished when it started plus its duration, and 'a' is left out for a first attempt (each
        -- field less counts in every retained record: about 70 bytes in a hash with a long payload)
        if attempt ~= '1' then env_fields[#env_fields + 1] = 'a'; env_fields[#env_fields + 1] = attempt end
        redis.call('HSET', jk, 's', 'completed', 'st', started, 'd', duration, 'c', consumer, 'x', '',
          unpack(env_fields))
        completed[#completed + 1] = now; completed[#completed + 1] = id -- indexed below, in one ZADD
        if kind == 'c' then
          if idem ~= '' then redis.call('SET', prefix .. 'idem:' .. idem, 'done:' .. id, 'XX', 'KEEPTTL') end
          n_completed = n_completed + 1
          local data = '{"attempt":' .. attempt .. ',"duration_ms":' .. duration .. '}'
          publish_completed(id, name, data)
          audit('job.completed', id, name, 'completed', trace, data)
        else
          n_skipped = n_skipped + 1
          publish('job.skipped', id, name, {reason = a})
          audit('job.completed', id, name, 'skipped', trace, cjson.encode({attempt = tonumber(attempt), reason = a}))
        end
      elseif kind == 'x' then  -- cancelled (tq.cancel): final, the idempotency key stays bound
        -- kept like a completed record (its entry is gone): the envelope's fields, 'x' emptied
        redis.call('HSET', jk, 's', 'cancelled', 'a', attempt, 'st', started, 'f', now, 'd', duration, 'c', consumer,
          'x', '', unpack(env_fields))
        redis.call('HDEL', KEYS[9], id)
        completed[#completed + 1] = now; completed[#completed + 1] = id -- indexed below, in one ZADD
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
            'et', failure.type, 'em', failure.message, 'es', failure.stack, 'h', cjson.encode(history), 'c', consumer,
            'x', '', unpack(env_fields))
          if payload ~= '' then redis.call('HDEL', jk, 'e') end
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
          -- the DLQ key names the queue; the first failure time, the history and the trace id only
          -- when they say more than the entry's own attempt (tq.dlq reads either)
          local dl = {'id', id, 'n', name, 'et', failure.type, 'em', failure.message, 'es', failure.stack,
            'a', attempt, 'f', now, 'e', env}
          if #history > 1 then
            dl[#dl + 1] = 'ff'; dl[#dl + 1] = history[1].at
            dl[#dl + 1] = 'h'; dl[#dl + 1] = cjson.encode(history)
          end
          if trace ~= '' then dl[#dl + 1] = 'tr'; dl[#dl + 1] = trace end
          local did = redis.call('XADD', KEYS[3], 'MAXLEN', dlq_max, '*', unpack(dl))
          -- payload, stack, message and history are in the DLQ entry (dl), once; the record keeps a
          -- summary short enough for a listpack (a message or a history would make it a hashtable),
          -- and no finish time: the DLQ entry's id is that time. Written anew: a record that was a
          -- hashtable (a retry wrote its stack) stays one however many fields are deleted. The
          -- fields it keeps first, the outcome after them (in one HSET the later value wins)
          local record, old = {}, redis.call('HGETALL', jk)
          for i = 1, #old, 2 do
            if not LEFT_TO_THE_DEAD_LETTER[old[i]] then record[#record + 1] = old[i]; record[#record + 1] = old[i + 1] end
          end
          for _, v in ipairs({'s', 'dead', 'a', attempt, 'st', started, 'd', duration, 'et', failure.type,
              'dl', did, 'c', consumer, 'x', '', unpack(env_fields)}) do
            record[#record + 1] = v
          end
          redis.call('DEL', jk)
          redis.call('HSET', jk, unpack(record))
          redis.call('ZADD', KEYS[5], now, id)
          -- A dead job keeps its idempotency key until the key's TTL ends (docs/engine.md): a replay
          -- runs the work again under it, a new enqueue with the key answers with this job.
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
if #gone > 0 then
  -- The batch's entries below the group's oldest pending entry go in one XTRIM MINID: every entry
  -- below it was delivered (the bound is at most past this batch's newest) and settled (none is
  -- pending), and a trim walks the stream once where XDEL seeks each entry (a quarter of the cost,
  -- measured). Entries settled ahead of one still pending (held, running, of another consumer) are
  -- deleted one by one: nothing settled waits in the stream behind a long job.
  local newest = gone[1]
  for i = 2, #gone do
    if id_below(newest, gone[i]) then newest = gone[i] end
  end
  local ms, seq = string.match(newest, '^(%d+)-(%d+)$')
  local rest = gone
  if #seq < 15 then -- the id after it, exactly (a sequence this long is never reached by '*' ids)
    local bound = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
    local oldest = redis.call('XPENDING', KEYS[1], group, '-', '+', 1)[1]
    if oldest and id_below(oldest[1], bound) then bound = oldest[1] end
    rest = {}
    for _, eid in ipairs(gone) do
      if not id_below(eid, bound) then rest[#rest + 1] = eid end
    end
    redis.call('XTRIM', KEYS[1], 'MINID', bound)
  end
  if #rest > 0 then each_slice(rest, 'XDEL', KEYS[1]) end
end
for s = 1, #completed, 2000 do
  redis.call('ZADD', KEYS[4], unpack(completed, s, math.min(#completed, s + 1999)))
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
