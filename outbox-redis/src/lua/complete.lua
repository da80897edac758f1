-- ARGV: id, token, status, handler_results JSON, attempts, retry delay ms ('' = none).
-- Returns 1, or 0 when the lease is lost (nothing changed).
local now = now_ms()
local id = ARGV[1]
local h = redis.call('HMGET', ev(id), 'lease_token', 'status', 'ordering_key')
if h[1] ~= ARGV[2] or h[2] ~= 'pending' then return 0 end
local status = ARGV[3]
redis.call('HSET', ev(id), 'status', status, 'handler_results', ARGV[4], 'attempts', ARGV[5],
  'lease_token', '', 'locked_by', '', 'locked_until', '')
unschedule(id)
local woke = false
if status == 'pending' then
  local backoff = ''
  if ARGV[6] ~= '' then backoff = now + tonumber(ARGV[6]) end
  redis.call('HSET', ev(id), 'processed_at', '', 'backoff_until', backoff)
  woke = schedule(id, now)
else
  redis.call('HSET', ev(id), 'processed_at', now, 'backoff_until', '')
  redis.call('ZREM', P .. ':pending', id)
  redis.call('ZADD', P .. ':' .. status, now, id)
  local okey = h[3]
  if okey and okey ~= '' then
    -- Hand the ordering key to its next event.
    redis.call('ZREM', P .. ':okey:' .. okey, id)
    local next_id = redis.call('ZRANGE', P .. ':okey:' .. okey, 0, 0)[1]
    if next_id and redis.call('ZSCORE', P .. ':leased', next_id) == false then
      woke = schedule(next_id, now) or woke
    end
  end
end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return 1
