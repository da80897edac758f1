-- ARGV: limit. Makes due events claimable (as a claim would), then returns the head of the queue
-- as its id and due time, followed by the due times of the next queued events up to `limit` in
-- all (nothing when the queue is empty). A claim across partitions reads every partition this
-- way: the heads tell which partition's run comes first, the due times how many of the oldest
-- events overall each partition holds.
promote_due(now_ms())
local entries = redis.call('ZRANGE', QUEUE, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #entries == 0 then return {} end
local out = { entries[1], entries[2] }
for i = 4, #entries, 2 do out[#out + 1] = entries[i] end
return out
