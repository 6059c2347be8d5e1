//! [`Window`]: the job starts of one rate partition within its sliding period, exactly (each
//! start's time, those of one claim call sharing one entry), so "at most N starts in any
//! period" holds to the microsecond and survives a restart when stored.

use std::collections::VecDeque;

use crate::clock::Micros;
use crate::error::{Error, Result};

/// Starts in time order: `(when, how many)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    starts: VecDeque<(Micros, u32)>,
    total: u32,
}

impl Window {
    /// Drop the starts that left the window ending at `now`: a start at `t` counts while
    /// `now < t + period`.
    fn expire(&mut self, now: Micros, period: Micros) {
        while let Some(&(at, n)) = self.starts.front() {
            if at.saturating_add(period) > now {
                break;
            }
            self.starts.pop_front();
            self.total -= n;
        }
    }

    /// Whether one more start fits at `now`; if not, `Err` of when the oldest start leaves.
    pub fn room(&mut self, now: Micros, allowed: u32, period: Micros) -> Result<(), Micros> {
        self.expire(now, period);
        if self.total < allowed {
            return Ok(());
        }
        Err(self.starts.front().map_or(now, |&(at, _)| at.saturating_add(period)))
    }

    /// Count a start at `now` (never before the latest start: a clock that stepped back
    /// counts it at the latest, so the order holds).
    pub fn record(&mut self, now: Micros) {
        self.total += 1;
        match self.starts.back_mut() {
            Some((at, n)) if *at >= now => *n += 1,
            _ => self.starts.push_back((now, 1)),
        }
    }

    /// Take back one start recorded at `at` (a claim that found its job gone); the latest
    /// start at or before `at` when none is exactly there.
    pub fn forget(&mut self, at: Micros) {
        let Some(i) = self.starts.iter().rposition(|&(t, _)| t <= at).or(
            // A start recorded at a later time after the clock stepped back.
            if self.starts.is_empty() { None } else { Some(self.starts.len() - 1) },
        ) else {
            return;
        };
        self.total -= 1;
        if self.starts[i].1 == 1 {
            self.starts.remove(i);
        } else {
            self.starts[i].1 -= 1;
        }
    }

    /// Starts counted now.
    pub fn used(&mut self, now: Micros, period: Micros) -> u32 {
        self.expire(now, period);
        self.total
    }

    /// Whether it holds no start.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let starts: Vec<(Micros, u32)> = self.starts.iter().copied().collect();
        postcard::to_allocvec(&starts).expect("a window encodes")
    }

    /// A window of `starts`, `(when, how many)` in time order (as a store keeps them).
    pub fn from_starts(starts: impl IntoIterator<Item = (Micros, u32)>) -> Window {
        let starts: VecDeque<(Micros, u32)> = starts.into_iter().collect();
        let total = starts.iter().map(|&(_, n)| n).sum();
        Window { starts, total }
    }

    /// The window stored as `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Window> {
        let starts: Vec<(Micros, u32)> = postcard::from_bytes(bytes).map_err(|e| {
            Error::Storage(format!("a stored rate-limit window does not decode: {e}"))
        })?;
        Ok(Window::from_starts(starts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_leave_the_window_after_exactly_one_period() {
        let mut w = Window::default();
        for t in [0, 0, 5] {
            assert!(w.room(t, 3, 10).is_ok());
            w.record(t);
        }
        assert_eq!(w.room(9, 3, 10), Err(10), "full until the first starts leave at 10");
        assert!(w.room(10, 3, 10).is_ok(), "the two starts at 0 left");
        assert_eq!(w.used(10, 10), 1);
        assert_eq!(w.used(15, 10), 0);
    }

    #[test]
    fn forget_takes_back_one_start_and_encoding_round_trips() {
        let mut w = Window::default();
        w.record(1);
        w.record(1);
        w.record(4);
        w.forget(1);
        assert_eq!(w.used(4, 100), 2);
        let back = Window::decode(&w.encode()).unwrap();
        assert_eq!(back, w);
        w.forget(4);
        w.forget(1);
        assert!(w.is_empty());
    }
}
