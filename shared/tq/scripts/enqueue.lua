-- Enqueue a batch of jobs onto one queue: id and idempotency checks, job record, stream entry or delay.
-- The payload is stored once: in the stream entry of a job due now (its record holds only the entry
-- id), in the record of a delayed job (moved to the entry when it is due). Field names: tq.envelope.
-- KEYS: 1 stream, 2 delayed, 3 counters, 4 config
-- ARGV: 1 key prefix, 2 now (ms), 3 queue, 4 default idempotency ttl (s), 5 publish events (0/1),
--       then one per job, 6 fields joined by the unit separator (\31): id, job name, idempotency key
--       or '', trace id or '', due (ms) or '0', payload json (last: JSON never holds a raw \31;
--       the producer checks the others)
-- Returns per job: its id, or 'dup:<id of the job that holds the key>'. An id whose record exists is
-- answered as enqueued and nothing is written: a producer resending a call whose reply it lost
-- (the connection dropped after the script ran) gets its job, not a second one. Every record has
-- the field 'x' (its entry id; empty while it has no entry), so creating a record is an HSETNX of
-- it, which is also the check.
local prefix, now, queue = ARGV[1], ARGV[2], ARGV[3]
local ttl = false -- read from the live config only when a job carries a key
local events = ARGV[5] == '1'
local now_n = tonumber(now)
local NO_FIELDS = {} -- the optional fields of a job with no key and no trace: no table per job
local out, added = {}, 0
-- the events' fixed parts, formatted once per call (a number formatted per job cost as much as its PUBLISH)
local in_queue = '","queue":"' .. queue .. '","job_id":"'
local at = '","at":' .. now / 1000 .. ',"data":{}}'
local JOB = '^' .. string.rep('([^\31]*)\31', 5) .. '(.*)$' -- a job's 6 fields, in one match
for i = 6, #ARGV do
  local id, name, idem, trace, due, payload = string.match(ARGV[i], JOB)
  local jk = prefix .. 'job:' .. id
  local holder = false
  if idem ~= '' then
    ttl = ttl or redis.call('HGET', KEYS[4], 'idempotency_ttl_s') or ARGV[4]
    local ik = prefix .. 'idem:' .. idem
    if not redis.call('SET', ik, id, 'NX', 'EX', ttl) then
      holder = redis.call('GET', ik)
      if holder then holder = string.gsub(holder, '^done:', '') end
    end
  end
  if holder == id then
    out[#out + 1] = id
  elseif holder then
    out[#out + 1] = 'dup:' .. holder
  else
    local more = NO_FIELDS
    if idem ~= '' or trace ~= '' then
      more = {}
      if idem ~= '' then more[#more + 1] = 'k'; more[#more + 1] = idem end
      if trace ~= '' then more[#more + 1] = 'tr'; more[#more + 1] = trace end
    end
    local kind
    if due ~= '0' and tonumber(due) > now_n then
      if redis.call('HSETNX', jk, 'x', '') == 1 then
        redis.call('HSET', jk, 's', 'delayed', 'q', due, 'n', name, 'p', payload, 't', now, unpack(more))
        redis.call('ZADD', KEYS[2], due, id)
        kind = 'job.delayed'
      end
    else
      -- a waiting job's record is its entry id alone (no state field: a record without one is waiting)
      local xid = redis.call('XADD', KEYS[1], '*', 'i', id, 'n', name, 'p', payload, 't', now, unpack(more))
      if redis.call('HSETNX', jk, 'x', xid) == 1 then
        kind = 'job.waiting'
      else
        redis.call('XDEL', KEYS[1], xid) -- this very job, sent again: its record exists
      end
    end
    if not kind then
      out[#out + 1] = id
    else
      if events then
        redis.call('PUBLISH', 'tq:events', '{"type":"' .. kind .. in_queue .. id .. '","name":"' .. name .. at)
      end
      out[#out + 1] = id
      added = added + 1
    end
  end
end
if added > 0 then redis.call('HINCRBY', KEYS[3], 'enqueued', added) end
return out
