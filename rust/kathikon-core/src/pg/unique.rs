//! Unique inserts ([`crate::UniqueSpec`]) on `PostgreSQL`: each key is a row of
//! `kathikon.entries` (kind [`EntryKind::Unique`], named by the key the core computes, valued
//! the holder's id, expiring with the holder's period), as in the embedded store.
//!
//! One transaction takes every key of the insert in key order: first it inserts a row for
//! each key none holds yet (`ON CONFLICT DO NOTHING`: an insert of the same key by another
//! transaction waits for that one's commit, then finds its row), then it locks them all
//! (`FOR UPDATE`, same order). So two inserts of one key run one after the other and the
//! second finds the first's job; inserts of overlapping keys take them in the same order and
//! never deadlock. Then, job by job in the order given, a held key returns its holder
//! (flagged, with the spec's replace applied through [`crate::unique::replaced`]), and a free
//! one gets the new job. Expired rows are deleted by the leader; one still there is harmless,
//! as the check compares the holder's own insert time with the period.

use std::collections::HashMap;

use postgres::{Client, Transaction};

use super::connection::Prepared;
use super::row::{code, pg_id};
use super::{batches, insert, listen, write};
use crate::batch;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, NewJob};
use crate::state::JobState;
use crate::storage::EntryKind;
use crate::unique::{replaced, Inserted, UniqueSpec};

/// The `kind` of a key's row.
fn kind() -> i16 {
    EntryKind::Unique as i16
}

/// Insert `jobs` at `now` for node `node`, all or none: a job whose key another job holds
/// comes back as that job, flagged in [`Inserted::conflicts`]; duplicates within `jobs`
/// resolve to the first. Batch members open their batches in the same transaction, last
/// ([`batches::open`]).
pub(crate) fn insert_flagged(
    client: &mut Client,
    prepared: &mut Prepared,
    jobs: Vec<NewJob>,
    now: Micros,
    node: i64,
) -> Result<Inserted> {
    let joined = batch::joined(&jobs)?;
    if jobs.iter().all(|j| j.unique.is_none()) {
        if joined.is_empty() {
            let jobs = insert::insert_prepared(client, prepared, jobs, now, node)?;
            return Ok(Inserted { jobs, conflicts: Vec::new() });
        }
        let mut tx = client.transaction()?;
        let jobs = insert::insert(&mut tx, jobs, now, node)?;
        batches::open(&mut tx, joined, now)?;
        tx.commit()?;
        return Ok(Inserted { jobs, conflicts: Vec::new() });
    }
    let mut keyed = Vec::with_capacity(jobs.len());
    for mut new in jobs {
        super::validate::validate(&new)?;
        let spec = new.unique.take();
        let key = match &spec {
            Some(spec) => {
                spec.validate()?;
                Some(spec.key(&new)?)
            }
            None => None,
        };
        keyed.push((new, spec.map(|spec| (*spec, key.unwrap_or_default()))));
    }
    let mut tx = client.transaction()?;
    let mut holders = take_keys(&mut tx, keyed.iter().filter_map(|(_, k)| k.as_ref()), now)?;
    let mut out = Inserted { jobs: Vec::with_capacity(keyed.len()), conflicts: Vec::new() };
    for (new, unique) in keyed {
        let Some((spec, key)) = unique else {
            out.jobs.extend(insert::insert(&mut tx, vec![new], now, node)?);
            continue;
        };
        let holder = match holders.get(&key) {
            Some(&Some(id)) => write::lock(&mut tx, &[id])?.remove(&id).map(|l| l.job),
            _ => None,
        };
        if let Some(old) = holder.filter(|job| spec.held_by(job, now)) {
            let job = replaced(&old, new, &spec, now)?;
            if job != old {
                store_replaced(&mut tx, &job)?;
            }
            out.conflicts.push(out.jobs.len() as u32);
            out.jobs.push(job);
        } else {
            let job = insert::insert(&mut tx, vec![new], now, node)?.remove(0);
            hold(&mut tx, &key, &job, &spec)?;
            holders.insert(key, Some(job.id));
            out.jobs.push(job);
        }
    }
    batches::open(&mut tx, joined, now)?;
    tx.commit()?;
    Ok(out)
}

/// Make sure a row exists for each of `keys` and lock them all, in key order; by key, the
/// job its row names (`None`: no holder yet, a value that names no job, or a row that expired
/// by `now` — the period of the insert that wrote it has passed).
fn take_keys<'a>(
    tx: &mut Transaction<'_>,
    keys: impl Iterator<Item = &'a (UniqueSpec, String)>,
    now: Micros,
) -> Result<HashMap<String, Option<JobId>>> {
    let mut names: Vec<&str> = keys.map(|(_, key)| key.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    tx.execute(
        "INSERT INTO kathikon.entries (kind, name, value)
         SELECT $1, k, ''::bytea FROM unnest($2::text[]) AS k ORDER BY k
         ON CONFLICT DO NOTHING",
        &[&kind(), &names],
    )?;
    let rows = tx.query(
        "SELECT name, value, expires_at FROM kathikon.entries WHERE kind = $1 AND name = ANY($2)
         ORDER BY name FOR UPDATE",
        &[&kind(), &names],
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let value: Vec<u8> = row.get(1);
            let expired = row.get::<_, Option<Micros>>(2).is_some_and(|at| at <= now);
            let holder = postcard::from_bytes::<JobId>(&value).ok().filter(|_| !expired);
            (row.get(0), holder)
        })
        .collect())
}

/// Point `key` at `job`, expiring after the spec's period.
fn hold(tx: &mut Transaction<'_>, key: &str, job: &Job, spec: &UniqueSpec) -> Result<()> {
    let value = postcard::to_allocvec(&job.id).map_err(|e| Error::Storage(e.to_string()))?;
    tx.execute(
        "UPDATE kathikon.entries SET value = $3, expires_at = $4 WHERE kind = $1 AND name = $2",
        &[&kind(), &key, &value, &spec.expiry(job)],
    )?;
    Ok(())
}

/// Write back the fields a replace may change (locked by [`write::lock`]); a job now
/// available wakes its queue's claims.
fn store_replaced(tx: &mut Transaction<'_>, job: &Job) -> Result<()> {
    let tags = serde_json::to_string(&job.tags).expect("tags always encode");
    tx.execute(
        "UPDATE kathikon.jobs SET state = $2, queue = $3, args = $4::text::json,
             meta = $5::text::json,
             tags = ARRAY(SELECT t FROM json_array_elements_text($6::text::json)
                          WITH ORDINALITY AS e(t, k) ORDER BY k),
             priority = $7, scheduled_at = $8, max_attempts = $9
         WHERE id = $1",
        &[
            &pg_id(job.id),
            &code(job.state),
            &job.queue,
            &job.args,
            &job.meta,
            &tags,
            &i16::from(job.priority),
            &job.scheduled_at,
            &i64::from(job.max_attempts),
        ],
    )?;
    if job.state == JobState::Available {
        listen::notify(tx, &[job.queue.as_str()])?;
    }
    Ok(())
}
