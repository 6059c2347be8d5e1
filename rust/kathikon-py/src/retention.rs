//! `retention_period=`: seconds for every terminal state, or a dict of state → seconds.

use std::collections::HashMap;
use std::time::Duration;

use kathikon_core::{JobState, Retention};
use pyo3::prelude::*;

use crate::errors::ConfigurationError;

/// What Python passes as `retention_period`.
#[derive(FromPyObject)]
pub(crate) enum RetentionArg {
    /// Seconds, for every terminal state.
    Seconds(f64),
    /// State name → seconds; a state not named keeps [`Retention::DEFAULT`].
    ByState(HashMap<String, f64>),
}

impl RetentionArg {
    /// The core's [`Retention`], or a `ConfigurationError` naming the bad state or period.
    pub(crate) fn retention(self) -> PyResult<Retention> {
        match self {
            RetentionArg::Seconds(seconds) => Ok(period("retention_period", seconds)?.into()),
            RetentionArg::ByState(periods) => {
                let mut retention = Retention::default();
                for (name, seconds) in periods {
                    let state = JobState::parse(&name).ok();
                    let period = period(&format!("retention_period[{name:?}]"), seconds)?;
                    retention = state.and_then(|s| retention.with(s, period)).ok_or_else(|| {
                        ConfigurationError::new_err(format!(
                            "retention_period names {name:?}, which is not a finished state; \
                             use \"completed\", \"cancelled\" or \"discarded\""
                        ))
                    })?;
                }
                Ok(retention)
            }
        }
    }
}

fn period(name: &str, seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        ConfigurationError::new_err(format!(
            "{name}={seconds} is not a usable period; pass a finite number of seconds >= 0"
        ))
    })
}
