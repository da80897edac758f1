-- ARGV: limit, worker id, lease ms, and a fresh random UUID: the claim's tokens are that UUID with
-- its last 8 hex digits replaced by the event's position in the claim.
-- Returns, per claimed event, the pair of its id and its fields (in the order of FIELDS), in due
-- order.
local now = now_ms()
local limit = tonumber(ARGV[1])
-- Whatever became due (schedule reached, back-off over, lease expired) joins the queue at the time it
-- became due.
for _, from in ipairs({ ':sched', ':leased' }) do
  local ready = redis.call('ZRANGEBYSCORE', P .. from, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
  for i = 1, #ready, 2 do
    redis.call('ZREM', P .. from, ready[i])
    redis.call('ZADD', P .. ':queue', tonumber(ready[i + 1]), ready[i])
  end
end
local ids = redis.call('ZRANGE', P .. ':queue', 0, limit - 1)
local locked_until = now + tonumber(ARGV[3])
local base = string.sub(ARGV[4], 1, 28)
local out = {}
local woke = false
for i, id in ipairs(ids) do
  local token = base .. string.format('%08x', i)
  local fields = redis.call('HMGET', ev(id), unpack(FIELDS))
  local attempts = tonumber(fields[AT.attempts])
  if not attempts then
    -- A hand-written attempts field that is not a number: the event is set aside instead of
    -- failing the whole claim (contract C11).
    woke = set_aside(id, 'attempts: not an integer', now) or woke
  else
    redis.call('HSET', ev(id), 'attempts', attempts + 1, 'lease_token', token,
      'locked_by', ARGV[2], 'locked_until', locked_until)
    redis.call('ZREM', P .. ':queue', id)
    redis.call('ZADD', P .. ':leased', locked_until, id)
    fields[AT.attempts] = tostring(attempts + 1)
    fields[AT.lease_token] = token
    fields[AT.locked_by] = ARGV[2]
    fields[AT.locked_until] = tostring(locked_until)
    out[#out + 1] = { id, fields }
  end
end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return out
