-- Applies one fenced completion at server time `now`. Returns applied (1 or 0, 0 = lease lost and
-- nothing changed) and whether an event became due now (to publish a wake-up once).
local function complete_one(now, id, token, status, results, attempts, delay)
  local h = redis.call('HMGET', ev(id), 'lease_token', 'status', 'ordering_key')
  if h[1] ~= token or h[2] ~= 'pending' then return 0, false end
  redis.call('HSET', ev(id), 'status', status, 'handler_results', results, 'attempts', attempts,
    'lease_token', '', 'locked_by', '', 'locked_until', '')
  unschedule(id)
  local woke = false
  if status == 'pending' then
    local backoff = ''
    if delay ~= '' then backoff = now + tonumber(delay) end
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
  return 1, woke
end
