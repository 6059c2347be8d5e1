-- Kathikon's PostgreSQL schema, version 6: batches (`src/pg/batches.rs`).
--
-- `jobs.batch_id`: the batch a job is a member of (null: none). A member's state is its row's,
-- so a batch's count of members per state is the count of its rows per state, read through
-- `jobs_batch` (which holds members only: a job of no batch is never entered in it).
ALTER TABLE kathikon.jobs ADD COLUMN batch_id text;
CREATE INDEX jobs_batch ON kathikon.jobs (batch_id, state) WHERE batch_id IS NOT NULL;

-- `batches`: one row per batch, made by the insert that first names its id.
--
-- `kept_<state>`: members deleted (pruned) after they finished in that terminal state, which
-- stay counted; a member deleted unfinished leaves the batch. `templates` is the core's
-- `Callbacks` (each event's callback job) as JSON; `callbacks` its `Callback` list, each with
-- the id of the job inserted for it once the batch finished. `finished_at` is set, and the
-- callbacks inserted, by the transaction that finished the last unfinished member, under this
-- row's lock; a finished batch takes no more members.
CREATE TABLE kathikon.batches (
    id text PRIMARY KEY,
    created_at bigint NOT NULL,
    finished_at bigint,
    kept_completed bigint NOT NULL DEFAULT 0,
    kept_cancelled bigint NOT NULL DEFAULT 0,
    kept_discarded bigint NOT NULL DEFAULT 0,
    templates json NOT NULL,
    callbacks json NOT NULL
);
