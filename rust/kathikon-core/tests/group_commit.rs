//! Proves the group-commit writer handles many concurrent single inserts into one store file without losing or duplicating any, that an invalid job refuses its whole batch (naming it) while writing nothing of it, and that the writer's timer for due jobs follows the inserts and cancels applied around it.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{insert_one, job, open, store_path};
use kathikon_core::Jobs;
use kathikon_core::{Error, JobId, JobState, ListFilter, NewJob};

const THREADS: usize = 8;
const PER_THREAD: usize = 150;

#[test]
fn concurrent_single_inserts_are_all_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = Arc::new(open(&path));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut mine = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let new = NewJob {
                        args: format!(r#"{{"thread":{t},"i":{i}}}"#),
                        ..job(&format!("q{}", t % 3), "w")
                    };
                    let stored = insert_one(&*engine, new);
                    mine.push((stored.id, stored.args, stored.inserted_at));
                }
                mine
            })
        })
        .collect();
    let results: Vec<Vec<(JobId, String, i64)>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();

    let total = THREADS * PER_THREAD;
    let mut by_id: HashMap<JobId, String> = HashMap::new();
    let mut stamps = HashSet::new();
    for mine in &results {
        // One thread's inserts commit in the order it made them.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "ids of one thread not ascending");
        for (id, args, at) in mine {
            assert!(by_id.insert(*id, args.clone()).is_none(), "id {id} given out twice");
            stamps.insert(*at);
        }
    }
    assert_eq!(by_id.len(), total);
    // Ids are dense: 1..=total, none skipped or reused.
    assert_eq!(by_id.keys().copied().collect::<BTreeSet<_>>(), (1..=total as JobId).collect());
    // Jobs committed in one transaction share its timestamp; fewer distinct timestamps than
    // jobs shows that inserts from different threads were committed together.
    assert!(stamps.len() < total, "every insert had its own commit ({} commits)", stamps.len());

    let ready: usize = (0..3).map(|q| engine.ready_count(&format!("q{q}")).unwrap()).sum();
    assert_eq!(ready, total);
    Arc::into_inner(engine).expect("threads are done").close();

    let engine = open(&path);
    let stored = engine.list(&ListFilter::default()).unwrap();
    assert_eq!(stored.len(), total);
    for job in &stored {
        assert_eq!(by_id.get(&job.id), Some(&job.args), "job {} differs after reopen", job.id);
        assert_eq!(job.state, JobState::Available);
    }
    let ready: usize = (0..3).map(|q| engine.ready_count(&format!("q{q}")).unwrap()).sum();
    assert_eq!(ready, total);
}

#[test]
fn an_invalid_job_refuses_its_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let first = insert_one(&engine, job("q", "w"));

    let mut batch: Vec<NewJob> = (0..5).map(|i| job("q", &format!("w{i}"))).collect();
    batch[3].priority = 10;
    let err = engine.insert(batch).unwrap_err();
    let Error::InvalidJob(message) = &err else { panic!("expected InvalidJob, got {err:?}") };
    assert!(message.contains("job 3 of the batch"), "{message}");
    assert!(message.contains("priority 10"), "{message}");

    // Nothing of the batch was stored, none of it is claimable, and no id was used up.
    assert_eq!(engine.list(&ListFilter::default()).unwrap(), vec![first.clone()]);
    assert_eq!(engine.ready_count("q").unwrap(), 1);
    assert_eq!(insert_one(&engine, job("q", "w")).id, first.id + 1);

    // Other refusals name their job too; a lone job's message has no batch position.
    let mut batch = vec![job("q", "w"), job("q", "w")];
    batch[1].args = "{not json".into();
    let err = engine.insert(batch).unwrap_err().to_string();
    assert!(err.contains("job 1 of the batch") && err.contains("args is not valid JSON"), "{err}");
    let err = engine.insert(vec![NewJob { priority: 10, ..job("q", "w") }]).unwrap_err();
    assert!(matches!(&err, Error::InvalidJob(m) if m.starts_with("priority 10")), "{err:?}");
    assert!(engine.insert(Vec::new()).unwrap().is_empty());

    engine.close();
    let engine = open(&path);
    assert_eq!(engine.list(&ListFilter::default()).unwrap().len(), 2);
}

