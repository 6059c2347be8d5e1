//! Proves that a damaged store file never crashes the process: the file is truncated at many
//! offsets, has whole pages zeroed (a torn or lost write) and has random bits flipped, and
//! each damaged copy is opened and put through every call (list, counts, get, claim, ack,
//! insert, cancel, retry, prune, sync, close). Each attempt runs in this process; every call
//! must return a value or a typed error (`NotAStore`, `Corrupted` or `Storage`, naming the file
//! when the open refuses), no panic may escape (the engine turns redb's panics into
//! `Corrupted`), the writer thread must stay alive (no `Closed` before the close), and the path
//! must be free again afterwards.
//!
//! Each kind of damage is applied to two copies of one store: one closed cleanly, and one
//! copied while the engine still had it open (what a crash leaves: redb recovers it at the
//! next open, verifying every page's checksum, and the engine applies its write-ahead log,
//! copied intact beside it). What the tests then assert about content:
//!
//! - truncated, either copy: refused, or (when only unused space was cut) opened with exactly
//!   the jobs written — never fewer, never changed;
//! - zeroed pages or flipped bits in the crashed copy: refused, or opened with exactly the jobs
//!   written, or with the jobs as they were before the last commit (redb's recovery rolls a
//!   commit whose pages fail their checksums back to the one before; it cannot tell a torn
//!   commit in flight from a durable one damaged later);
//! - zeroed pages or flipped bits in the cleanly closed copy: no crash, and that is all. redb
//!   trusts a cleanly closed file and does not verify checksums on reads, so damage inside a
//!   record that still decodes (such as zeros in the middle of a long args string) goes
//!   unnoticed; the tests count these cases and print them.
//!
//! `KATHIKON_DAMAGE_CASES=N` sets the number of random flip cases per copy (default 40) and
//! `KATHIKON_DAMAGE_SEED=S` their seed (default: fixed, printed); `KATHIKON_DAMAGE_DEBUG=1`
//! prints every refusal.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use common::{config, job, scratch_dir};
use kathikon_core::clock::SECOND;
use kathikon_core::Jobs;
use kathikon_core::{Ack, Engine, Error, Job, ListFilter, NewJob, Outcome};

const PAGE: usize = 4096;

/// One store, as bytes, in the two conditions the tests damage, with what it holds.
struct Stores {
    /// Closed cleanly.
    clean: Vec<u8>,
    /// Copied while the engine had it open, after its last commit: a crash's leftovers.
    crashed: Vec<u8>,
    /// The write-ahead log beside it at that moment.
    crashed_log: Vec<u8>,
    /// Its jobs.
    written: Vec<Job>,
    /// Its jobs before the last commit (which cancels job 2).
    before_last: Vec<Job>,
}

/// A store with jobs in every state, several queues, errors and one big record.
fn healthy_store(dir: &Path) -> Stores {
    let path = dir.join("healthy.redb");
    let engine = Engine::open(config(&path)).unwrap();
    let mut batch = Vec::new();
    for i in 0..40 {
        let mut j = job(["a", "b", "c"][i % 3], "w");
        j.args = format!("{{\"i\":{i},\"text\":\"{}\"}}", "é".repeat(i * 10));
        if i % 7 == 0 {
            j.scheduled_at = Some(i64::MAX / 4);
        }
        batch.push(j);
    }
    batch.push(NewJob { args: format!("\"{}\"", "z".repeat(30_000)), ..job("big", "w") });
    engine.insert(batch).unwrap();
    let claimed = engine.claim("a", 6, Duration::ZERO).unwrap();
    let outcomes = [
        Outcome::Complete,
        Outcome::Fail { error: "boom".into(), retry_in: Some(3600 * SECOND) },
        Outcome::Snooze { delay: 3600 * SECOND },
        Outcome::Cancel { reason: "no".into() },
        Outcome::Discard { reason: "bad".into() },
        Outcome::Complete,
    ];
    let acks = claimed
        .iter()
        .zip(outcomes)
        .map(|(j, outcome)| Ack { id: j.id, attempt: j.attempt, outcome })
        .collect();
    engine.ack(acks).unwrap();
    // Into the store file itself, so the crashed copy has its jobs in redb's pages (what the
    // damage hits) and only the last commit in its write-ahead log.
    engine.checkpoint().unwrap();
    let before_last = engine.list(&ListFilter::default()).unwrap();
    engine.cancel(2).unwrap();
    let written = engine.list(&ListFilter::default()).unwrap();
    let crashed = std::fs::read(&path).unwrap();
    let crashed_log = std::fs::read(log_of(&path)).unwrap();
    engine.close();
    let clean = std::fs::read(&path).unwrap();
    assert!(!log_of(&path).exists(), "a clean close leaves no write-ahead log");
    std::fs::remove_file(&path).unwrap();
    Stores { clean, crashed, crashed_log, written, before_last }
}

/// The write-ahead log beside the store at `path`.
fn log_of(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// What a damaged store listed, compared with what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// Exactly the jobs written.
    Intact,
    /// Exactly the jobs before the last commit: recovery rolled that commit back.
    RolledBack,
    /// Exactly the jobs written, less some whose damaged records were moved to the quarantine
    /// table (and reported there): detected, not silent.
    Quarantined,
    /// Anything else.
    Altered,
}

