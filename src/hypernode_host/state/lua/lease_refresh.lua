-- Extend the leases the owner still holds. KEYS: the leases. ARGV: owner, TTL (s). Returns how many were lost.
local lost = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('EXPIRE', key, ARGV[2]) else lost = lost + 1 end
end
return lost
