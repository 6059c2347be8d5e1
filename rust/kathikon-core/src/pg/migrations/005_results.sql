-- Kathikon's PostgreSQL schema, version 5: job results, and waiting for a job to finish.
--
-- `jobs.result`: what the worker returned, as JSON (exact text, as `args`), when it completed
-- with a value kept; null otherwise. It lives in the job's row, so it goes when the job is
-- pruned or deleted.
ALTER TABLE kathikon.jobs ADD COLUMN result json;

-- `awaited`: the jobs someone waits on to finish (`app.result`), one row per wait, `waiter`
-- a random number the waiting node chose. A transaction that writes a job in a terminal state
-- (or deletes one unfinished) sends `NOTIFY kathikon_done, '<id>'` for the ids found here
-- alone, so a job nobody awaits costs that transaction one probe of this (normally empty)
-- index. A node's rows go with its node row: when it closes, or when it is rescued.
CREATE TABLE kathikon.awaited (
    job_id bigint NOT NULL,
    node_id bigint NOT NULL REFERENCES kathikon.nodes (id) ON DELETE CASCADE,
    waiter bigint NOT NULL,
    PRIMARY KEY (job_id, node_id, waiter)
);
CREATE INDEX awaited_node ON kathikon.awaited (node_id);
