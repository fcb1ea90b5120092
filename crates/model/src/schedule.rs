//! Cron schedules: parsing, time zones, and which ticks are due.
//!
//! Pure functions of (expression, zone, time), so every backend and the API's
//! `GET /schedules/{id}/next` agree on fire times. Daylight-saving time follows croner
//! (the Open Cron Pattern Specification): a fixed time that falls into a skipped hour
//! fires once at the first valid instant after the gap; a fixed time in a repeated hour
//! fires once, at its first occurrence; wildcard and step fields fire on every real
//! instant that matches.

use std::str::FromStr;

use chrono::Utc;
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::Timestamp;

/// Parses a 5-field, 6-field (leading seconds) or descriptor (`@hourly`) cron expression.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|err| format!("invalid cron expression `{expression}`: {err}"))
}

/// Parses an IANA time-zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone `{name}` (use an IANA name such as \"Europe/Berlin\")")
    })
}

/// What happens to ticks missed while nothing ran (all workers down, workflow disabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks collapse into one: the latest missed tick fires once.
    #[default]
    Skip,
    /// Every missed tick fires, at most [`MAX_CATCH_UP`] of them (the oldest beyond that
    /// are dropped).
    All,
}

impl CatchUp {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::All => "all",
        }
    }
}

/// Most missed ticks fired by [`CatchUp::All`] in one go.
pub const MAX_CATCH_UP: usize = 100;

/// A checked cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Checks a schedule's expression and zone together, as the API and the embedding
    /// handle take them: every problem, each at its field (`cron`, `timezone`).
    pub fn checked(expression: &str, timezone: &str) -> Result<Self, Vec<crate::Problem>> {
        let cron = parse_cron(expression).map_err(|m| crate::Problem::new("cron", m));
        let zone = parse_timezone(timezone).map_err(|m| crate::Problem::new("timezone", m));
        match (cron, zone) {
            (Ok(cron), Ok(zone)) => Ok(Self { cron, zone }),
            (cron, zone) => Err(cron.err().into_iter().chain(zone.err()).collect()),
        }
    }

    /// Parses `expression` in `timezone` (UTC when `None`); the error says which is wrong.
    pub fn new(expression: &str, timezone: Option<&str>) -> Result<Self, String> {
        let cron = parse_cron(expression)?;
        let zone = match timezone {
            Some(name) => parse_timezone(name)?,
            None => Tz::UTC,
        };
        Ok(Self { cron, zone })
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The earliest of the `count` newest fire times at or before `now`, as the forward
    /// walk of [`Self::next_after`] finds it (so daylight-saving rules apply the same
    /// way); `None` when there are none.
    fn newest_ticks_start(&self, now: Timestamp, count: usize) -> Option<Timestamp> {
        let mut at = now.with_timezone(&self.zone);
        let mut earliest = None;
        for i in 0..count {
            match self.cron.find_previous_occurrence(&at, i == 0) {
                Ok(previous) => {
                    earliest = Some(previous);
                    at = previous;
                }
                Err(_) => break,
            }
        }
        let earliest = earliest?.with_timezone(&Utc);
        self.next_after(earliest - chrono::TimeDelta::seconds(1))
            .filter(|t| *t <= now)
            .or(Some(earliest))
    }

    /// The next `count` fire times after `after`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(count);
        let mut at = after;
        while out.len() < count {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The ticks to fire at `now` for a schedule whose next fire time is `next_fire_at`,
    /// and the next fire time after them. Nothing is due before `next_fire_at`.
    pub fn due(
        &self,
        next_fire_at: Timestamp,
        now: Timestamp,
        catch_up: CatchUp,
    ) -> (Vec<Timestamp>, Option<Timestamp>) {
        if next_fire_at > now {
            return (Vec::new(), Some(next_fire_at));
        }
        // Walk the missed ticks; keep only what the policy fires. After a long pause a
        // frequent schedule has missed millions of ticks: the walk starts no earlier
        // than the newest ticks the policy can fire (found backwards from `now`), so it
        // costs at most about that many steps, not one per missed tick.
        let wanted = match catch_up {
            CatchUp::Skip => 1,
            CatchUp::All => MAX_CATCH_UP,
        };
        let first = self
            .newest_ticks_start(now, wanted)
            .filter(|start| *start > next_fire_at)
            .unwrap_or(next_fire_at);
        let mut missed = vec![first];
        let mut at = first;
        let mut next = None;
        loop {
            match self.next_after(at) {
                Some(t) if t <= now => {
                    missed.push(t);
                    if missed.len() > MAX_CATCH_UP {
                        missed.remove(0);
                    }
                    at = t;
                }
                other => {
                    next = next.or(other);
                    break;
                }
            }
        }
        let ticks = match catch_up {
            CatchUp::Skip => missed.split_off(missed.len() - 1),
            CatchUp::All => missed,
        };
        (ticks, next)
    }
}

/// A schedule attached to a workflow: each tick starts one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Id.
    pub id: Uuid,
    /// The workflow it starts.
    pub workflow_id: Uuid,
    /// Cron expression (5 or 6 fields, or a descriptor).
    pub cron: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    /// Paused schedules fire nothing (nor do schedules of disabled workflows).
    pub enabled: bool,
    /// Missed-tick policy.
    pub catch_up: CatchUp,
    /// True for the schedule that mirrors the workflow's own `schedule` trigger: it
    /// follows the definition when the workflow is replaced.
    pub from_trigger: bool,
    /// When it fires next (null when the expression never fires again).
    pub next_fire_at: Option<Timestamp>,
    /// The last tick fired.
    pub last_fired_at: Option<Timestamp>,
    /// Creation.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// State of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickStatus {
    /// Claimed by a worker that has not started its execution yet.
    Pending,
    /// Its execution was started.
    Started,
    /// It could not start (the workflow was deleted meanwhile).
    Failed,
}

