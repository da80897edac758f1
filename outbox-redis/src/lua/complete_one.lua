-- Applies one fenced completion at server time `now`. Returns applied (1 or 0, 0 = lease lost and
-- nothing changed) and whether an event became due now (to publish a wake-up once).
local function complete_one(now, id, token, status, results, attempts, delay)
  local key = EV .. id
  local h = redis.call('HMGET', key, 'lease_token', 'status', 'ordering_key')
  if h[1] ~= token or h[2] ~= 'pending' then return 0, false end
  -- A leased event is in `leased`, or in `queue` once its lease expired (the token still matches
  -- until someone claims it again); never in `sched`.
  if redis.call('ZREM', LEASED, id) == 0 then redis.call('ZREM', QUEUE, id) end
  local woke = false
  if status == 'pending' then
    local backoff = ''
    if delay ~= '' then backoff = now + tonumber(delay) end
    redis.call('HSET', key, 'status', status, 'handler_results', results, 'attempts', attempts,
      'lease_token', '', 'locked_by', '', 'locked_until', '', 'processed_at', '', 'backoff_until', backoff)
    woke = schedule(id, now)
  else
    redis.call('HSET', key, 'status', status, 'handler_results', results, 'attempts', attempts,
      'lease_token', '', 'locked_by', '', 'locked_until', '', 'processed_at', now, 'backoff_until', '')
    redis.call('DECR', PENDING_COUNT)
    redis.call('ZADD', P .. ':' .. status, now, id)
    woke = hand_off_key(id, h[3], now) or woke
  end
  return 1, woke
end
