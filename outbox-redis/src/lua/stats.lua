-- Returns pending, due, leased, processed, dead, corrupt, oldest due time ms ('' when none), now ms.
local now = now_ms()
local oldest = false
local first = redis.call('ZRANGE', P .. ':queue', 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
for _, from in ipairs({ ':sched', ':leased' }) do
  local first_due = redis.call('ZRANGEBYSCORE', P .. from, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if first_due[2] and (not oldest or tonumber(first_due[2]) < oldest) then oldest = tonumber(first_due[2]) end
end
return {
  tostring(tonumber(redis.call('GET', P .. ':pending_count')) or 0),
  tostring(redis.call('ZCARD', P .. ':queue') + redis.call('ZCOUNT', P .. ':sched', '-inf', now)
    + redis.call('ZCOUNT', P .. ':leased', '-inf', now)),
  tostring(redis.call('ZCOUNT', P .. ':leased', '(' .. now, '+inf')),
  tostring(redis.call('ZCARD', P .. ':processed')),
  tostring(redis.call('ZCARD', P .. ':dead')),
  tostring(redis.call('ZCARD', P .. ':corrupt')),
  oldest and string.format('%d', oldest) or '',
  string.format('%d', now),
}
