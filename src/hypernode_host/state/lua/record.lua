-- Create a job record only if the id is new: the one place a job id is claimed, atomically.
-- KEYS: job record, job index, queued set. ARGV[1]: receipt time (ms); ARGV[2..]: field, value, ...
-- (ARGV[3] is the job id: the first pair is "id", <job id>).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
