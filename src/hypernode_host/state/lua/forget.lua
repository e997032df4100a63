-- Forget a tombstone whose time is up: its key and every index entry of the job go.
-- KEYS: job record, job index, finished index, tombstones index. ARGV: job id.
-- Returns 1 when the record was a tombstone and is gone (anything else only leaves the tombstones index).
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'compacted_at') == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
