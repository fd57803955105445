-- Read one job in one round trip: its record, the stream entry it points to (a waiting or active
-- job's envelope is there), whether that entry is delivered (active), and a dead job's DLQ entry
-- (its payload and stack are there), and when a completed job finished (its score in the completed
-- index: its record keeps no finish time). Read only.
-- KEYS: 1 job record, 2 stream, 3 dlq, 4 completed index
-- ARGV: 1 group, 2 job id
-- Returns {} when there is no record, else {record (flat), entry fields (flat, or {}), 1 when the
-- entry is pending else 0, DLQ entry fields (flat, or {}), finished (ms) or false}.
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {} end
local x, dl
for i = 1, #h, 2 do
  if h[i] == 'x' then x = h[i + 1] elseif h[i] == 'dl' then dl = h[i + 1] end
end
local entry, pending, dead = {}, 0, {}
if x and x ~= '' then
  local found = redis.call('XRANGE', KEYS[2], x, x)
  if #found > 0 then entry = found[1][2] end
  local ok, rows = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1], x, x, 1) -- NOGROUP: nothing delivered
  if ok and #rows > 0 then pending = 1 end
end
if dl then
  local found = redis.call('XRANGE', KEYS[3], dl, dl)
  if #found > 0 then dead = found[1][2] end
end
return {h, entry, pending, dead, redis.call('ZSCORE', KEYS[4], ARGV[2])}
