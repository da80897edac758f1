-- ARGV: id, from ('dead' or 'corrupt'), handler_results JSON ('' keeps the stored ones). Puts the
-- event back in the queue. Returns 1, or 0 when the event is not in that state.
local now = now_ms()
local id = ARGV[1]
local from = ARGV[2]
local h = redis.call('HMGET', ev(id), 'status', 'seq', 'ordering_key')
if h[1] ~= from then return 0 end
redis.call('HSET', ev(id), 'status', 'pending', 'backoff_until', '', 'available_at', str(now),
  'processed_at', '', 'corrupt_reason', '', 'lease_token', '', 'locked_by', '', 'locked_until', '')
if from == 'dead' then redis.call('HSET', ev(id), 'attempts', '0') end
if ARGV[3] ~= '' then redis.call('HSET', ev(id), 'handler_results', ARGV[3]) end
redis.call('ZREM', P .. ':' .. from, id)
redis.call('INCR', PENDING_COUNT)
local okey = h[3]
if okey and okey ~= '' then
  redis.call('ZADD', P .. ':okey:' .. okey, h[2], id)
  if not is_head(id, okey) then return 1 end
  -- It heads its key again: the previous head waits, unless it is already in flight.
  local second = redis.call('ZRANGE', P .. ':okey:' .. okey, 1, 1)[1]
  if second and redis.call('ZSCORE', LEASED, second) == false then
    redis.call('ZREM', QUEUE, second)
    redis.call('ZREM', SCHED, second)
  end
end
schedule(id, now)
redis.call('PUBLISH', P .. ':wake', '')
return 1
