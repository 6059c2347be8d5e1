//! Default retry delay: exponential with jitter, as Oban does it.

use crate::clock::{Micros, SECOND};

/// Longest default delay, so a job with many attempts still retries within a day.
pub const MAX_BACKOFF: Micros = 24 * 3600 * SECOND;

/// Delay before retrying after failed attempt `attempt` (1-based): `15 s + 2^attempt s`,
/// capped at a day, then spread by up to ±10 % so that jobs that failed together do not all
/// retry in the same instant. `seed` picks the jitter (the job id is used), keeping the
/// function pure and testable.
///
/// ```
/// use kathikon_core::backoff::default_backoff;
/// let d = default_backoff(1, 42);
/// assert!((15_300_000..=18_700_000).contains(&d), "{d}");
/// ```
pub fn default_backoff(attempt: u32, seed: u64) -> Micros {
    let base = 15 * SECOND + (1_i64 << attempt.min(20)) * SECOND;
    let base = base.min(MAX_BACKOFF);
    // splitmix64 of the seed and attempt: cheap, deterministic, well spread.
    let mut z = seed ^ (u64::from(attempt) << 32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let spread = base / 10;
    let jitter = (z % (2 * spread as u64 + 1)) as Micros - spread;
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut last = 0;
        for attempt in 1..=12 {
            let lo = (15 * SECOND + (1 << attempt) * SECOND) * 9 / 10;
            let d = default_backoff(attempt, 7);
            assert!(d >= lo, "attempt {attempt}: {d} < {lo}");
            assert!(d > last * 9 / 10);
            last = d;
        }
        assert!(default_backoff(100, 7) <= MAX_BACKOFF * 11 / 10);
    }

    #[test]
    fn jitter_differs_between_jobs() {
        let ds: std::collections::HashSet<_> = (0..50).map(|id| default_backoff(3, id)).collect();
        assert!(ds.len() > 40);
    }
}
