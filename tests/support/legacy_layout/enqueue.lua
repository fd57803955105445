-- Enqueue a batch of jobs onto one queue: idempotency check, job record, stream entry or delay.
-- The record holds state, envelope (with name and enqueue time) and stream entry id.
-- KEYS: 1 stream, 2 delayed, 3 counters, 4 config
-- ARGV: 1 key prefix, 2 now (ms), 3 queue, 4 default idempotency ttl (s), 5 publish events (0/1),
--       then one per job, 5 fields joined by the unit separator (\31): id, envelope json, job name,
--       idempotency key or '', due (ms) or '0' (JSON and the checked key never contain \31)
-- Returns per job: its id, or 'dup:<id of the job that holds the key>'.
local prefix, now, queue = ARGV[1], ARGV[2], ARGV[3]
local ttl = false -- read from the live config only when a job carries a key
local events = ARGV[5] == '1'
local out, added = {}, 0
for i = 6, #ARGV do
  local packed = ARGV[i]
  local s1 = string.find(packed, '\31', 1, true)
  local s2 = string.find(packed, '\31', s1 + 1, true)
  local s3 = string.find(packed, '\31', s2 + 1, true)
  local s4 = string.find(packed, '\31', s3 + 1, true)
  local id, env = string.sub(packed, 1, s1 - 1), string.sub(packed, s1 + 1, s2 - 1)
  local name, idem = string.sub(packed, s2 + 1, s3 - 1), string.sub(packed, s3 + 1, s4 - 1)
  local due = string.sub(packed, s4 + 1)
  local holder = false
  if idem ~= '' then
    ttl = ttl or redis.call('HGET', KEYS[4], 'idempotency_ttl_s') or ARGV[4]
    local ik = prefix .. 'idem:' .. idem
    if not redis.call('SET', ik, id, 'NX', 'EX', ttl) then
      holder = redis.call('GET', ik)
      if holder then holder = string.gsub(holder, '^done:', '') end
    end
  end
  if holder then
    out[#out + 1] = 'dup:' .. holder
  else
    local jk = prefix .. 'job:' .. id
    local kind
    if tonumber(due) > tonumber(now) then
      redis.call('HSET', jk, 's', 'delayed', 'e', env, 'q', due)
      redis.call('ZADD', KEYS[2], due, id)
      kind = 'job.delayed'
    else
      local xid = redis.call('XADD', KEYS[1], '*', 'j', env)
      redis.call('HSET', jk, 's', 'waiting', 'e', env, 'x', xid)
      kind = 'job.waiting'
    end
    if events then
      redis.call('PUBLISH', 'tq:events', '{"type":"' .. kind .. '","queue":"' .. queue .. '","job_id":"' .. id
        .. '","name":"' .. name .. '","at":' .. now / 1000 .. ',"data":{}}')
    end
    out[#out + 1] = id
    added = added + 1
  end
end
if added > 0 then redis.call('HINCRBY', KEYS[3], 'enqueued', added) end
return out
