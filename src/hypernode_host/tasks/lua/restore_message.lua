-- Give a stranded job a new message, as Dramatiq's own enqueue lays it out, only if the job still
-- stands where the reconciler saw it: queued, or running on a holder that is still gone.
-- KEYS: the job record, its holder's registration, the queue's .msgs and ready list, its wake list.
-- ARGV: the state seen, the holder's host and slot seen, the message's redis id and body, the most
-- wake tokens kept. Returns 1 when the message was put on the queue, 0 when the job moved on.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[1] then return 0 end
if state == 'running' then
  local host = redis.call('HGET', KEYS[1], 'host') or ''
  local slot = redis.call('HGET', KEYS[1], 'slot') or ''
  if host ~= ARGV[2] or slot ~= ARGV[3] or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
elseif state ~= 'queued' then
  return 0
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('LPUSH', KEYS[5], 1)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
redis.call('HSET', KEYS[1], 'enqueued', 1)
return 1
