-- Store a result once: the outbox entry, the record and the counters change together.
-- KEYS: job record, reply stream, stats, queued set, running set, status counts, durations, finished index.
-- ARGV: job id, result (JSON), status, finish time (ms), counter to bump, duration (s),
-- then the duration histogram's bucket bounds, ascending. Returns 0 when the job was finished already.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'finished' or state == 'reported' or state == 'rejected' then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'result', ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'finished', 'status', ARGV[3], 'result', ARGV[2],
           'finished_at', ARGV[4], 'entry', entry)
redis.call('HDEL', KEYS[1], 'pending_result')
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[3], 1)
local seconds = tonumber(ARGV[6])
local bucket = '+Inf'
for i = 7, #ARGV do
  if seconds <= tonumber(ARGV[i]) then bucket = ARGV[i]; break end
end
redis.call('HINCRBY', KEYS[7], ARGV[3] .. '|' .. bucket, 1)
redis.call('HINCRBY', KEYS[7], ARGV[3] .. '|count', 1)
redis.call('HINCRBYFLOAT', KEYS[7], ARGV[3] .. '|sum', ARGV[6])
redis.call('ZADD', KEYS[8], ARGV[4], ARGV[1])
return 1
