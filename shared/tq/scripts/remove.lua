-- Remove a job that is not running, in one step (a consumer cannot read it in between).
-- KEYS: 1 stream, 2 delayed, 3 completed index, 4 dead index, 5 job record
-- ARGV: 1 group, 2 stream entry id or '', 3 job id
-- Returns 'active' (refused: a consumer holds it) or 'removed'.
local eid, id = ARGV[2], ARGV[3]
if eid ~= '' then
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], eid, eid, 1)
  if ok and #pending > 0 then return 'active' end
  redis.call('XDEL', KEYS[1], eid)
end
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('DEL', KEYS[5])
return 'removed'
