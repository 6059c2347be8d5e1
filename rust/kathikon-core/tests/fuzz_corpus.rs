//! The fuzzing that CI can do on stable (cargo-fuzz needs nightly): every file of the committed
//! corpus (`fuzz/corpus/<target>/`) is fed to the same entry points the libFuzzer targets use
//! (`kathikon_core::fuzzing`), and then a short seeded random search mutates the corpus (bit
//! flips, byte overwrites, cuts, splices, inserted runs) and feeds the mutants the same way, for
//! a fixed time. An entry point panics when the engine breaks a promise (a panic escaping, an
//! untyped error, a decoded record that does not round-trip), which fails the test with the
//! input saved under `target/fuzz-failures/` so it can be added to the corpus.
//!
//! `KATHIKON_FUZZ_SECONDS` sets the random run's time per target (default 3 s each, so about
//! 6 s in all) and `KATHIKON_FUZZ_SEED` its seed (default: fixed, printed).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kathikon_core::fuzzing::{decode_record_target, store_file_target};
use kathikon_core::Jobs;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Run `f` on `input`; a panic fails the test, with the input saved for replay.
fn run(target: &str, label: &str, input: &[u8], f: &dyn Fn(&[u8])) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
            .unwrap_or_default();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let saved = dir.join(format!("{target}-{}", label.replace(['/', ' '], "_")));
        std::fs::write(&saved, input).unwrap();
        panic!("{target}: {label} broke a promise: {text} (input saved at {})", saved.display());
    }
}

/// splitmix64: small, seedable, enough to pick mutations.
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
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutant of one corpus input (or of two, spliced). Most mutations are small, since a store
/// file that is mostly garbage is refused at its header and teaches nothing.
fn mutate(rng: &mut Rng, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(6) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
            3 if len > 0 => data.truncate(rng.below(len)),
            4 => {
                let other = &seeds[rng.below(seeds.len())].1;
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from.min(other.len())).min(4096);
                data.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => {
                let at = rng.below(len + 1);
                let run = vec![rng.below(256) as u8; 1 + rng.below(16)];
                data.splice(at..at, run);
            }
        }
    }
    data
}

fn seconds() -> Duration {
    let s: f64 =
        std::env::var("KATHIKON_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn seed() -> u64 {
    std::env::var("KATHIKON_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6675_7a7a)
}

/// Replay the corpus, then mutate it for `seconds()`; returns the number of random inputs.
fn fuzz(target: &str, f: &dyn Fn(&[u8])) -> u64 {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "the {target} corpus is empty");
    for (path, data) in &seeds {
        run(target, &path.file_name().unwrap().to_string_lossy(), data, f);
    }
    let seed = seed();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + seconds();
    let mut runs = 0;
    while Instant::now() < deadline {
        let input = mutate(&mut rng, &seeds);
        run(target, &format!("seed {seed} run {runs}"), &input, f);
        runs += 1;
    }
    eprintln!(
        "{target}: {} corpus files replayed, {runs} random inputs (seed {seed})",
        seeds.len()
    );
    runs
}

#[test]
fn decode_record_corpus_and_a_short_random_run() {
    assert!(fuzz("decode_record", &decode_record_target) > 0 || seconds().is_zero());
}

#[test]
fn store_file_corpus_and_a_short_random_run() {
    let dir = common::scratch_dir();
    let target = |data: &[u8]| store_file_target(dir.path(), data);
    assert!(fuzz("store_file", &target) > 0 || seconds().is_zero());
}

/// Writes seeds of the current formats into the corpus (version 2 records, a store of the
/// current format, named by its number),
/// beside the committed older ones. Run by hand after a format change:
/// `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes into the source tree; run by hand"]
fn write_seeds() {
    use kathikon_core::clock::SECOND;
    use kathikon_core::storage::encode_record;
    use kathikon_core::{Ack, Engine, Outcome};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let dir = common::scratch_dir();
    let path = dir.path().join("seed.redb");
    let engine = Engine::open(common::config(&path)).unwrap();
    let mut batch = Vec::new();
    for i in 0..6 {
        let mut j = common::job("a", "w");
        j.args = format!("{{\"i\":{i}}}");
        j.tags = vec!["t".into()];
        if i == 5 {
            j.scheduled_at = Some(i64::MAX / 4);
        }
        batch.push(j);
    }
    engine.insert(batch).unwrap();
    let claimed = engine.claim("a", 3, Duration::ZERO).unwrap();
    let outcomes = [
        Outcome::Complete,
        Outcome::Fail { error: "boom".into(), retry_in: Some(3600 * SECOND) },
        Outcome::Discard { reason: "bad".into() },
    ];
    let acks = claimed
        .iter()
        .zip(outcomes)
        .map(|(j, outcome)| Ack { id: j.id, attempt: j.attempt, outcome })
        .collect();
    engine.ack(acks).unwrap();
    for job in engine.list(&kathikon_core::ListFilter::default()).unwrap() {
        let mut record = encode_record(&job);
        // The decode target reads every record as job 7's.
        if job.id != 7 {
            let mut renamed = job.clone();
            renamed.id = 7;
            record = encode_record(&renamed);
        }
        let name = format!("seed-v2-{}", job.state.as_str());
        std::fs::write(root.join("decode_record").join(name), record).unwrap();
    }
    engine.close();
    let name = format!("store_file/seed-format{}-store", kathikon_core::storage::FORMAT_VERSION);
    std::fs::copy(&path, root.join(name)).unwrap();
}
