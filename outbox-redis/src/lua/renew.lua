-- ARGV: id, token, extension ms. Returns the new expiry, or nil when the lease is lost.
local now = now_ms()
local id = ARGV[1]
local h = redis.call('HMGET', ev(id), 'lease_token', 'status')
if h[1] ~= ARGV[2] or h[2] ~= 'pending' then return false end
local locked_until = now + tonumber(ARGV[3])
redis.call('HSET', ev(id), 'locked_until', locked_until)
unschedule(id)
redis.call('ZADD', P .. ':sched', locked_until, id)
redis.call('ZADD', P .. ':leased', locked_until, id)
return locked_until
