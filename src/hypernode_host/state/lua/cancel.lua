-- Set a job's cancel flag, only while the job is here and not finished: a cancel for an id this node
-- does not have (yet, or ever) leaves nothing behind, and a job that arrives later is not pre-cancelled.
-- KEYS: job record, cancel flag. ARGV: the flag's TTL, seconds.
-- Returns 1 when the flag is set, 0 when the job is unknown or already finished.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return 1
