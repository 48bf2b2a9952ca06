//! Cron schedules, pure: a pattern parsed by `croner`, the next fire time after a given instant,
//! and the table of the stored pipelines' enabled crons with their next fire times.
//!
//! Nothing here reads a clock or sleeps: times come in as milliseconds since the epoch, so the
//! timer task ([`super::service`]) is the only place that waits, and every rule here is tested
//! with an injected clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Local, TimeZone};
use croner::parser::{CronParser, Seconds, Year};

/// The pattern `POST /cron/start` stores when none is given and none is stored (HKube's).
pub const DEFAULT_PATTERN: &str = "0 * * * *";

/// Why a pattern cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "triggers.cron.pattern \"{pattern}\" is not a valid cron pattern: {reason}. Use 5 fields \
         (minute hour day-of-month month day-of-week, as \"*/5 * * * *\") or 6 with seconds \
         first (as \"30 */5 * * * *\")"
    )]
    Invalid { pattern: String, reason: String },
}

/// A parsed pattern: 5 fields, or 6 with seconds first, as the `cron` package HKube uses reads
/// them. Times are the server's local time, as with HKube's trigger service.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(pattern: &str) -> Result<Schedule, Error> {
        let invalid = |reason: String| Error::Invalid {
            pattern: pattern.to_string(),
            reason,
        };
        // croner also takes a 7th field (years); HKube's patterns have 5 or 6.
        let fields = pattern.split_whitespace().count();
        if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(invalid(format!("it has {fields} fields")));
        }
        let cron = parser().parse(pattern).map_err(|e| {
            let reason = e.to_string().trim_end_matches('.').to_string();
            match failing_field(pattern) {
                Some((field, value)) => invalid(format!("the {field} field ({value}): {reason}")),
                None => invalid(reason),
            }
        })?;
        Ok(Schedule { cron })
    }

    /// The first instant strictly after `after_ms` that the pattern matches, in ms since the
    /// epoch; `None` when it never matches again (as `0 0 30 2 *`).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        // Matches fall on whole seconds: the first one after the second `after_ms` is in.
        let after = Local
            .timestamp_opt(i64::try_from(after_ms / 1000).ok()?, 0)
            .single()?;
        let next: DateTime<Local> = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp()).ok()?.checked_mul(1000)
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// The field the parser refuses, found by parsing each field alone among `*`s: the parser's
/// own message does not say which it is.
fn failing_field(pattern: &str) -> Option<(&'static str, String)> {
    const FIVE: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const SIX: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIVE,
        6 => &SIX,
        _ => return None,
    };
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        parser()
            .parse(&alone.join(" "))
            .is_err()
            .then(|| (names[i], fields[i].to_string()))
    })
}

/// The next fire time of `pattern` after `now_ms`, for showing with a stored pipeline.
pub fn next_run(pattern: &str, now_ms: u64) -> Option<u64> {
    Schedule::parse(pattern).ok()?.next_after(now_ms)
}

#[derive(Debug)]
struct Entry {
    pattern: String,
    schedule: Schedule,
    next: Option<u64>,
}

/// The enabled crons of the stored pipelines, each with its next fire time.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
}

impl Table {
    /// Takes the stored pipelines' enabled crons as (name, pattern). A pipeline whose pattern
    /// did not change keeps its next fire time; a new or changed one fires first after
    /// `now_ms`; one that is gone or disabled leaves the table. Returns the patterns that
    /// cannot be parsed (the store refuses them, so only an old database has any).
    pub fn reload(&mut self, crons: Vec<(String, String)>, now_ms: u64) -> Vec<(String, Error)> {
        let mut invalid = Vec::new();
        let mut entries = BTreeMap::new();
        for (name, pattern) in crons {
            match self.entries.remove(&name) {
                Some(entry) if entry.pattern == pattern => {
                    entries.insert(name, entry);
                }
                _ => match Schedule::parse(&pattern) {
                    Ok(schedule) => {
                        let next = schedule.next_after(now_ms);
                        entries.insert(
                            name,
                            Entry {
                                pattern,
                                schedule,
                                next,
                            },
                        );
                    }
                    Err(error) => invalid.push((name, error)),
                },
            }
        }
        self.entries = entries;
        invalid
    }

