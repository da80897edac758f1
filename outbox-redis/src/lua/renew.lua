-- ARGV: extension ms, then pairs of id, token. Returns per pair the new expiry, or 0 when that
-- lease is lost (nothing changed for it).
local now = now_ms()
local locked_until = str(now + tonumber(ARGV[1]))
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', ev(id), 'lease_token', 'status')
  if h[1] == ARGV[i + 1] and h[2] == 'pending' then
    redis.call('HSET', ev(id), 'locked_until', locked_until)
    -- Back among the leases, also when an expired lease had moved it to the queue.
    redis.call('ZREM', QUEUE, id)
    redis.call('ZADD', LEASED, locked_until, id)
    out[#out + 1] = locked_until
  else
    out[#out + 1] = 0
  end
end
return out
