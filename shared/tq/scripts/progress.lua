-- A running job's progress (tq.progress): three fields on its record, only while the record exists
-- (never recreate a removed or trimmed one), and the job.progress event.
-- KEYS: 1 job record
-- ARGV: 1 fraction, 2 message, 3 at (ms), 4 the event JSON or '' (events off)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'pg', ARGV[1], 'pm', ARGV[2], 'pt', ARGV[3])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', 'tq:events', ARGV[4]) end
return 1