    /// When the next pipeline is due.
    pub fn next_due(&self) -> Option<u64> {
        self.entries.values().filter_map(|e| e.next).min()
    }

    /// The pipelines due at `now_ms`, each then moved to its first fire time after `now_ms`:
    /// fire times missed while the server was busy or stopped run once, not once each.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<String> {
        let mut due = Vec::new();
        for (name, entry) in &mut self.entries {
            if entry.next.is_some_and(|next| next <= now_ms) {
                due.push(name.clone());
                entry.next = entry.schedule.next_after(now_ms);
            }
        }
        due
    }

    /// A pipeline's next fire time, when it has an enabled cron.
    pub fn next_run(&self, name: &str) -> Option<u64> {
        self.entries.get(name).and_then(|e| e.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05 10:00:00.000 local time, a Monday.
    fn monday_10am() -> u64 {
        let t = Local
            .with_ymd_and_hms(2026, 1, 5, 10, 0, 0)
            .single()
            .unwrap();
        t.timestamp_millis() as u64
    }
    const MIN: u64 = 60_000;

    #[test]
    fn five_and_six_fields() {
        let t = monday_10am();
        let cases: &[(&str, Option<u64>)] = &[
            ("* * * * *", Some(t + MIN)),
            ("*/15 * * * *", Some(t + 15 * MIN)),
            ("30 * * * * *", Some(t + 30_000)),
            ("0 11 * * *", Some(t + 60 * MIN)),
            ("0 10 * * TUE", Some(t + 24 * 60 * MIN)),
            (DEFAULT_PATTERN, Some(t + 60 * MIN)),
            ("0 0 30 2 *", None),
        ];
        for (pattern, expected) in cases {
            let schedule = Schedule::parse(pattern).unwrap();
            assert_eq!(schedule.next_after(t), *expected, "{pattern}");
        }
    }

    #[test]
    fn invalid_patterns_name_the_parser_reason() {
        for pattern in ["* * * *", "* * * * * * *", "61 * * * *", "a b c d e", ""] {
            let error = Schedule::parse(pattern).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!(
                    "triggers.cron.pattern \"{pattern}\" is not a valid cron pattern: "
                )),
                "{error}"
            );
        }
        let error = Schedule::parse("61 * * * *").unwrap_err().to_string();
        assert!(
            error.contains(": the minute field (61): "),
            "the field and the parser's reason: {error}"
        );
        let error = Schedule::parse("0 25 * * *").unwrap_err().to_string();
        assert!(error.contains(": the hour field (25): "), "{error}");
    }

    #[test]
    fn table_fires_each_match_once_and_follows_changes() {
        let t = monday_10am();
        let mut table = Table::default();
        table.reload(vec![("p".into(), "* * * * *".into())], t);
        assert_eq!(table.next_due(), Some(t + MIN));
        assert!(table.take_due(t + MIN - 1).is_empty());
        assert_eq!(table.take_due(t + MIN), vec!["p".to_string()]);
        assert_eq!(table.next_run("p"), Some(t + 2 * MIN));
        // A reload with the same pattern keeps the next fire time.
        table.reload(vec![("p".into(), "* * * * *".into())], t + MIN + 30_000);
        assert_eq!(table.next_run("p"), Some(t + 2 * MIN));
        // Missed matches (the server was stopped 5 minutes) fire once.
        assert_eq!(table.take_due(t + 7 * MIN + 1), vec!["p".to_string()]);
        assert_eq!(table.next_run("p"), Some(t + 8 * MIN));
        // A changed pattern is scheduled from now.
        table.reload(vec![("p".into(), "0 12 * * *".into())], t + 8 * MIN);
        assert_eq!(table.next_run("p"), Some(t + 120 * MIN));
        // Disabled (absent from the list): gone.
        table.reload(Vec::new(), t + 9 * MIN);
        assert_eq!(table.next_due(), None);
        assert!(table.take_due(t + 1000 * MIN).is_empty());
    }

    #[test]
    fn a_bad_stored_pattern_is_reported_not_scheduled() {
        let mut table = Table::default();
        let invalid = table.reload(
            vec![
                ("bad".into(), "x".into()),
                ("ok".into(), "* * * * *".into()),
            ],
            monday_10am(),
        );
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0, "bad");
        assert!(table.next_run("ok").is_some());
        assert!(table.next_run("bad").is_none());
    }
}
