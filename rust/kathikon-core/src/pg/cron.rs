//! Cron on `PostgreSQL`: every node stores the crontab it declares in `kathikon.crontab`
//! ([`Cron::declare`]), and the leader fires the entries of all running nodes at each tick
//! ([`Cron::step`]), the newest node's entry where two declare one name differently.
//!
//! A slot fires once however leadership moves: each firing is one transaction that locks the
//! entry's stored last slot (its [`EntryKind::Cron`] row of `kathikon.entries`), fires only
//! the slots after it, inserts their jobs and stores the newest as the last, so a second
//! firer — a leader that lost its connection and does not know it yet, a node's `sync` —
//! waits for the first's commit and then finds nothing left to fire. Which slots fire, and
//! the jobs they insert, is decided by the core's `cron::firing`, as in the embedded store.
//!
//! An entry that never fired is armed from when its node declared it, not from when the
//! leader first reads it, so a slot between the two is not lost.
//!
//! `@reboot` fires once per start of the cluster: when armed, it fires unless its stored slot
//! is at or after the start of the oldest node alive (a node that started since it last fired
//! is not a new boot while older ones still run).

use postgres::{Client, Transaction};

use super::insert;
use crate::clock::Micros;
use crate::cron::firing::{self, Firing};
use crate::cron::{CronEntry, CronSlot, Schedule};
use crate::error::Result;
use crate::job::NewJob;
use crate::storage::EntryKind;

/// The `kind` of a stored last slot's row.
fn kind() -> i16 {
    EntryKind::Cron as i16
}

/// An entry being fired by this node: its slots up to `cursor` are dealt with, `next` comes
/// next.
struct Armed {
    /// The entry's JSON as stored, to tell a changed entry.
    text: String,
    entry: CronEntry,
    schedule: Schedule,
    cursor: Micros,
    next: Option<Micros>,
}

/// A node's side of cron: the crontab it declared, and the entries it fires while it leads.
#[derive(Default)]
pub(crate) struct Cron {
    /// This node's crontab as last declared, to store again should its node row be
    /// registered again ([`super::nodes::renew`]).
    declared: Vec<CronEntry>,
    armed: Vec<Armed>,
}

impl Cron {
    /// Replace node `node`'s crontab with `entries`, checked first: a bad entry or two of one
    /// name is [`crate::Error::InvalidJob`], changing nothing.
    pub(crate) fn declare(
        &mut self,
        client: &mut Client,
        node: i64,
        entries: Vec<CronEntry>,
        now: Micros,
    ) -> Result<()> {
        let entries: Vec<CronEntry> =
            crate::cron::compile(entries)?.into_iter().map(|(entry, _)| entry).collect();
        publish(client, node, &entries, now)?;
        self.declared = entries;
        Ok(())
    }

    /// Store this node's crontab again at `now` (its node row was registered again).
    pub(crate) fn republish(&self, client: &mut Client, node: i64, now: Micros) -> Result<()> {
        publish(client, node, &self.declared, now)
    }

    /// Fire at `now`: arm the entries new or changed since the last step (firing what
    /// [`firing::arm`] says), then fire every armed entry whose next slot has come.
    pub(crate) fn step(&mut self, client: &mut Client, node: i64, now: Micros) -> Result<()> {
        let rows = client.query(
            "SELECT DISTINCT ON (name) name, entry::text, declared_at FROM kathikon.crontab
             ORDER BY name, node_id DESC",
            &[],
        )?;
        let mut old = std::mem::take(&mut self.armed);
        for row in rows {
            let (name, text): (String, String) = (row.get(0), row.get(1));
            let kept = old.iter().position(|a| a.entry.name == name).map(|i| old.swap_remove(i));
            let kept = match kept {
                Some(same) if same.text == text => {
                    self.armed.push(same);
                    continue;
                }
                other => other,
            };
            // Checked by the node that declared it; an entry another version wrote that this
            // one cannot read is left to the nodes that can.
            let Ok(entry) = serde_json::from_str::<CronEntry>(&text) else { continue };
            let Ok(schedule) = entry.schedule() else { continue };
            let cursor = match kept.filter(|a| a.entry.same_slots(&entry)) {
                Some(a) => a.cursor,
                None => arm(client, &entry, &schedule, now, row.get(2), node)?,
            };
            let next = schedule.next_after(cursor);
            self.armed.push(Armed { text, entry, schedule, cursor, next });
        }
        for a in self.armed.iter_mut().filter(|a| a.next.is_some_and(|next| next <= now)) {
            fire(client, a, now, node)?;
            a.cursor = now;
            a.next = a.schedule.next_after(now);
        }
        Ok(())
    }
}

