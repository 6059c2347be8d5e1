//! [`Schedule`]: a cron expression in a time zone, and the slots it names.
//!
//! The expression is parsed by `croner` (five fields, or six with seconds first; `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`/`@annually`; names, ranges, steps, lists, and
//! croner's `L`, `#`, `W`), and read in an IANA time zone from `chrono-tz`. `@reboot` is ours:
//! it names no slot, and fires once each time an owner installs the crontab.
//!
//! Daylight-saving changes follow croner's rules (the Vixie cron / OCPS ones): a job whose
//! second, minute and hour are single fixed values runs once at the first real instant after
//! a spring-forward gap when its time falls in it, and once, at the earlier instant, in a
//! fall-back overlap; an interval or wildcard job skips the wall-clock times a gap removes,
//! and runs on both instants of an overlap.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::clock::{Micros, SECOND};

/// The expression that fires once per install instead of on slots.
pub const REBOOT: &str = "@reboot";

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `None` for [`REBOOT`].
    cron: Option<Cron>,
    tz: Tz,
}

impl Schedule {
    /// Parse `expression` in the IANA zone `timezone`. The error names the value and the fix.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, String> {
        let tz: Tz = timezone.parse().map_err(|_| {
            format!(
                "timezone {timezone:?} is not an IANA time zone name; use a name such as \
                 \"UTC\", \"Europe/Athens\" or \"America/New_York\""
            )
        })?;
        if expression.trim() == REBOOT {
            return Ok(Schedule { cron: None, tz });
        }
        let parser =
            CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|e| {
            format!(
                "cron expression {expression:?} is not valid ({e}); use five fields \
                 \"minute hour day-of-month month day-of-week\" (e.g. \"*/5 * * * *\"), six \
                 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly, @reboot"
            )
        })?;
        Ok(Schedule { cron: Some(cron), tz })
    }

    /// Whether this is `@reboot` (no slots: it fires when the crontab is installed).
    pub fn is_reboot(&self) -> bool {
        self.cron.is_none()
    }

    /// The first slot strictly after `at`, if there is one.
    pub fn next_after(&self, at: Micros) -> Option<Micros> {
        let cron = self.cron.as_ref()?;
        let from = self.zoned(at.div_euclid(SECOND) * SECOND)?;
        cron.find_next_occurrence(&from, false).ok().map(|t| t.timestamp_micros())
    }

    /// The last slot at or before `at`, if there is one.
    pub fn last_until(&self, at: Micros) -> Option<Micros> {
        let cron = self.cron.as_ref()?;
        let from = self.zoned(at.div_euclid(SECOND) * SECOND)?;
        cron.find_previous_occurrence(&from, true).ok().map(|t| t.timestamp_micros())
    }

    /// The last slot strictly before `at`, if there is one.
    pub fn last_before(&self, at: Micros) -> Option<Micros> {
        // Slots fall on whole seconds: the last one before `at` is at or before `at` − 1 µs.
        self.last_until(at - 1)
    }

    /// `at` as ISO-8601 in this schedule's zone, with its offset (whole seconds when `at` is).
    pub fn iso(&self, at: Micros) -> String {
        match self.zoned(at) {
            Some(t) if t.nanosecond() == 0 => t.to_rfc3339_opts(SecondsFormat::Secs, false),
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, false),
            None => at.to_string(),
        }
    }

    fn zoned(&self, at: Micros) -> Option<DateTime<Tz>> {
        DateTime::<Utc>::from_timestamp_micros(at).map(|t| t.with_timezone(&self.tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(iso: &str) -> Micros {
        DateTime::parse_from_rfc3339(iso).unwrap().timestamp_micros()
    }

    #[test]
    fn five_and_six_fields_aliases_and_names_parse() {
        for expr in ["*/5 * * * *", "0 7 * * MON-FRI", "*/10 * * * * *", "@hourly", "@reboot"] {
            Schedule::parse(expr, "UTC").unwrap();
        }
        let daily = Schedule::parse("@daily", "Europe/Athens").unwrap();
        assert_eq!(
            daily.iso(daily.next_after(at("2026-06-01T12:00:00Z")).unwrap()),
            "2026-06-02T00:00:00+03:00"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("\"61 * * * *\""), "{e}");
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("\"Mars/Olympus\""), "{e}");
    }

    #[test]
    fn next_and_last_slots_are_strict_and_inclusive() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let t = at("2026-01-01T00:05:00Z");
        assert_eq!(s.next_after(t), Some(at("2026-01-01T00:10:00Z")));
        assert_eq!(s.next_after(t - 1), Some(t));
        assert_eq!(s.last_until(t), Some(t));
        assert_eq!(s.last_before(t), Some(at("2026-01-01T00:00:00Z")));
    }
}
