//! [`Retention`]: how long the pruner keeps finished jobs, per terminal state.

use std::time::Duration;

use crate::state::JobState;

/// How long a job is kept after it finished, for each terminal state (completed, cancelled,
/// discarded), as Oban Pro's pruner allows. The default keeps every finished job 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// In the order of [`JobState::TERMINAL`].
    periods: [Duration; 3],
}

impl Retention {
    /// The default period of every terminal state: 7 days.
    pub const DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Keep jobs of every terminal state for `period`.
    pub const fn all(period: Duration) -> Retention {
        Retention { periods: [period; 3] }
    }

    /// This retention with jobs finished in `state` kept for `period`; `None` when `state`
    /// is not terminal (only finished jobs are pruned).
    pub fn with(mut self, state: JobState, period: Duration) -> Option<Retention> {
        self.periods[terminal_index(state)?] = period;
        Some(self)
    }

    /// How long jobs finished in `state` are kept; `None` when `state` is not terminal.
    pub fn of(&self, state: JobState) -> Option<Duration> {
        Some(self.periods[terminal_index(state)?])
    }

    /// The longest period of any terminal state: every job finished longer ago than this may
    /// go, whatever its state.
    pub fn longest(&self) -> Duration {
        self.periods.into_iter().max().unwrap_or(Self::DEFAULT)
    }

    /// The distinct periods shorter than [`Retention::longest`], shortest first: the ones a
    /// job's state must be read for before it goes.
    pub fn shorter(&self) -> impl Iterator<Item = Duration> {
        let mut periods = self.periods;
        periods.sort_unstable();
        let longest = self.longest();
        let mut previous = None;
        periods.into_iter().filter(move |p| {
            let new = *p < longest && previous != Some(*p);
            previous = Some(*p);
            new
        })
    }
}

/// Where `state` is in [`JobState::TERMINAL`].
fn terminal_index(state: JobState) -> Option<usize> {
    JobState::TERMINAL.iter().position(|s| *s == state)
}

impl Default for Retention {
    fn default() -> Self {
        Retention::all(Self::DEFAULT)
    }
}

impl From<Duration> for Retention {
    fn from(period: Duration) -> Self {
        Retention::all(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminal_states_have_a_period() {
        let hour = Duration::from_secs(3600);
        let retention = Retention::default().with(JobState::Completed, hour).unwrap();
        assert_eq!(retention.of(JobState::Completed), Some(hour));
        assert_eq!(retention.of(JobState::Discarded), Some(Retention::DEFAULT));
        assert_eq!(retention.of(JobState::Available), None);
        assert!(retention.with(JobState::Executing, hour).is_none());
    }

    #[test]
    fn the_shorter_periods_are_distinct_and_below_the_longest() {
        let (a, b) = (Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(Retention::all(a).shorter().count(), 0);
        let two = Retention::all(a).with(JobState::Discarded, b).unwrap();
        assert_eq!((two.longest(), two.shorter().collect::<Vec<_>>()), (b, vec![a]));
        let three = two.with(JobState::Cancelled, Duration::from_secs(3)).unwrap();
        assert_eq!(three.shorter().collect::<Vec<_>>(), vec![a, b]);
    }
}
