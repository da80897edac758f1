-- ARGV: limit, worker id, lease ms, a fresh random UUID, the partition's number, and an optional
-- bound: a due time and an id (absent or '' = none). The claim's tokens are that UUID with its
-- last 8 hex digits replaced by the partition (4 digits) and the event's position in the claim
-- (4 digits), so a token names the partition that issued it. With a bound, only queued events
-- before it (due time, then id) are claimed: the head of another partition, which comes first.
-- Returns, flat: the leases' expiry, then per claimed event (in due order) its id, its token and the
-- first CLAIM_READS of FIELDS, in that order (the claimer knows the rest).
-- An event written before the `body` field existed (one field per immutable part) gets its body
-- here, once: the parts are folded into it and removed (see row.rs).
local function fold_into_body(key)
  local f = redis.call('HMGET', key, 'created_at', 'id', 'event_type', 'correlation_id', 'ordering_key',
    'idempotency_key', 'traceparent', 'payload')
  local header = { tonumber(f[1]) or f[1] or cjson.null }
  for i = 2, 7 do
    if f[i] and f[i] ~= '' then header[i] = f[i] else header[i] = cjson.null end
  end
  -- The id and type are required: an empty one stays a string (and fails to decode, C11).
  header[2] = f[2] or ''
  header[3] = f[3] or ''
  local body = cjson.encode(header) .. '\n' .. (f[8] or '')
  redis.call('HSET', key, 'body', body)
  redis.call('HDEL', key, 'id', 'payload', 'correlation_id', 'created_at', 'traceparent')
  return body
end
local now = now_ms()
local limit = tonumber(ARGV[1])
promote_due(now)
local ids
local bound_at, bound_id = tonumber(ARGV[6] or ''), ARGV[7]
if bound_at then
  local entries = redis.call('ZRANGE', QUEUE, 0, limit - 1, 'WITHSCORES')
  ids = {}
  for i = 1, #entries, 2 do
    local at = tonumber(entries[i + 1])
    if at > bound_at or (at == bound_at and entries[i] >= bound_id) then break end
    ids[#ids + 1] = entries[i]
  end
else
  ids = redis.call('ZRANGE', QUEUE, 0, limit - 1)
end
local locked_until = now + tonumber(ARGV[3])
local base = string.sub(ARGV[4], 1, 28) .. string.format('%04x', tonumber(ARGV[5]) or 0)
local until_text = str(locked_until)
local out = { until_text }
local n = 1 -- #out, kept by hand: `#` searches the table each time
local woke = false
-- The claimed events leave the queue for the leases in one call each, after the loop.
local claimed = {}
local count = 0
for i, id in ipairs(ids) do
  local token = base .. string.format('%04x', i)
  local key = EV .. id
  -- The status too (returned to no one): a queued event whose status is not 'pending' was
  -- damaged by hand, and completing it would fail its fence after every lease.
  local fields = redis.call('HMGET', key, unpack(FIELDS, 1, CLAIM_READS + 1))
  local attempts = tonumber(fields[AT.attempts])
  local status = fields[AT.status]
  if attempts and not fields[AT.body] then fields[AT.body] = fold_into_body(key) end
  if not attempts then
    -- A hand-written attempts field that is not a number: the event is set aside instead of
    -- failing the whole claim (contract C11).
    woke = set_aside(id, 'attempts: not an integer', now) or woke
  elseif status ~= 'pending' then
    woke = set_aside(id, 'status: ' .. (status and cjson.encode(status) or 'missing') ..
      ' is not a status of a queued event', now) or woke
  else
    -- Saturates at PostgreSQL's integer maximum, as its claim does.
    local attempt = str(math.min(attempts, 2147483646) + 1)
    redis.call('HSET', key, 'attempts', attempt, 'lease_token', token,
      'locked_by', ARGV[2], 'locked_until', until_text)
    count = count + 1
    claimed[count] = id
    fields[AT.attempts] = attempt
    out[n + 1] = id
    out[n + 2] = token
    n = n + 2
    for f = 1, CLAIM_READS do out[n + f] = fields[f] end
    n = n + CLAIM_READS
  end
end
if count > 0 then
  zrem_all(QUEUE, claimed)
  zadd_all(LEASED, locked_until, claimed)
end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return out
