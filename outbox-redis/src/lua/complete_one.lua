-- Applies one fenced completion at server time `now`. Returns applied (1 or 0, 0 = lease lost and
-- nothing changed), whether an event became due now (to publish a wake-up once) and whether it left
-- the pending events (the caller lowers the pending count once per call). A finished event's id
-- is added to `finished[status]`: the caller moves them out of the leases and into their status's
-- set in one call each (`finish_all`).
-- A finished event keeps its last lease fields: they mean nothing once the status is not
-- 'pending' (fencing checks the status first, and reads ignore them; see row.rs).
local function complete_one(now, id, token, status, results, attempts, delay, finished)
  local key = EV .. id
  local h = redis.call('HMGET', key, 'lease_token', 'status', 'ordering_key')
  if h[1] ~= token or h[2] ~= 'pending' then return 0, false, false end
  if status == 'pending' then
    -- A leased event is in `leased`, or in `queue` once its lease expired (the token still
    -- matches until someone claims it again); never in `sched`.
    if redis.call('ZREM', LEASED, id) == 0 then redis.call('ZREM', QUEUE, id) end
    local backoff = ''
    if delay ~= '' then backoff = str(now + tonumber(delay)) end
    redis.call('HSET', key, 'status', status, 'handler_results', results, 'attempts', attempts,
      'lease_token', '', 'locked_by', '', 'locked_until', '', 'processed_at', '', 'backoff_until', backoff)
    return 1, schedule(id, now), false
  end
  redis.call('HSET', key, 'status', status, 'handler_results', results, 'attempts', attempts,
    'processed_at', str(now))
  local ids = finished[status]
  if not ids then
    ids = {}
    finished[status] = ids
  end
  ids[#ids + 1] = id
  return 1, hand_off_key(id, h[3], now), true
end
-- Moves the events `complete_one` finished out of the leases (or the queue, where an expired
-- lease put them) and into the set of their status, scored by `now`.
local function finish_all(now, finished)
  for status, ids in pairs(finished) do
    if zrem_all(LEASED, ids) < #ids then zrem_all(QUEUE, ids) end
    zadd_all(P .. ':' .. status, now, ids)
  end
end
