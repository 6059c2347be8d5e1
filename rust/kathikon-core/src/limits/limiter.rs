//! [`Limiter`]: a limited queue's ready jobs by bucket, the jobs it let claimers take that
//! still count against the global limit, and the rate windows. One lock guards it all, so a
//! claim's check and its count are one step: two claimers never both take the last place.
//!
//! A job taken here counts at once (before the writer marks it executing), so claims in
//! flight count too; the writer gives back the places of jobs it did not claim (cancelled
//! meanwhile, or a paused queue) and frees a job's global place when it leaves the executing
//! state (acked, rescued, cancelled, deleted). Rate starts are not freed on completion: they
//! leave the window with time.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::claim::ClaimKey;
use crate::clock::Micros;
use crate::job::JobId;

use super::{Bucket, Limits, Window};

/// What a claim call took, and when a rate-limited bucket that had no room gets some.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The jobs, one bucket after another in turn.
    pub keys: Vec<ClaimKey>,
    /// The earliest time a bucket with ready jobs left out for its rate limit has room.
    pub retry_at: Option<Micros>,
    /// When they were taken (and counted): the claim's time.
    pub at: Micros,
}

/// How much of its limits a queue uses, per partition (as [`super::shown`] names it, in that
/// order; partitions using none left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Jobs counted against the global limit.
    pub executing: Vec<(String, u32)>,
    /// Starts within the rate window.
    pub windows: Vec<(String, u32)>,
}

/// One limited queue's claim state (see the module).
#[derive(Debug, Default)]
pub struct Limiter {
    limits: Limits,
    ready: HashMap<Bucket, BTreeSet<ClaimKey>>,
    ready_len: usize,
    /// The bucket of each ready job, to remove one that stopped being available.
    ready_in: HashMap<JobId, Bucket>,
    /// Buckets in round-robin order; one may have been emptied since (skipped when met).
    ring: VecDeque<Bucket>,
    in_ring: HashSet<Bucket>,
    /// Jobs taken and not yet out of the executing state: bucket and when taken.
    held: HashMap<JobId, (Bucket, Micros)>,
    /// Held jobs per global partition value.
    executing: HashMap<String, u32>,
    /// Starts per rate partition value.
    windows: HashMap<String, Window>,
}

