-- ARGV: count, then per event: id, event_type, the body after its creation time (see row.rs:
-- `,"<id>","<type>",…]` + newline + payload), ordering_key, idempotency_key, available_at ('' = now).
-- Returns id, duplicate flag (0/1) per event. Absent keys are ''. An event's hash holds its body
-- (immutable), its type (for per-type counts), its keys (for scripts), and the fields that change;
-- fields that are empty are not written.
local now = now_ms()
local now_text = str(now)
local n = tonumber(ARGV[1])
-- Check everything before writing anything: a script that fails half-way is not rolled back. An
-- event sent again (same id, same idempotency key) is a duplicate, as on the SQL stores; another
-- event under an existing id is refused.
for i = 0, n - 1 do
  local id, ikey = ARGV[2 + i * 6], ARGV[6 + i * 6]
  if redis.call('EXISTS', ev(id)) == 1
    and (ikey == '' or redis.call('HGET', P .. ':idem', ikey) ~= id) then
    return redis.error_reply('OUTBOX_INVALID event id ' .. id .. ' already exists')
  end
end
local out = {}
local woke = false
for i = 0, n - 1 do
  local b = 2 + i * 6
  local id, ty, tail, okey, ikey, avail = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local existing = false
  if ikey ~= '' then existing = redis.call('HGET', P .. ':idem', ikey) end
  if existing then
    table.insert(out, existing)
    table.insert(out, '1')
  else
    local seq = str(redis.call('INCR', P .. ':seq'))
    if avail == '' then avail = now_text end
    local fields = { 'body', '[' .. now_text .. tail, 'event_type', ty, 'seq', seq, 'available_at', avail,
      'attempts', '0', 'status', 'pending', 'handler_results', '{}' }
    if okey ~= '' then
      fields[#fields + 1] = 'ordering_key'
      fields[#fields + 1] = okey
    end
    if ikey ~= '' then
      fields[#fields + 1] = 'idempotency_key'
      fields[#fields + 1] = ikey
    end
    redis.call('HSET', ev(id), unpack(fields))
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
