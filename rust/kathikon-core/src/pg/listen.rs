//! Wake-ups across nodes by `LISTEN/NOTIFY`. A transaction that makes jobs available —
//! insert, promotion, retry, rescue — sends `NOTIFY kathikon_jobs, '<queue>'` once per queue
//! ([`notify`]); `PostgreSQL` delivers it at commit, to every listening connection, and never
//! for a rolled-back transaction. Each node keeps one listening connection in a thread of
//! its own ([`Listener`]), which wakes the claims and `wait_ready` calls of this process
//! waiting on that queue.
//!
//! Notifications sent while the listener is not connected are lost, so while it is down
//! waiting claims fall back to polling every `poll_interval`, and when it is back every wait
//! looks again once. It reconnects with backoff (doubling up to [`MAX_BACKOFF`]).

use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;

use super::connection::Connections;
use super::wake::Wake;
use crate::error::Result;

/// The channel every node listens on. The payload is `<origin>:<queue>`: the origin is the
/// node whose insert notifies (that node woke its own waits already, so it skips the echo,
/// which would move its ready generation a second time for one change), or empty for every
/// other change. An origin has no `:`, so the first one ends it; queue names may hold any.
pub(crate) const CHANNEL: &str = "kathikon_jobs";

/// The origin part of the payload of node `node`'s inserts, with its `:`.
pub(crate) fn origin(node: i64) -> String {
    format!("{node}:")
}

/// The queue a payload names, unless it is the echo of node `this`'s own insert.
fn queue_of(payload: &str, this: i64) -> Option<&str> {
    let (origin, queue) = payload.split_once(':')?;
    (origin != this.to_string()).then_some(queue)
}

/// The longest wait between two attempts to connect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How often the listener looks whether its store closed (it cannot be woken otherwise).
const CHECK_CLOSED: Duration = Duration::from_millis(100);

/// In the transaction of `client`, notify the listeners of each of `queues` (duplicates are
/// sent once: `PostgreSQL` folds equal notifications of one transaction).
pub(crate) fn notify(client: &mut impl GenericClient, queues: &[&str]) -> Result<()> {
    if !queues.is_empty() {
        client.execute(
            "SELECT pg_notify('kathikon_jobs', ':' || q) FROM unnest($1::text[]) AS q",
            &[&queues],
        )?;
    }
    Ok(())
}

/// The listening thread of one node; it ends by itself within [`CHECK_CLOSED`] of the
/// store's close (not joined: it holds nothing of the store but the wake-ups).
pub(crate) struct Listener {
    /// The node listening.
    pub(crate) node: i64,
    pub(crate) connections: Connections,
    pub(crate) wake: Arc<Wake>,
    /// The waits for jobs to finish, woken by [`super::finished::CHANNEL`].
    pub(crate) finished: Arc<crate::finished::Finished>,
}

impl Listener {
    /// Start the thread.
    pub(crate) fn start(self) -> std::io::Result<()> {
        std::thread::Builder::new().name("kathikon-pg-listen".into()).spawn(move || self.run())?;
        Ok(())
    }

    fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        while !self.wake.is_closed() {
            let listening = self.connections.connect().and_then(|mut client| {
                client.batch_execute(&format!("LISTEN {}", super::finished::CHANNEL))?;
                client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                Ok(client)
            });
            let Ok(mut client) = listening else {
                self.pause(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            backoff = FIRST_BACKOFF;
            // Whatever was notified while no one listened is unknown: every wait looks again.
            self.wake.listening(true);
            self.finished.relook(false);
            while !self.wake.is_closed() {
                let next = client.notifications().timeout_iter(CHECK_CLOSED).next();
                match next {
                    Ok(Some(note)) if note.channel() == super::finished::CHANNEL => {
                        if let Ok(id) = note.payload().parse::<u64>() {
                            self.finished.ended(&[id]);
                        }
                    }
                    Ok(Some(note)) => {
                        if let Some(queue) = queue_of(note.payload(), self.node) {
                            self.wake.notified(queue);
                        }
                    }
                    Ok(None) if !client.is_closed() => {}
                    Ok(None) | Err(_) => break,
                }
            }
            self.wake.listening(false);
            self.finished.relook(true);
        }
    }

    /// Sleep `backoff`, ending early when the store closes.
    fn pause(&self, backoff: Duration) {
        let mut left = backoff;
        while !left.is_zero() && !self.wake.is_closed() {
            let step = left.min(CHECK_CLOSED);
            std::thread::sleep(step);
            left -= step;
        }
    }
}
