-- ARGV: id, handler_results JSON (failures reset). Returns 1, or 0 when the event is not dead.
local now = now_ms()
local id = ARGV[1]
local h = redis.call('HMGET', ev(id), 'status', 'seq', 'ordering_key')
if h[1] ~= 'dead' then return 0 end
redis.call('HSET', ev(id), 'status', 'pending', 'attempts', 0, 'backoff_until', '', 'available_at', now,
  'processed_at', '', 'handler_results', ARGV[2])
redis.call('ZREM', P .. ':dead', id)
redis.call('ZADD', P .. ':pending', tonumber(h[2]), id)
local okey = h[3]
if okey ~= '' then
  redis.call('ZADD', P .. ':okey:' .. okey, tonumber(h[2]), id)
  if not is_head(id, okey) then return 1 end
  -- It heads its key again: the previous head waits, unless it is already in flight.
  local second = redis.call('ZRANGE', P .. ':okey:' .. okey, 1, 1)[1]
  if second and redis.call('ZSCORE', P .. ':leased', second) == false then
    redis.call('ZREM', P .. ':queue', second)
    redis.call('ZREM', P .. ':dueat', second)
    redis.call('ZREM', P .. ':sched', second)
  end
end
schedule(id, now)
redis.call('PUBLISH', P .. ':wake', '')
return 1
