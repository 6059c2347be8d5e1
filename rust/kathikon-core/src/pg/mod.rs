//! The job store on `PostgreSQL` (in progress): [`PgStore`] implements the job-store contract
//! ([`crate::Jobs`]) on a database many machines share, so an app that outgrows one machine
//! keeps its code and points it at `PostgreSQL`. Its design is in `docs/architecture.md`
//! ("`PostgreSQL`"); one concept per module:
//!
//! - [`schema`]: the versioned `kathikon` schema and [`schema::migrate`];
//! - `connection`: connections reused across calls; `tls`: TLS with libpq's url parameters;
//! - `row`: a job as a row; `write`: changes through the core's state machine;
//! - `insert`, `claim`, `ack` (grouped across calls by `acks`), `change` (cancel, retry,
//!   prune), `bulk`, `reads` (get, counts, listing); `unique` (inserts of unique jobs, by key
//!   rows of `kathikon.entries`); `batches` (batches: members counted from their rows, each
//!   batch finished and its callbacks inserted by the transaction that finished its last
//!   member);
//! - `cron` (each node's declared crontab, fired by the leader, each slot once); `queues`
//!   (runtime settings; a pause exact across nodes); `limits` (global and rate limits,
//!   enforced in the claim);
//! - `nodes` (a process's node row, its lease, and its held jobs rescued at close), `rescue`
//!   (the jobs of nodes whose lease expired), `upkeep` (the thread that renews the lease and,
//!   on the `leader` node only, runs the periodic work), `claimers` (the queues each node
//!   claims from);
//! - `metrics` (each node's outcome counts, flushed into shared rows per queue and minute),
//!   `progress` (a running attempt's latest report), `processes` (every node, with its jobs);
//! - `rounds`: a node's claims of one queue combined into one transaction at a time;
//! - `listen` and `wake`: wake-ups by `LISTEN/NOTIFY`; `finished`: waits for a job to
//!   finish, registered in `kathikon.awaited` and woken by `NOTIFY kathikon_done`;
//! - `store`: [`PgStore`] and its [`crate::Jobs`] implementation, verb by verb.

mod ack;
mod acks;
mod batches;
mod bulk;
mod change;
mod claim;
mod claimers;
mod connection;
mod cron;
mod finished;
mod insert;
mod leader;
mod limits;
mod listen;
mod metrics;
mod nodes;
mod processes;
mod progress;
mod queues;
mod reads;
mod rescue;
mod rounds;
mod row;
pub mod schema;
mod store;
mod tls;
mod unique;
mod upkeep;
mod validate;
mod wake;
mod write;

pub use insert::{host_insert, InsertColumns};
pub use leader::LEADER_LOCK;
pub use store::{PgConfig, PgStore};
pub use validate::validate;
