-- Returns pending, due, leased, processed, dead, corrupt, oldest due time ms ('' when none), now ms.
local now = now_ms()
local oldest = false
local first = redis.call('ZRANGE', P .. ':queue', 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
local sched = redis.call('ZRANGEBYSCORE', P .. ':sched', '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if sched[2] and (not oldest or tonumber(sched[2]) < oldest) then oldest = tonumber(sched[2]) end
return {
  tostring(redis.call('ZCARD', P .. ':pending')),
  tostring(redis.call('ZCARD', P .. ':queue') + redis.call('ZCOUNT', P .. ':sched', '-inf', now)),
  tostring(redis.call('ZCOUNT', P .. ':leased', '(' .. now, '+inf')),
  tostring(redis.call('ZCARD', P .. ':processed')),
  tostring(redis.call('ZCARD', P .. ':dead')),
  tostring(redis.call('ZCARD', P .. ':corrupt')),
  oldest and string.format('%d', oldest) or '',
  string.format('%d', now),
}
