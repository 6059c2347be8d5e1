-- Kathikon's PostgreSQL schema, version 1: jobs, nodes and entries, in the schema `kathikon`
-- (the application's own tables are never touched). Applied by `kathikon_core::pg::schema`
-- inside one transaction that holds the migration lock; `kathikon.meta` exists already.
--
-- Times are microseconds since the Unix epoch (bigint), on the clock of the store that wrote
-- them: the job-store contract's `Micros`, stored exactly over its whole range.
--
-- `state` is the job state's number in `JobState` (src/state.rs), which alone decides
-- transitions: 0 scheduled, 1 available, 2 executing, 3 retryable, 4 completed, 5 cancelled,
-- 6 discarded. The literals below appear only in index predicates and the finished-time
-- expression, which must be constants; queries take their states from `JobState`.

CREATE TABLE kathikon.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state smallint NOT NULL CHECK (state BETWEEN 0 AND 6),
    queue text NOT NULL CHECK (queue <> ''),
    worker text NOT NULL CHECK (worker <> ''),
    -- json, not jsonb: the contract returns args and meta exactly as inserted (key order,
    -- spacing, numbers). Filters cast to jsonb for `@>`.
    args json NOT NULL,
    meta json NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    attempt bigint NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts bigint NOT NULL CHECK (max_attempts >= 1),
    priority smallint NOT NULL CHECK (priority BETWEEN 0 AND 9),
    -- [{"at": µs, "attempt": n, "error": text}, ...], oldest first.
    errors json NOT NULL DEFAULT '[]',
    inserted_at bigint NOT NULL,
    scheduled_at bigint NOT NULL,
    attempted_at bigint,
    completed_at bigint,
    cancelled_at bigint,
    discarded_at bigint,
    -- When a terminal job finished: what pruning and the finished-time filter read.
    finished_at bigint GENERATED ALWAYS AS (
        CASE state WHEN 4 THEN completed_at WHEN 5 THEN cancelled_at WHEN 6 THEN discarded_at END
    ) STORED,
    -- The node that claimed the latest attempt: an ack is applied only while the job is still
    -- executing that attempt for that node (fencing).
    node_id bigint
);

-- Claiming: the available jobs of a queue in claim order.
CREATE INDEX jobs_claim ON kathikon.jobs (queue, priority, scheduled_at, id) WHERE state = 1;
-- Counts and listings of one queue and state, in id order.
CREATE INDEX jobs_queue_state ON kathikon.jobs (queue, state, id);
-- Promotion: scheduled and retryable jobs by due time.
CREATE INDEX jobs_waiting ON kathikon.jobs (scheduled_at) WHERE state IN (0, 3);
-- Pruning and the finished-time filter.
CREATE INDEX jobs_finished ON kathikon.jobs (finished_at) WHERE state IN (4, 5, 6);
-- Rescue: what each node holds.
CREATE INDEX jobs_held ON kathikon.jobs (node_id) WHERE state = 2;

-- The processes using the database: each registers a row when it opens the store, renews its
-- lease while it runs, and deletes the row when it closes.
CREATE TABLE kathikon.nodes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid integer NOT NULL,
    hostname text NOT NULL,
    started_at bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    lease_expires_at bigint NOT NULL
);

-- Named values of the store's features, as the embedded store's entries table keeps them
-- (`EntryKind`: 1 unique key, 2 cron slot, 3 queue settings, 4 metrics minute, 5 progress).
CREATE TABLE kathikon.entries (
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 5),
    name text NOT NULL,
    value bytea NOT NULL,
    expires_at bigint,
    PRIMARY KEY (kind, name)
);
CREATE INDEX entries_expiring ON kathikon.entries (expires_at) WHERE expires_at IS NOT NULL;
