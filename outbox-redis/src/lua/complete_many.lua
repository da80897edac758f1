-- ARGV: groups of six: id, token, status, handler_results JSON, attempts, retry delay ms ('' =
-- none). Returns one 1/0 per group, in order (0: that lease is lost and nothing changed for it);
-- each is fenced by its own token. One event is a group of one.
local now = now_ms()
local out = {}
local woke = false
local finished = 0
local by_status = {}
for i = 1, #ARGV, 6 do
  local applied, w, done = complete_one(now, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], by_status)
  out[#out + 1] = applied
  woke = woke or w
  if done then finished = finished + 1 end
end
finish_all(now, by_status)
if finished > 0 then redis.call('DECRBY', PENDING_COUNT, finished) end
if woke then redis.call('PUBLISH', P .. ':wake', '') end
return out
