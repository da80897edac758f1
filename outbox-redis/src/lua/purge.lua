-- ARGV: status ('processed' or 'dead'), older-than ms, batch size. Returns how many were deleted.
local ids = redis.call('ZRANGEBYSCORE', P .. ':' .. ARGV[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local ikey = redis.call('HGET', ev(id), 'idempotency_key')
  if ikey and ikey ~= '' then redis.call('HDEL', P .. ':idem', ikey) end
  redis.call('DEL', ev(id))
  redis.call('ZREM', P .. ':' .. ARGV[1], id)
end
return #ids