/// How one damaged file fared.
#[derive(Debug, Default)]
struct Fate {
    /// The open's refusal, by kind.
    refused: Option<&'static str>,
    /// What `list` returned, when it worked.
    listed: Option<Listed>,
    /// Typed errors returned by calls after a successful open, by kind.
    call_errors: BTreeMap<&'static str, u32>,
}

fn kind(err: &Error) -> &'static str {
    match err {
        Error::NotAStore { .. } => "NotAStore",
        Error::Corrupted { .. } => "Corrupted",
        Error::Storage(_) | Error::CommitFailed { .. } | Error::WriterStopped { .. } => "Storage",
        Error::FormatTooNew { .. } => "FormatTooNew",
        Error::StorageLocked { .. } => "StorageLocked",
        Error::Closed => "Closed",
        Error::InvalidJob(_) => "InvalidJob",
        Error::JobNotFound(_) => "JobNotFound",
        Error::IllegalTransition { .. } => "IllegalTransition",
        _ => "other",
    }
}

/// Open the file at `path` and make every call once; panics (caught by the caller) and
/// unexpected errors fail the test with `label`.
fn exercise(path: &Path, stores: &Stores, label: &str) -> Fate {
    let mut fate = Fate::default();
    let engine = match Engine::open(config(path)) {
        Ok(engine) => engine,
        Err(err) => {
            let k = kind(&err);
            assert!(
                matches!(k, "NotAStore" | "Corrupted" | "Storage" | "FormatTooNew"),
                "{label}: open refused with {err:?}"
            );
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{label}: the error does not name the file: {err}"
            );
            if std::env::var_os("KATHIKON_DAMAGE_DEBUG").is_some() {
                eprintln!("{label}: refused: {err}");
            }
            fate.refused = Some(k);
            return fate;
        }
    };
    let mut note = |r: Result<(), Error>, what: &str| {
        if let Err(err) = r {
            let k = kind(&err);
            assert!(
                matches!(
                    k,
                    "Corrupted" | "Storage" | "JobNotFound" | "IllegalTransition" | "InvalidJob"
                ),
                "{label}: {what} gave {err:?}"
            );
            *fate.call_errors.entry(k).or_default() += 1;
        }
    };
    match engine.list(&ListFilter::default()) {
        Ok(jobs) => {
            let aside: Vec<u64> =
                engine.quarantined().map(|q| q.iter().map(|q| q.id).collect()).unwrap_or_default();
            let unquarantined: Vec<Job> =
                stores.written.iter().filter(|j| !aside.contains(&j.id)).cloned().collect();
            fate.listed = Some(if jobs == stores.written {
                Listed::Intact
            } else if jobs == stores.before_last {
                Listed::RolledBack
            } else if !aside.is_empty() && jobs == unquarantined {
                Listed::Quarantined
            } else {
                Listed::Altered
            });
        }
        Err(err) => note(Err(err), "list"),
    }
    note(engine.counts().map(drop), "counts");
    for id in [1, 2, 7, 20, 41, 42, 1000] {
        note(engine.get(id).map(drop), "get");
    }
    for queue in ["a", "b", "c", "big"] {
        note(engine.oldest_available(queue).map(drop), "oldest_available");
        match engine.claim(queue, 3, Duration::ZERO) {
            Ok(claimed) => {
                let acks = claimed
                    .iter()
                    .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
                    .collect();
                note(engine.ack(acks).map(drop), "ack");
            }
            Err(err) => note(Err(err), "claim"),
        }
    }
    note(engine.insert(vec![job("a", "w")]).map(drop), "insert");
    note(engine.cancel(5).map(drop), "cancel");
    note(engine.retry(1).map(drop), "retry");
    note(engine.prune(Duration::ZERO).map(drop), "prune");
    note(engine.sync(), "sync");
    engine.close();
    fate
}

/// Run [`exercise`] on `bytes` written to a fresh file; no panic may escape, and the path is
/// free again afterwards.
fn attempt(dir: &Path, (bytes, log): (&[u8], &[u8]), stores: &Stores, label: &str) -> Fate {
    let path = dir.join("damaged.redb");
    std::fs::write(&path, bytes).unwrap();
    if log.is_empty() {
        let _ = std::fs::remove_file(log_of(&path));
    } else {
        std::fs::write(log_of(&path), log).unwrap();
    }
    let fate =
        catch_unwind(AssertUnwindSafe(|| exercise(&path, stores, label))).unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
                .unwrap_or_default();
            panic!("{label}: a panic escaped: {text}")
        });
    if let Err(err) = Engine::open(config(&path)) {
        assert!(!matches!(err, Error::StorageLocked { .. }), "{label}: the path stayed held");
    }
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(log_of(&path));
    fate
}

#[derive(Debug, Default)]
struct Summary {
    cases: u32,
    refused: BTreeMap<&'static str, u32>,
    opened_intact: u32,
    opened_rolled_back: u32,
    opened_quarantined: u32,
    opened_altered: u32,
    opened_unlistable: u32,
    call_errors: BTreeMap<&'static str, u32>,
}

