-- Take a job for a worker: queued, or running on a holder whose registration has expired.
-- KEYS: job record, queued set, running set, the registration of the holder the caller saw.
-- ARGV: host, slot, container, job id, the holder's host and slot as the caller saw them.
-- Returns the attempt number; 0 when the job is finished (or unknown); -1 when a live worker holds it.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
local host = redis.call('HGET', KEYS[1], 'host') or ''
local slot = redis.call('HGET', KEYS[1], 'slot') or ''
local mine = host == ARGV[1] and slot == ARGV[2]
if state == 'running' and not mine then
  -- If another worker claimed the job since the caller looked, or the holder is alive, leave it alone.
  if host ~= ARGV[5] or slot ~= ARGV[6] or redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'host', ARGV[1], 'slot', ARGV[2], 'container', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[4])
return attempt
