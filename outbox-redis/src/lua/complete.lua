-- ARGV: id, token, status, handler_results JSON, attempts, retry delay ms ('' = none).
-- Returns 1, or 0 when the lease is lost (nothing changed).
local now = now_ms()
local done = {}
local applied, woke, finished = complete_one(now, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], done)
finish_all(now, done)
if finished then redis.call('DECR', PENDING_COUNT) end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return applied
