-- Shrink a settled job's record to its tombstone: the id, the final state and status, the digest of
-- its result and its times. The tombstone still stops a second run (record.lua finds the key, claim.lua
-- a state that is neither queued nor running) and still answers a job id sent again.
-- KEYS: job record, settled index, tombstones index.
-- ARGV: job id, compaction time (ms), SHA-256 of the result as stored (hex; "" for none).
-- Returns 1 when compacted, 0 when the job is not settled (it only leaves the settled index).
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[2], ARGV[1])
if (state ~= 'reported' and state ~= 'rejected') or redis.call('HEXISTS', KEYS[1], 'compacted_at') == 1 then
  return 0
end
local names = {'status', 'received_at', 'finished_at', 'settled_at'}
local kept = redis.call('HMGET', KEYS[1], unpack(names))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', state, 'compacted_at', ARGV[2], 'result_sha256', ARGV[3])
for i, name in ipairs(names) do
  if kept[i] then redis.call('HSET', KEYS[1], name, kept[i]) end
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
