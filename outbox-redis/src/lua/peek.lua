-- Makes due events claimable (as a claim would), then returns the queue's head as id, due time
-- (nothing when empty): a claim across partitions reads every partition's head this way, then
-- claims from the one whose head is oldest, up to the next partition's head.
promote_due(now_ms())
return redis.call('ZRANGE', QUEUE, 0, 0, 'WITHSCORES')
