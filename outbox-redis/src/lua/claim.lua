-- ARGV: limit, worker id, lease ms, then one fresh token per event that may be claimed.
-- Returns the claimed events' hashes (HGETALL arrays), oldest first.
local now = now_ms()
local limit = tonumber(ARGV[1])
-- Whatever became due (schedule reached, back-off over, lease expired) joins the queue.
local ready = redis.call('ZRANGEBYSCORE', P .. ':sched', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ready) do
  redis.call('ZREM', P .. ':sched', id)
  redis.call('ZREM', P .. ':leased', id)
  local h = redis.call('HMGET', ev(id), 'seq', 'available_at', 'backoff_until', 'locked_until')
  local due = math.max(tonumber(h[2]), tonumber(h[3]) or 0, tonumber(h[4]) or 0)
  redis.call('ZADD', P .. ':queue', tonumber(h[1]), id)
  redis.call('ZADD', P .. ':dueat', due, id)
end
local ids = redis.call('ZRANGE', P .. ':queue', 0, limit - 1)
local locked_until = now + tonumber(ARGV[3])
local out = {}
for i, id in ipairs(ids) do
  redis.call('HINCRBY', ev(id), 'attempts', 1)
  redis.call('HSET', ev(id), 'lease_token', ARGV[3 + i], 'locked_by', ARGV[2], 'locked_until', locked_until)
  redis.call('ZREM', P .. ':queue', id)
  redis.call('ZREM', P .. ':dueat', id)
  redis.call('ZADD', P .. ':sched', locked_until, id)
  redis.call('ZADD', P .. ':leased', locked_until, id)
  table.insert(out, redis.call('HGETALL', ev(id)))
end
return out
