-- ARGV: limit, worker id, lease ms, then one fresh token per event that may be claimed.
-- Returns, per claimed event, the pair of its id and its fields (in the order of FIELDS), in due
-- order.
local now = now_ms()
local limit = tonumber(ARGV[1])
-- Whatever became due (schedule reached, back-off over, lease expired) joins the queue at the time it
-- became due.
local ready = redis.call('ZRANGEBYSCORE', P .. ':sched', '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #ready, 2 do
  local id = ready[i]
  redis.call('ZREM', P .. ':sched', id)
  redis.call('ZREM', P .. ':leased', id)
  redis.call('ZADD', P .. ':queue', tonumber(ready[i + 1]), id)
end
local ids = redis.call('ZRANGE', P .. ':queue', 0, limit - 1)
local locked_until = now + tonumber(ARGV[3])
local out = {}
local woke = false
for i, id in ipairs(ids) do
  -- A hand-written attempts field that is not a number would fail HINCRBY and the whole claim:
  -- that event is set aside instead (contract C11).
  local counted = redis.pcall('HINCRBY', ev(id), 'attempts', 1)
  if type(counted) == 'table' and counted.err then
    woke = set_aside(id, 'attempts: not an integer', now) or woke
  else
    redis.call('HSET', ev(id), 'lease_token', ARGV[3 + i], 'locked_by', ARGV[2], 'locked_until', locked_until)
    redis.call('ZREM', P .. ':queue', id)
    redis.call('ZADD', P .. ':sched', locked_until, id)
    redis.call('ZADD', P .. ':leased', locked_until, id)
    out[#out + 1] = { id, redis.call('HMGET', ev(id), unpack(FIELDS)) }
  end
end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return out
