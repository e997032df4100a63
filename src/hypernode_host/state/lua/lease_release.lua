-- Drop the leases the owner holds (never someone else's). KEYS: the leases. ARGV: owner.
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
