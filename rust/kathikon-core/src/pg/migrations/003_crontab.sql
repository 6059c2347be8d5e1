-- Kathikon's PostgreSQL schema, version 3: the crontab each node declares, so the leader fires
-- the entries of every running node (a node that declares none — a web server that only
-- inserts — may lead all the same). A node's rows go with its node row: when it closes, or
-- when another node rescues it after its lease ran out.
--
-- `entry` is the core's `CronEntry` as JSON. When nodes declare one name differently (a
-- rolling deploy), the newest node's entry is fired. `declared_at` is when the node declared
-- it: an entry that never fired is due from then on, whenever the leader first reads it.
CREATE TABLE kathikon.crontab (
    node_id bigint NOT NULL REFERENCES kathikon.nodes (id) ON DELETE CASCADE,
    name text NOT NULL,
    entry json NOT NULL,
    declared_at bigint NOT NULL,
    PRIMARY KEY (node_id, name)
);
