-- Take every GPU lease or none. KEYS: the leases. ARGV: owner, TTL (s), a stale holder that may be replaced.
-- Returns {0, ''} when taken, else {index of the first lease held by someone else, its holder}.
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] and holder ~= ARGV[3] then return {i, holder} end
end
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return {0, ''}