impl Limiter {
    /// An empty limiter enforcing `limits`.
    pub fn new(limits: Limits) -> Limiter {
        Limiter { limits, ..Limiter::default() }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A ready job, in `bucket`.
    pub fn push(&mut self, key: ClaimKey, bucket: Bucket) {
        let set = self.ready.entry(bucket.clone()).or_default();
        if !set.insert(key) {
            return;
        }
        self.ready_len += 1;
        self.ready_in.insert(key.2, bucket.clone());
        if self.in_ring.insert(bucket.clone()) {
            self.ring.push_back(bucket);
        }
    }

    /// Remove a job that stopped being available; false if it was not ready here.
    pub fn remove(&mut self, key: &ClaimKey) -> bool {
        let Some(bucket) = self.ready_in.remove(&key.2) else { return false };
        let Some(set) = self.ready.get_mut(&bucket) else { return false };
        let removed = set.remove(key);
        if removed {
            self.ready_len -= 1;
        }
        if set.is_empty() {
            self.ready.remove(&bucket);
        }
        removed
    }

    /// Ready jobs.
    pub fn len(&self) -> usize {
        self.ready_len
    }

    /// Whether no job is ready.
    pub fn is_empty(&self) -> bool {
        self.ready_len == 0
    }

    /// Whether `bucket` may start one more job at `now`; `Err(Some(t))`: not before `t` (its
    /// rate window), `Err(None)`: not until a held job leaves (its global limit).
    fn room(&mut self, bucket: &Bucket, now: Micros) -> Result<(), Option<Micros>> {
        if let Some(global) = &self.limits.global {
            if self.executing.get(&bucket.global).copied().unwrap_or(0) >= global.allowed {
                return Err(None);
            }
        }
        if let Some(rate) = &self.limits.rate {
            let window = self.windows.entry(bucket.rate.clone()).or_default();
            window.room(now, rate.allowed, rate.period_us as Micros).map_err(Some)?;
        }
        Ok(())
    }

    /// Count `id` (in `bucket`) as taken at `now`.
    fn hold(&mut self, id: JobId, bucket: Bucket, now: Micros) {
        if self.limits.global.is_some() {
            *self.executing.entry(bucket.global.clone()).or_default() += 1;
        }
        if self.limits.rate.is_some() {
            self.windows.entry(bucket.rate.clone()).or_default().record(now);
        }
        self.held.insert(id, (bucket, now));
    }

    /// Take up to `max` ready jobs at `now`: one from each bucket with room in turn, the
    /// ring moving on, so the next call starts with the bucket after the last one served.
    pub(crate) fn take(&mut self, max: usize, now: Micros) -> Taken {
        let mut taken = Taken { at: now, ..Taken::default() };
        let mut misses = 0;
        while taken.keys.len() < max && misses < self.ring.len() {
            let Some(bucket) = self.ring.pop_front() else { break };
            if !self.ready.contains_key(&bucket) {
                self.in_ring.remove(&bucket);
                continue;
            }
            if let Err(later) = self.room(&bucket, now) {
                if let Some(at) = later {
                    taken.retry_at = Some(taken.retry_at.map_or(at, |t: Micros| t.min(at)));
                }
                self.ring.push_back(bucket);
                misses += 1;
                continue;
            }
            let set = self.ready.get_mut(&bucket).expect("checked above");
            let key = set.pop_first().expect("a ready bucket is not empty");
            self.ready_len -= 1;
            self.ready_in.remove(&key.2);
            if set.is_empty() {
                self.ready.remove(&bucket);
                self.in_ring.remove(&bucket);
            } else {
                self.ring.push_back(bucket.clone());
            }
            self.hold(key.2, bucket, now);
            taken.keys.push(key);
            misses = 0;
        }
        taken
    }

    /// Whether a claim at `now` would take a job; if not, when a rate window next makes
    /// room for one (`None`: only a held job leaving, or a new job, can).
    pub(crate) fn claimable(&mut self, now: Micros) -> Result<(), Option<Micros>> {
        let buckets: Vec<Bucket> = self.ready.keys().cloned().collect();
        let mut retry_at: Option<Micros> = None;
        for bucket in &buckets {
            match self.room(bucket, now) {
                Ok(()) => return Ok(()),
                Err(Some(at)) => retry_at = Some(retry_at.map_or(at, |t| t.min(at))),
                Err(None) => {}
            }
        }
        Err(retry_at)
    }

    /// A taken job the writer did not claim: free its places and, if `ready`, make it ready
    /// again in its bucket (the claim failed or its queue was paused; not when it is gone).
    pub(crate) fn give_back(&mut self, key: ClaimKey, ready: bool) {
        let Some((bucket, at)) = self.held.remove(&key.2) else { return };
        self.unhold_global(&bucket);
        if self.limits.rate.is_some() {
            if let Some(window) = self.windows.get_mut(&bucket.rate) {
                window.forget(at);
            }
        }
        if ready {
            self.push(key, bucket);
        }
    }

    /// `id` left the executing state: free its global place. False if it was not held.
    pub(crate) fn release(&mut self, id: JobId) -> bool {
        match self.held.remove(&id) {
            Some((bucket, _)) => {
                self.unhold_global(&bucket);
                true
            }
            None => false,
        }
    }

    fn unhold_global(&mut self, bucket: &Bucket) {
        if self.limits.global.is_none() {
            return;
        }
        if let Some(n) = self.executing.get_mut(&bucket.global) {
            *n -= 1;
            if *n == 0 {
                self.executing.remove(&bucket.global);
            }
        }
    }

    /// Count `id`, claimed (or found executing) without being taken here, at `at`: a job
    /// already executing when the limit was set, or claimed from the unlimited queue just
    /// before. Its start is not added to the rate window (it was not limited).
    pub(crate) fn adopt(&mut self, id: JobId, bucket: Bucket, at: Micros) {
        if self.held.contains_key(&id) {
            return;
        }
        if self.limits.global.is_some() {
            *self.executing.entry(bucket.global.clone()).or_default() += 1;
        }
        self.held.insert(id, (bucket, at));
    }

    /// Count `n` jobs executing in global partition `global` that no id is kept for (a store
    /// that counts its executing jobs itself, as `PostgreSQL`'s claim does, and never
    /// releases them here).
    #[cfg(feature = "postgres")]
    pub(crate) fn count_executing(&mut self, global: String, n: u32) {
        if self.limits.global.is_some() && n > 0 {
            *self.executing.entry(global).or_default() += n;
        }
    }

    /// Whether `id` counts against the limits here.
    pub(crate) fn holds(&self, id: JobId) -> bool {
        self.held.contains_key(&id)
    }

    /// The rate partition `id` was taken in, if it was.
    pub(crate) fn rate_partition_of(&self, id: JobId) -> Option<&str> {
        self.held.get(&id).map(|(b, _)| b.rate.as_str())
    }

    /// The window of rate partition `rate`, as stored.
    pub(crate) fn window(&self, rate: &str) -> Option<&Window> {
        self.windows.get(rate)
    }

    /// Start from the window stored for rate partition `rate`.
    pub(crate) fn load_window(&mut self, rate: &str, window: Window) {
        self.windows.insert(rate.to_string(), window);
    }

    /// The ids of every job held now, and every window: what a limiter for changed limits
    /// starts from (it files the jobs again under its own partitions).
    pub(crate) fn into_parts(self) -> (Vec<JobId>, HashMap<String, Window>) {
        (self.held.into_keys().collect(), self.windows)
    }

    /// Every ready job, leaving none (the queue is no longer limited).
    pub(crate) fn drain_ready(&mut self) -> Vec<ClaimKey> {
        let keys: Vec<ClaimKey> = self.ready.drain().flat_map(|(_, set)| set).collect();
        self.ready_len = 0;
        self.ready_in.clear();
        self.ring.clear();
        self.in_ring.clear();
        keys
    }

    /// Jobs executing per global partition value, and starts in the window per rate
    /// partition value at `now` (partitions with none left out).
    pub fn usage(&mut self, now: Micros) -> Usage {
        let mut executing: Vec<(String, u32)> =
            self.executing.iter().map(|(k, v)| (super::shown(k), *v)).collect();
        executing.sort();
        let mut windows = Vec::new();
        if let Some(rate) = &self.limits.rate {
            let period = rate.period_us as Micros;
            for (name, window) in &mut self.windows {
                let used = window.used(now, period);
                if used > 0 {
                    windows.push((super::shown(name), used));
                }
            }
        }
        windows.sort();
        Usage { executing, windows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{GlobalLimit, Partition, PartitionField, RateLimit};

    fn by_args() -> Partition {
        Partition { fields: vec![PartitionField::Args], keys: vec!["c".into()] }
    }

    fn bucket(global: &str) -> Bucket {
        Bucket { global: global.into(), rate: String::new() }
    }

    #[test]
    fn a_global_limit_holds_until_a_job_is_released() {
        let mut l = Limiter::new(Limits {
            global: Some(GlobalLimit { allowed: 2, partition: None }),
            rate: None,
        });
        for id in 1..=5 {
            l.push((0, 0, id), bucket(""));
        }
        let t = l.take(10, 0);
        assert_eq!(t.keys, vec![(0, 0, 1), (0, 0, 2)]);
        assert!(t.retry_at.is_none(), "only a release makes room");
        assert!(l.take(10, 0).keys.is_empty());
        assert!(l.release(1));
        assert!(!l.release(1), "released once");
        assert_eq!(l.take(10, 0).keys, vec![(0, 0, 3)]);
        l.give_back((0, 0, 3), true);
        assert_eq!(l.take(10, 0).keys, vec![(0, 0, 3)], "given back, ready again");
    }

    #[test]
    fn partitions_take_in_turn_so_a_small_one_is_not_starved() {
        let mut l = Limiter::new(Limits {
            global: Some(GlobalLimit { allowed: 100, partition: Some(by_args()) }),
            rate: None,
        });
        for id in 1..=100 {
            l.push((0, 0, id), bucket("big"));
        }
        for id in 101..=103 {
            l.push((5, 0, id), bucket("small"));
        }
        let keys = l.take(6, 0).keys;
        let small = keys.iter().filter(|k| k.2 > 100).count();
        assert_eq!(small, 3, "the small partition gets every other place: {keys:?}");
    }

    #[test]
    fn a_rate_limit_says_when_it_has_room_again() {
        let mut l = Limiter::new(Limits {
            global: None,
            rate: Some(RateLimit { allowed: 3, period_us: 1_000, partition: None }),
        });
        for id in 1..=10 {
            l.push((0, 0, id), bucket(""));
        }
        assert_eq!(l.take(10, 100).keys.len(), 3);
        let t = l.take(10, 500);
        assert!(t.keys.is_empty());
        assert_eq!(t.retry_at, Some(1_100));
        assert_eq!(l.claimable(500), Err(Some(1_100)));
        assert_eq!(l.take(10, 1_100).keys.len(), 3, "a full period later");
        l.release(1);
        assert!(l.take(10, 1_100).keys.is_empty(), "a finished job does not free a start");
    }

    #[test]
    fn removing_a_ready_job_and_draining() {
        let mut l = Limiter::new(Limits {
            global: Some(GlobalLimit { allowed: 1, partition: Some(by_args()) }),
            rate: None,
        });
        l.push((0, 0, 1), bucket("a"));
        l.push((0, 0, 2), bucket("b"));
        assert!(l.remove(&(0, 0, 1)));
        assert!(!l.remove(&(0, 0, 1)));
        assert_eq!(l.len(), 1);
        assert_eq!(l.take(5, 0).keys, vec![(0, 0, 2)], "the emptied bucket is skipped");
        l.push((0, 0, 3), bucket("b"));
        assert_eq!(l.drain_ready(), vec![(0, 0, 3)]);
        assert!(l.is_empty());
    }
}
