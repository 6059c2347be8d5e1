-- Kathikon's PostgreSQL schema, version 2: each node publishes the queues it claims from with
-- its heartbeat, so `claimers` lists every node's, not only the asking process's.
--
-- `claimers` is a JSON array of [queue, idle µs] pairs as of `heartbeat_at`; idle is null
-- while a claim waits on the queue.
ALTER TABLE kathikon.nodes ADD COLUMN claimers json NOT NULL DEFAULT '[]';
