-- ARGV: id, token, reason. Sets aside a claimed event that does not decode, fenced by its lease
-- token. Returns 1, or 0 when the lease is lost.
local now = now_ms()
local id = ARGV[1]
local h = redis.call('HMGET', ev(id), 'lease_token', 'status')
if h[1] ~= ARGV[2] or h[2] ~= 'pending' then return 0 end
if set_aside(id, ARGV[3], now) then redis.call('PUBLISH', P .. ':wake', '') end
return 1