impl Summary {
    fn add(&mut self, fate: &Fate) {
        self.cases += 1;
        if let Some(k) = fate.refused {
            *self.refused.entry(k).or_default() += 1;
        }
        match fate.listed {
            Some(Listed::Intact) => self.opened_intact += 1,
            Some(Listed::RolledBack) => self.opened_rolled_back += 1,
            Some(Listed::Quarantined) => self.opened_quarantined += 1,
            Some(Listed::Altered) => self.opened_altered += 1,
            None if fate.refused.is_none() => self.opened_unlistable += 1,
            None => {}
        }
        for (k, n) in &fate.call_errors {
            *self.call_errors.entry(k).or_default() += n;
        }
    }
}

/// No silent change: damage is refused at the open, or its records quarantined, or (only in
/// the crashed copy, whose newest commit a crash may have torn) the newest commit rolled back.
fn assert_detected(copy: &str, fate: &Fate, label: &str) {
    assert_ne!(fate.listed, Some(Listed::Altered), "{label}: content changed silently: {fate:?}");
    if copy == "clean" {
        assert_ne!(
            fate.listed,
            Some(Listed::RolledBack),
            "{label}: an acknowledged commit was silently rolled back: {fate:?}"
        );
    }
}

/// The two copies of `stores`, with their names and logs (empty: none).
fn copies(stores: &Stores) -> [(&'static str, &[u8], &[u8]); 2] {
    [("clean", &stores.clean, &[]), ("crashed", &stores.crashed, &stores.crashed_log)]
}

#[test]
fn a_truncated_file_is_refused_or_opens_intact_never_a_crash() {
    let dir = scratch_dir();
    let stores = healthy_store(dir.path());
    for (copy, bytes, log) in copies(&stores) {
        let len = bytes.len();
        let mut cuts: Vec<usize> = vec![1, 8, 9, 10, 16, 64, 100, 511, 512, 513, 1024];
        for page in (PAGE..len).step_by(PAGE.max(len / 12 / PAGE * PAGE)) {
            cuts.extend([page - 1, page, page + 1]);
        }
        cuts.extend([len / 2 + 3, len - PAGE, len - 1]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut summary = Summary::default();
        for cut in cuts.into_iter().filter(|&c| c < len) {
            let label = format!("{copy} copy cut at {cut} of {len}");
            let fate = attempt(dir.path(), (&bytes[..cut], log), &stores, &label);
            assert!(
                matches!(fate.listed, None | Some(Listed::Intact)),
                "{label}: jobs lost or changed silently: {fate:?}"
            );
            summary.add(&fate);
        }
        eprintln!("truncations of the {copy} {len}-byte store: {summary:?}");
        assert!(summary.refused.values().sum::<u32>() > 0);
    }
}

#[test]
fn a_zeroed_page_is_refused_or_recovered_never_a_crash() {
    let dir = scratch_dir();
    let stores = healthy_store(dir.path());
    for (copy, bytes, log) in copies(&stores) {
        let pages = bytes.len() / PAGE;
        let mut summary = Summary::default();
        for page in 0..pages {
            let mut torn = bytes.to_vec();
            torn[page * PAGE..(page + 1) * PAGE].fill(0);
            if torn == bytes {
                continue; // already zero: nothing damaged
            }
            let label = format!("{copy} copy, page {page} zeroed");
            let fate = attempt(dir.path(), (&torn, log), &stores, &label);
            assert_detected(copy, &fate, &label);
            summary.add(&fate);
        }
        eprintln!("zeroed pages of the {copy} {pages}-page store: {summary:?}");
    }
}

/// splitmix64: a small, seedable generator, enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bit_flips_never_crash() {
    let cases: Option<u32> =
        std::env::var("KATHIKON_DAMAGE_CASES").ok().and_then(|v| v.parse().ok());
    let cases = cases.unwrap_or(40);
    let seed: u64 = std::env::var("KATHIKON_DAMAGE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6B61_7468_696B_6F6E);
    let dir = scratch_dir();
    let stores = healthy_store(dir.path());
    for (copy, bytes, log) in copies(&stores) {
        let mut rng = Rng(seed);
        let mut summary = Summary::default();
        for case in 0..cases {
            let mut damaged = bytes.to_vec();
            let flips = 1 + rng.below(8);
            let mut at = Vec::new();
            for _ in 0..flips {
                // Half the flips land in the first pages (header and tree roots), where they
                // matter most; the rest anywhere.
                let whole = rng.below(2) == 0;
                let limit = if whole { bytes.len() } else { (4 * PAGE).min(bytes.len()) };
                let offset = rng.below(limit);
                damaged[offset] ^= 1 << rng.below(8);
                at.push(offset);
            }
            let label = format!("{copy} copy, seed {seed} case {case}: bits flipped at {at:?}");
            let fate = attempt(dir.path(), (&damaged, log), &stores, &label);
            assert_detected(copy, &fate, &label);
            summary.add(&fate);
        }
        eprintln!("random flips in the {copy} store (seed {seed}): {summary:?}");
    }
}
