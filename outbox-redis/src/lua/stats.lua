-- Returns pending, due, leased, processed, dead, corrupt, oldest due time ms ('' when none), now ms.
local now = now_ms()
local oldest = false
local first = redis.call('ZRANGE', QUEUE, 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
for _, from in ipairs({ ':sched', ':leased' }) do
  local first_due = redis.call('ZRANGEBYSCORE', P .. from, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if first_due[2] and (not oldest or tonumber(first_due[2]) < oldest) then oldest = tonumber(first_due[2]) end
end
return {
  tostring(tonumber(redis.call('GET', PENDING_COUNT)) or 0),
  tostring(redis.call('ZCARD', QUEUE) + redis.call('ZCOUNT', SCHED, '-inf', now)
    + redis.call('ZCOUNT', LEASED, '-inf', now)),
  tostring(redis.call('ZCOUNT', LEASED, '(' .. now, '+inf')),
  tostring(redis.call('ZCARD', P .. ':processed')),
  tostring(redis.call('ZCARD', P .. ':dead')),
  tostring(redis.call('ZCARD', P .. ':corrupt')),
  oldest and string.format('%d', oldest) or '',
  string.format('%d', now),
}
