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

-- Settling, for a transaction that finished or deleted members of the batches `locked`: lock
-- their rows in id order, then — in a statement of its own, so (this function being volatile,
-- under READ COMMITTED) with a snapshot taken once every lock was granted — return those of
-- `ended` that have not finished and have no member left in a state of `unfinished` (the
-- caller's, from `JobState`). One round trip for both. Under a stricter isolation level the
-- second statement would see the transaction's first snapshot, and two transactions finishing
-- a batch's last members at once could each miss the other's: refused instead. Its statements
-- run on generic plans: left to choose, the plan cache estimates the arrays' generic plans
-- dearer than custom ones and plans them again at every call, five times the cost of the call.
CREATE FUNCTION kathikon.settle_batches(locked text[], ended text[], unfinished smallint[])
RETURNS SETOF text LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'Kathikon needs READ COMMITTED transactions, and this one is %: '
            'reset default_transaction_isolation for the database or role it connects as',
            current_setting('transaction_isolation');
    END IF;
    PERFORM 1 FROM kathikon.batches b WHERE b.id = ANY (locked) ORDER BY b.id
        FOR NO KEY UPDATE;
    RETURN QUERY
        SELECT b.id FROM kathikon.batches b
        WHERE b.id = ANY (ended) AND b.finished_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM kathikon.jobs j
                          WHERE j.batch_id = b.id AND j.state = ANY (unfinished))
        ORDER BY b.id;
END
$$;