impl TickStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Failed => "failed",
        }
    }
}

/// One tick of a schedule: unique per (schedule, tick time), so it starts at most one
/// execution however many workers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Id.
    pub id: Uuid,
    /// The schedule.
    pub schedule_id: Uuid,
    /// The scheduled time.
    pub tick_time: Timestamp,
    /// State.
    pub status: TickStatus,
    /// The worker holding a pending tick.
    pub owner: Option<String>,
    /// Until when it holds it.
    pub lease_expires_at: Option<Timestamp>,
    /// When it was claimed first.
    pub claimed_at: Timestamp,
    /// When its execution was started.
    pub started_at: Option<Timestamp>,
    /// The execution it started.
    pub execution_id: Option<Uuid>,
    /// Why it failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn accepts_five_and_six_fields_and_descriptors() {
        for ok in [
            "0 */6 * * *",
            "*/10 * * * * *",
            "@hourly",
            "@daily",
            "0 9 * * MON-FRI",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in ["", "61 * * * *", "* * *", "@sometimes", "* * * * * * * *"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
        assert!(CronSchedule::new("@hourly", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn five_six_fields_and_descriptors_fire_when_expected() {
        let t = utc(2026, 3, 10, 10, 17, 42);
        let cases: &[(&str, Timestamp)] = &[
            ("0 */6 * * *", utc(2026, 3, 10, 12, 0, 0)),
            ("*/10 * * * * *", utc(2026, 3, 10, 10, 17, 50)),
            ("@hourly", utc(2026, 3, 10, 11, 0, 0)),
            ("@daily", utc(2026, 3, 11, 0, 0, 0)),
            ("30 9 * * MON-FRI", utc(2026, 3, 11, 9, 30, 0)),
        ];
        for (expr, expected) in cases {
            let s = CronSchedule::new(expr, None).unwrap();
            assert_eq!(s.next_after(t), Some(*expected), "{expr}");
        }
    }

    /// Spring forward: 02:30 local does not exist on the change day; it fires once at the
    /// first valid instant after the gap (03:00 local).
    #[test]
    fn a_tick_in_a_skipped_hour_fires_once_after_the_gap() {
        // Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST (01:00 UTC).
        let berlin = CronSchedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let ticks = berlin.upcoming(utc(2026, 3, 27, 12, 0, 0), 4);
        assert_eq!(
            ticks,
            vec![
                utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
                utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, the gap's end
                utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
                utc(2026, 3, 31, 0, 30, 0),
            ]
        );
        // America/New_York: 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC).
        let ny = CronSchedule::new("30 2 * * *", Some("America/New_York")).unwrap();
        let ticks = ny.upcoming(utc(2026, 3, 7, 12, 0, 0), 2);
        assert_eq!(
            ticks,
            vec![utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 9, 6, 30, 0)]
        );
    }

    /// Fall back: 02:30 local happens twice; a fixed-time job fires once.
    #[test]
    fn a_tick_in_a_repeated_hour_fires_once() {
        // Europe/Berlin: 2026-10-25 03:00 CEST → 02:00 CET.
        let berlin = CronSchedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let ticks = berlin.upcoming(utc(2026, 10, 24, 12, 0, 0), 2);
        assert_eq!(
            ticks,
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
        );
        // America/New_York: 2026-11-01 02:00 EDT → 01:00 EST; 01:30 happens twice.
        let ny = CronSchedule::new("30 1 * * *", Some("America/New_York")).unwrap();
        let ticks = ny.upcoming(utc(2026, 10, 31, 12, 0, 0), 2);
        assert_eq!(
            ticks,
            vec![utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 30, 0)]
        );
    }

    #[test]
    fn missed_ticks_collapse_or_catch_up_bounded() {
        let hourly = CronSchedule::new("0 * * * *", None).unwrap();
        let first = utc(2026, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 1, 5, 30, 0);
        let (ticks, next) = hourly.due(first, now, CatchUp::Skip);
        assert_eq!(ticks, vec![utc(2026, 1, 1, 5, 0, 0)]);
        assert_eq!(next, Some(utc(2026, 1, 1, 6, 0, 0)));
        let (ticks, next) = hourly.due(first, now, CatchUp::All);
        assert_eq!(ticks.len(), 6);
        assert_eq!(ticks[0], first);
        assert_eq!(next, Some(utc(2026, 1, 1, 6, 0, 0)));
        let (ticks, _) = hourly.due(first, utc(2026, 1, 20, 0, 0, 0), CatchUp::All);
        assert_eq!(ticks.len(), MAX_CATCH_UP);
        assert_eq!(ticks.last(), Some(&utc(2026, 1, 20, 0, 0, 0)));
        let (ticks, next) = hourly.due(first, utc(2025, 12, 31, 23, 0, 0), CatchUp::Skip);
        assert!(ticks.is_empty());
        assert_eq!(next, Some(first));
    }

    /// An every-second schedule paused for three years has missed ~95 million ticks; the
    /// catch-up finds the ones it fires from the newest end instead of walking all of
    /// them inside the claim's transaction (which took minutes).
    #[test]
    fn catch_up_after_a_long_pause_walks_only_what_it_fires() {
        let every_second = CronSchedule::new("* * * * * *", None).unwrap();
        let paused_at = utc(2023, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 1, 12, 0, 0);
        let (ticks, next) = every_second.due(paused_at, now, CatchUp::Skip);
        assert_eq!(ticks, vec![now]);
        assert_eq!(next, Some(now + chrono::TimeDelta::seconds(1)));
        let (ticks, next) = every_second.due(paused_at, now, CatchUp::All);
        assert_eq!(ticks.len(), MAX_CATCH_UP);
        assert_eq!(ticks.first(), Some(&(now - chrono::TimeDelta::seconds(99))));
        assert_eq!(ticks.last(), Some(&now));
        assert_eq!(next, Some(now + chrono::TimeDelta::seconds(1)));
        // Daily at 02:30 in Berlin across a spring-forward night: the newest tick is
        // found the way the forward walk finds it (03:00 on the night 02:30 is skipped).
        let daily = CronSchedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let (ticks, _) = daily.due(
            utc(2020, 1, 1, 1, 30, 0),
            utc(2026, 3, 29, 1, 30, 0),
            CatchUp::Skip,
        );
        assert_eq!(ticks, vec![utc(2026, 3, 29, 1, 0, 0)]);
    }
}