/// The last slot each entry fired, by name.
pub(crate) fn slots(client: &mut Client) -> Result<Vec<CronSlot>> {
    let rows = client.query(
        "SELECT name, value FROM kathikon.entries WHERE kind = $1 ORDER BY name",
        &[&kind()],
    )?;
    Ok(rows.iter().filter_map(|row| CronSlot::decode(row.get(0), row.get::<_, &[u8]>(1))).collect())
}

/// Replace node `node`'s rows of `kathikon.crontab` with `entries`, in one transaction.
fn publish(client: &mut Client, node: i64, entries: &[CronEntry], now: Micros) -> Result<()> {
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let texts: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).expect("cron entries always encode"))
        .collect();
    let mut tx = client.transaction()?;
    tx.execute("DELETE FROM kathikon.crontab WHERE node_id = $1", &[&node])?;
    tx.execute(
        "INSERT INTO kathikon.crontab (node_id, name, entry, declared_at)
         SELECT $1, n, e::json, $4 FROM unnest($2::text[], $3::text[]) AS u(n, e)",
        &[&node, &names, &texts, &now],
    )?;
    tx.commit()?;
    Ok(())
}

/// Arm `entry`, declared at `declared`, at `now`; returns its cursor. What arming fires is
/// committed with the entry's new last slot.
fn arm(
    client: &mut Client,
    entry: &CronEntry,
    schedule: &Schedule,
    now: Micros,
    declared: Micros,
    node: i64,
) -> Result<Micros> {
    let mut tx = client.transaction()?;
    let stored = lock_slot(&mut tx, &entry.name)?;
    if schedule.is_reboot() {
        let boot: Option<Micros> = tx
            .query_one(
                "SELECT min(started_at) FROM kathikon.nodes WHERE lease_expires_at > $1",
                &[&now],
            )?
            .get(0);
        let since_boot = stored.as_ref().is_some_and(|s| {
            s.expression == entry.expression && boot.is_some_and(|boot| s.slot >= boot)
        });
        if since_boot {
            return Ok(now);
        }
    }
    let fired_before = stored
        .as_ref()
        .is_some_and(|s| s.expression == entry.expression && s.timezone == entry.timezone);
    let (cursor, firing) = firing::arm(entry, schedule, stored, now);
    if let Some(firing) = firing {
        write(&mut tx, firing, now, node)?;
        tx.commit()?;
    }
    if fired_before || schedule.is_reboot() {
        return Ok(cursor);
    }
    // Never fired: its slots since its declaration are due, as for a firer that was running.
    Ok(cursor.min(declared))
}

/// Fire `armed`'s slots up to `now` that neither it nor another firer dealt with.
fn fire(client: &mut Client, armed: &Armed, now: Micros, node: i64) -> Result<()> {
    let mut tx = client.transaction()?;
    let stored = lock_slot(&mut tx, &armed.entry.name)?
        .filter(|s| s.expression == armed.entry.expression && s.timezone == armed.entry.timezone);
    let after = stored.map_or(armed.cursor, |s| s.slot.max(armed.cursor));
    if let Some(firing) = firing::slots(&armed.entry, &armed.schedule, after, now, true) {
        write(&mut tx, firing, now, node)?;
        tx.commit()?;
    }
    Ok(())
}

/// Lock entry `name`'s stored last slot until the transaction ends (its row made first if
/// there is none: a concurrent firer's insert waits for this one's end); the slot, if the
/// row holds one. Rolling back removes a row made here.
fn lock_slot(tx: &mut Transaction<'_>, name: &str) -> Result<Option<CronSlot>> {
    tx.execute(
        "INSERT INTO kathikon.entries (kind, name, value) VALUES ($1, $2, ''::bytea)
         ON CONFLICT DO NOTHING",
        &[&kind(), &name],
    )?;
    let row = tx.query_one(
        "SELECT value FROM kathikon.entries WHERE kind = $1 AND name = $2 FOR UPDATE",
        &[&kind(), &name],
    )?;
    Ok(CronSlot::decode(name, row.get::<_, &[u8]>(0)))
}

/// Insert `firing`'s jobs and store its slot as the entry's last (its row locked by
/// [`lock_slot`]). A cron job is never a unique insert: its slot is its key.
fn write(tx: &mut Transaction<'_>, firing: Firing, now: Micros, node: i64) -> Result<()> {
    let jobs = firing.jobs.into_iter().map(|(_, new)| NewJob { unique: None, ..new }).collect();
    insert::insert(tx, jobs, now, node)?;
    tx.execute(
        "UPDATE kathikon.entries SET value = $3 WHERE kind = $1 AND name = $2",
        &[&kind(), &firing.last.name, &firing.last.encode()],
    )?;
    Ok(())
}
