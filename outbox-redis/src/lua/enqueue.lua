-- ARGV: count, then per event: id, event_type, payload, correlation_id, ordering_key,
-- idempotency_key, available_at ('' = now), traceparent. Returns id, duplicate flag (0/1) per event.
local now = now_ms()
local n = tonumber(ARGV[1])
-- Check everything before writing anything: a script that fails half-way is not rolled back. An
-- event sent again (same id, same idempotency key) is a duplicate, as on the SQL stores; another
-- event under an existing id is refused.
for i = 0, n - 1 do
  local id, ikey = ARGV[2 + i * 8], ARGV[7 + i * 8]
  if redis.call('EXISTS', ev(id)) == 1
    and (ikey == '' or redis.call('HGET', P .. ':idem', ikey) ~= id) then
    return redis.error_reply('OUTBOX_INVALID event id ' .. id .. ' already exists')
  end
end
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 2 + i * 8
  local id, ty, payload, corr, okey, ikey, avail, trace =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local existing = false
  if ikey ~= '' then existing = redis.call('HGET', P .. ':idem', ikey) end
  if existing then
    table.insert(out, existing)
    table.insert(out, '1')
  else
    local seq = redis.call('INCR', P .. ':seq')
    if avail == '' then avail = now end
    redis.call('HSET', ev(id), 'id', id, 'seq', seq, 'event_type', ty, 'payload', payload,
      'correlation_id', corr, 'ordering_key', okey, 'idempotency_key', ikey, 'created_at', now,
      'available_at', avail, 'attempts', 0, 'backoff_until', '', 'status', 'pending',
      'processed_at', '', 'handler_results', '{}', 'locked_by', '', 'locked_until', '', 'lease_token', '',
      'traceparent', trace)
    redis.call('INCR', PENDING_COUNT)
    if ikey ~= '' then redis.call('HSET', P .. ':idem', ikey, id) end
    local head = true
    if okey ~= '' then
      redis.call('ZADD', P .. ':okey:' .. okey, seq, id)
      head = is_head(id, okey)
    end
    if head and schedule(id, now) then woke = true end
    table.insert(out, id)
    table.insert(out, '0')
  end
end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return out
