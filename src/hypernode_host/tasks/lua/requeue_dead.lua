-- Move one dead-lettered message back to its queue, as Dramatiq's own enqueue lays it out. A job
-- whose run raised after claiming it still reads "running" on a slot that has let it go: it is
-- queued again, so that whichever worker takes it may claim it (and reattach to its container).
-- KEYS: the queue's .XQ, .XQ.msgs, .msgs and ready list; the job record, the queued and running sets.
-- ARGV: the message's redis id, the job id ("" when the message names none). Returns 0 if it is not dead.
local body = redis.call('HGET', KEYS[2], ARGV[1])
if not body then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], body)
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[5], 'state') == 'running' then
  redis.call('HSET', KEYS[5], 'state', 'queued')
  redis.call('SREM', KEYS[7], ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[2])
end
return 1
