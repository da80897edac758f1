-- ARGV: limit. Makes due events claimable (as a claim would), then returns the first `limit` of
-- the queue as flat id, due time pairs: a claim across partitions reads every partition's head
-- this way, then claims from each as many as belong to the oldest overall.
promote_due(now_ms())
return redis.call('ZRANGE', QUEUE, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
