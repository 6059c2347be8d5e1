-- Kathikon's PostgreSQL schema, version 4: what queue limits need besides the jobs themselves
-- (a global limit counts the queue's executing jobs; see `src/pg/limits.rs`).
--
-- `rate_starts`: the job starts of rate-limited queues, one row per claim and rate partition
-- (`n` starts at `started_at`), so a sliding window survives restarts and is shared by every
-- node. `partition` is the partition's value as the core writes it (empty: the whole queue).
-- A claim deletes its queue's rows that left the window; the leader deletes rows older than
-- the longest period (a queue whose limit was removed).
CREATE TABLE kathikon.rate_starts (
    queue text NOT NULL,
    partition text NOT NULL,
    started_at bigint NOT NULL,
    n integer NOT NULL CHECK (n > 0)
);
CREATE INDEX rate_starts_window ON kathikon.rate_starts (queue, started_at);
CREATE INDEX rate_starts_age ON kathikon.rate_starts (started_at);

-- `limit_turns`: the partition (bucket: global and rate partition values) a limited queue's
-- last claim served last, so the next claim, on any node, starts its round-robin after it.
CREATE TABLE kathikon.limit_turns (
    queue text PRIMARY KEY,
    last_global text NOT NULL,
    last_rate text NOT NULL
);
