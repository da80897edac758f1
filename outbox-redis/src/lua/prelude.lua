-- Shared by every script. KEYS[1] is the key prefix of one partition of the outbox,
-- "{outbox:<name>}" or "{outbox:<name>:<p>}": the hash tag keeps every key of a partition in one
-- cluster slot, and a script touches one partition only. Times are server milliseconds (TIME).
local P = KEYS[1]
-- The keys every script uses, built once per call.
local QUEUE, SCHED, LEASED = P .. ':queue', P .. ':sched', P .. ':leased'
local PENDING_COUNT = P .. ':pending_count'
local EV = P .. ':ev:'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ev(id) return EV .. id end
-- A number's decimal text, formatted once per value and call. Scripts hand redis.call strings,
-- never Lua numbers: the server formats each number argument with printf('%.17g'), which took
-- about 8 % of its CPU in a drain.
local decimal = {}
local function str(n)
  local s = decimal[n]
  if not s then
    s = string.format('%d', n)
    decimal[n] = s
  end
  return s
end
-- Whatever became due (schedule reached, back-off over, lease expired) joins the queue at the time it
-- became due (at most 1,000 of each per call).
local function promote_due(now)
  for _, from in ipairs({ SCHED, LEASED }) do
    local ready = redis.call('ZRANGEBYSCORE', from, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
    for i = 1, #ready, 2 do
      redis.call('ZREM', from, ready[i])
      redis.call('ZADD', QUEUE, ready[i + 1], ready[i])
    end
  end
end
-- Makes a pending event that heads its ordering key reachable by claims: due now goes to the queue,
-- later goes to the schedule; both are scored by the due time, so claims take due order, and equal
-- times fall back to the ids' order (UUID v7: creation order). Returns true when due now.
local function schedule(id, now)
  local h = redis.call('HMGET', ev(id), 'available_at', 'backoff_until')
  local due = tonumber(h[1])
  local backoff = tonumber(h[2])
  if backoff and backoff > due then due = backoff end
  if due <= now then
    redis.call('ZADD', QUEUE, str(due), id)
    return true
  end
  redis.call('ZADD', SCHED, str(due), id)
  return false
end
-- Takes an event out of every claim structure: the queue (due now), the schedule (due later, not
-- leased) and the leases (leased, by expiry).
local function unschedule(id)
  redis.call('ZREM', QUEUE, id)
  redis.call('ZREM', SCHED, id)
  redis.call('ZREM', LEASED, id)
end
local function is_head(id, okey)
  if okey == nil or okey == false or okey == '' then return true end
  return redis.call('ZRANGE', P .. ':okey:' .. okey, 0, 0)[1] == id
end
-- An event of `okey` finished (processed, dead, set aside): its key's next event becomes reachable.
-- Returns true when that one is due now.
local function hand_off_key(id, okey, now)
  if not okey or okey == '' then return false end
  redis.call('ZREM', P .. ':okey:' .. okey, id)
  local next_id = redis.call('ZRANGE', P .. ':okey:' .. okey, 0, 0)[1]
  if next_id and redis.call('ZSCORE', LEASED, next_id) == false then
    return schedule(next_id, now)
  end
  return false
end
-- Sets a pending event aside because it does not decode (contract C11): status 'corrupt' with the
-- reason; its ordering key passes to the next event. Returns true when that one is due now.
local function set_aside(id, reason, now)
  local okey = redis.call('HGET', ev(id), 'ordering_key')
  redis.call('HSET', ev(id), 'status', 'corrupt', 'corrupt_reason', reason, 'processed_at', str(now),
    'lease_token', '', 'locked_by', '', 'locked_until', '')
  unschedule(id)
  redis.call('DECR', PENDING_COUNT)
  redis.call('ZADD', P .. ':corrupt', str(now), id)
  return hand_off_key(id, okey, now)
end
-- Removes `ids` from the sorted set `key` in calls of at most 1,000 members (Lua's stack bounds
-- `unpack`). Returns how many were removed.
local function zrem_all(key, ids)
  local removed = 0
  for i = 1, #ids, 1000 do
    removed = removed + redis.call('ZREM', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
  return removed
end
-- Adds `ids` to the sorted set `key`, each with `score`, in calls of at most 1,000 members.
local function zadd_all(key, score, ids)
  score = str(score)
  for i = 1, #ids, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #ids) do
      args[#args + 1] = score
      args[#args + 1] = ids[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end