#[test]
fn a_refused_batch_does_not_disturb_batches_committed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(&store_path(&dir)));
    let start = Arc::new(Barrier::new(5));
    let good: Vec<_> = (0..4)
        .map(|_| {
            let (engine, start) = (engine.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut stored = 0;
                for _ in 0..100 {
                    stored +=
                        engine.insert(vec![job("good", "w"), job("good", "w")]).unwrap().len();
                }
                stored
            })
        })
        .collect();
    let bad = {
        let (engine, start) = (engine.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..100 {
                let batch = vec![job("bad", "w"), NewJob { max_attempts: 0, ..job("bad", "w") }];
                let err = engine.insert(batch).unwrap_err();
                assert!(err.to_string().contains("job 1 of the batch: max_attempts 0"), "{err}");
            }
        })
    };
    let inserted: usize = good.into_iter().map(|h| h.join().unwrap()).sum();
    bad.join().unwrap();
    assert_eq!(inserted, 800);
    let stored = engine.list(&ListFilter::default()).unwrap();
    assert_eq!(stored.len(), 800);
    assert!(stored.iter().all(|j| j.queue == "good"));
    assert_eq!(engine.ready_count("bad").unwrap(), 0);
    assert_eq!(stored.last().unwrap().id, 800, "a refused batch used up ids");
}

/// An engine whose writer sleeps until the next due job: its scheduler tick and pruning are an
/// hour apart.
fn open_idle(dir: &tempfile::TempDir) -> kathikon_core::Engine {
    kathikon_core::Engine::open(kathikon_core::EngineConfig {
        path: Some(store_path(dir)),
        scheduler_interval: std::time::Duration::from_secs(3600),
        prune_interval: std::time::Duration::from_secs(3600),
        ..kathikon_core::EngineConfig::default()
    })
    .unwrap()
}

/// An insert into an idle engine is applied by its caller's thread, not the writer's. When
/// it brings the next due time forward, the writer (asleep until its old due time, here an
/// hour away) must be woken, or the job would not be promoted on time.
#[test]
fn a_scheduled_insert_applied_by_its_caller_still_runs_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_idle(&dir);
    // Let the writer thread settle into its sleep, so the insert finds it idle.
    engine.sync().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let due = engine.clock().now() + 300_000; // 0.3 s ahead
    let started = std::time::Instant::now();
    let stored = insert_one(&engine, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    assert_eq!(stored.state, JobState::Scheduled);
    let claimed = engine.claim("q", 1, std::time::Duration::from_secs(5)).unwrap();
    let waited = started.elapsed();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![stored.id]);
    assert!(waited >= std::time::Duration::from_millis(250), "claimed before due: {waited:?}");
    assert!(waited < std::time::Duration::from_secs(2), "promoted late: {waited:?}");
    engine.close();
}

/// CPU time (user + system, in clock ticks) of this process's threads named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

/// The store remembers the earliest due time between batches. A job leaving the due index
/// (here cancelled) must make it forget it: otherwise the writer wakes at that time, finds
/// nothing due but the remembered time still past, and looks again and again without sleeping.
#[test]
fn a_cancelled_scheduled_job_leaves_the_writer_asleep() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_idle(&dir);
    let due = engine.clock().now() + 50_000; // 50 ms ahead
    let stored = insert_one(&engine, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    let (cancelled, _) = engine.cancel(stored.id).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let before = thread_cpu_ticks("kathikon-writer");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let used = thread_cpu_ticks("kathikon-writer") - before;
    // Clock ticks are 10 ms; a writer asleep uses none, a spinning one about 50.
    assert!(used < 10, "the writer used {used} ticks of CPU in 0.5 s with nothing to do");
    engine.close();
}
