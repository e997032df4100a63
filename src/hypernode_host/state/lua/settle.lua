-- The backend settled a result: it leaves the outbox and, if the job still waits for it, the job is
-- reported (or rejected, with the backend's text) and its retention starts. A second copy of the same
-- settlement changes nothing: a record already settled, compacted or forgotten is left as it is.
-- KEYS: job record, reply stream, settled index, node hash.
-- ARGV: outbox entry id, job id, final state (reported|rejected), settlement time (ms), rejection text.
-- Returns 1 when the job was settled now.
redis.call('XDEL', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'finished' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'settled_at', ARGV[4])
if ARGV[3] == 'rejected' then
  redis.call('HSET', KEYS[1], 'rejection', ARGV[5], 'rejected_at', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'results_rejected', 1)
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
