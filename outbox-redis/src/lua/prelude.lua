-- Shared by every script. KEYS[1] is the outbox's key prefix, "{outbox:<name>}": the hash tag keeps
-- every key of one outbox in one cluster slot. Times are server milliseconds (TIME).
local P = KEYS[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ev(id) return P .. ':ev:' .. id end
-- Makes a pending event that heads its ordering key reachable by claims: due now goes to the queue
-- (ordered by creation), later goes to the schedule (ordered by time). Returns true when due now.
local function schedule(id, now)
  local h = redis.call('HMGET', ev(id), 'seq', 'available_at', 'backoff_until')
  local due = tonumber(h[2])
  local backoff = tonumber(h[3])
  if backoff and backoff > due then due = backoff end
  if due <= now then
    redis.call('ZADD', P .. ':queue', tonumber(h[1]), id)
    redis.call('ZADD', P .. ':dueat', due, id)
    return true
  end
  redis.call('ZADD', P .. ':sched', due, id)
  return false
end
local function unschedule(id)
  redis.call('ZREM', P .. ':queue', id)
  redis.call('ZREM', P .. ':dueat', id)
  redis.call('ZREM', P .. ':sched', id)
  redis.call('ZREM', P .. ':leased', id)
end
local function is_head(id, okey)
  if okey == nil or okey == false or okey == '' then return true end
  return redis.call('ZRANGE', P .. ':okey:' .. okey, 0, 0)[1] == id
end
