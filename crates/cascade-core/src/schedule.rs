//! Maintenance windows: recurring local times in a time zone, with a
//! duration, and what they allow at a given instant. Time is passed in.
//!
//! A window opens at its local start time on each of its days (every day
//! when none are named) and stays open for its duration of elapsed time, so
//! it may cross midnight. On the day clocks go forward a start time inside
//! the gap is pushed forward by the gap (02:30 becomes 03:30, as RFC 5545
//! and Temporal's "compatible" rule do); on the day they go back a start
//! time that happens twice opens the first time.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ZonedDateTime};

use crate::model::MaintenanceWindow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("maintenance window {window}: time_zone {value:?} is not a known IANA time zone")]
    TimeZone { window: String, value: String },
    #[error("maintenance window {window}: start {value:?} is not a local time HH:MM")]
    Start { window: String, value: String },
    #[error("maintenance window {window}: duration_minutes must be between 1 and 10080 (a week), not {value}")]
    Duration { window: String, value: u32 },
    #[error("maintenance window {window}: {value:?} in days is not a weekday (mon, tue, wed, thu, fri, sat, sun)")]
    Day { window: String, value: String },
}

/// A checked maintenance window.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: TimeZone,
    start: Time,
    duration: SignedDuration,
    /// Empty: every day.
    days: Vec<Weekday>,
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.trim().to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl Schedule {
    pub fn new(window: &MaintenanceWindow) -> Result<Schedule, WindowError> {
        let name = window.id.to_string();
        let tz = TimeZone::get(&window.time_zone).map_err(|_| WindowError::TimeZone {
            window: name.clone(),
            value: window.time_zone.clone(),
        })?;
        let start = parse_hh_mm(&window.start).ok_or_else(|| WindowError::Start {
            window: name.clone(),
            value: window.start.clone(),
        })?;
        if window.duration_minutes == 0 || window.duration_minutes > 7 * 24 * 60 {
            return Err(WindowError::Duration {
                window: name,
                value: window.duration_minutes,
            });
        }
        let days = window
            .days
            .iter()
            .map(|d| {
                weekday(d).ok_or_else(|| WindowError::Day {
                    window: name.clone(),
                    value: d.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            tz,
            start,
            duration: SignedDuration::from_mins(i64::from(window.duration_minutes)),
            days,
        })
    }

    /// The opening on local date `date`, if the window opens that day.
    fn opening_on(&self, date: jiff::civil::Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days.is_empty() && !self.days.contains(&date.weekday()) {
            return None;
        }
        // Compatible disambiguation: a start in a gap moves forward, a
        // repeated start takes the first occurrence.
        let start = date
            .to_datetime(self.start)
            .to_zoned_datetime(self.tz.clone())
            .ok()?
            .timestamp();
        let end = start.checked_add(self.duration).ok()?;
        Some((start, end))
    }

    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.current(at).is_some()
    }

    /// The opening that contains `at`, if any.
    pub fn current(&self, at: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let local: ZonedDateTime = at.to_zoned_datetime(self.tz.clone());
        let back = self.duration.as_secs().div_euclid(86_400) + 1;
        let today = local.date();
        (0..=back)
            .filter_map(|n| today.checked_sub(jiff::Span::new().days(n)).ok())
            .find_map(|d| {
                let (start, end) = self.opening_on(d)?;
                (start <= at && at < end).then_some((start, end))
            })
    }

    /// The next opening that starts after `at` (within eight days).
    pub fn next_opening(&self, at: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let today = at.to_zoned_datetime(self.tz.clone()).date();
        (0..=8)
            .filter_map(|n| today.checked_add(jiff::Span::new().days(n)).ok())
            .find_map(|d| {
                let (start, end) = self.opening_on(d)?;
                (start > at).then_some((start, end))
            })
    }
}

fn parse_hh_mm(text: &str) -> Option<Time> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

/// Whether installing (or restarting) is allowed at `at`: inside any of the
/// windows, or anywhere once the deadline has passed. No windows means any
/// time.
pub fn may_install(at: Timestamp, windows: &[Schedule], deadline: Option<Timestamp>) -> bool {
    deadline.is_some_and(|d| at >= d) || windows.is_empty() || windows.iter().any(|w| w.is_open(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectId;

    fn window(tz: &str, start: &str, minutes: u32, days: &[&str]) -> Schedule {
        Schedule::new(&MaintenanceWindow {
            id: ObjectId::new("w").unwrap(),
            name: "w".into(),
            time_zone: tz.into(),
            start: start.into(),
            duration_minutes: minutes,
            days: days.iter().map(|d| d.to_string()).collect(),
            overridable: Default::default(),
        })
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn crosses_midnight_in_its_zone() {
        // 22:00-02:00 Berlin time, Fridays only (CET is UTC+1 in January).
        let w = window("Europe/Berlin", "22:00", 240, &["fri"]);
        assert!(!w.is_open(at("2026-01-09T20:59:00Z")));
        assert!(w.is_open(at("2026-01-09T21:00:00Z")));
        assert!(
            w.is_open(at("2026-01-10T00:59:59Z")),
            "Saturday 01:59 local, still Friday's window"
        );
        assert!(!w.is_open(at("2026-01-10T01:00:00Z")));
        assert!(
            !w.is_open(at("2026-01-10T21:30:00Z")),
            "Saturday evening is not a window day"
        );
        assert_eq!(
            w.next_opening(at("2026-01-10T12:00:00Z")).unwrap().0,
            at("2026-01-16T21:00:00Z")
        );
    }

    #[test]
    fn daylight_saving_both_ways() {
        // Berlin springs forward on 2026-03-29 at 02:00 -> 03:00: a 02:30 start
        // does not exist that day and opens at 03:30 CEST (01:30 UTC).
        let w = window("Europe/Berlin", "02:30", 60, &[]);
        assert!(!w.is_open(at("2026-03-29T01:10:00Z")));
        assert_eq!(
            w.current(at("2026-03-29T01:40:00Z")).unwrap(),
            (at("2026-03-29T01:30:00Z"), at("2026-03-29T02:30:00Z"))
        );
        assert!(
            w.is_open(at("2026-03-28T01:45:00Z")),
            "the day before: 02:30 CET is 01:30 UTC"
        );
        // It falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice,
        // the window opens the first time (CEST, 00:30 UTC) and lasts an hour.
        assert_eq!(
            w.current(at("2026-10-25T00:45:00Z")).unwrap(),
            (at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z"))
        );
        assert!(
            !w.is_open(at("2026-10-25T01:45:00Z")),
            "the second 02:30 does not open it again"
        );
        // An evening window keeps its local time across the change.
        let evening = window("America/New_York", "23:00", 120, &[]);
        assert!(evening.is_open(at("2026-03-08T04:30:00Z")), "23:30 EST on Mar 7");
        assert!(evening.is_open(at("2026-03-09T03:30:00Z")), "23:30 EDT on Mar 8");
    }

    #[test]
    fn deadline_and_no_windows() {
        let w = window("UTC", "01:00", 60, &[]);
        let noon = at("2026-06-01T12:00:00Z");
        assert!(!may_install(noon, std::slice::from_ref(&w), None));
        assert!(may_install(
            noon,
            std::slice::from_ref(&w),
            Some(at("2026-06-01T11:00:00Z"))
        ));
        assert!(!may_install(
            noon,
            std::slice::from_ref(&w),
            Some(at("2026-06-02T00:00:00Z"))
        ));
        assert!(may_install(noon, &[], None));
    }

    #[test]
    fn bad_windows_name_the_field() {
        let mut m = MaintenanceWindow {
            id: ObjectId::new("patch-night").unwrap(),
            name: "n".into(),
            time_zone: "Mars/Olympus".into(),
            start: "22:00".into(),
            duration_minutes: 60,
            days: vec![],
            overridable: Default::default(),
        };
        assert_eq!(
            Schedule::new(&m).unwrap_err().to_string(),
            "maintenance window patch-night: time_zone \"Mars/Olympus\" is not a known IANA time zone"
        );
        m.time_zone = "Europe/Paris".into();
        m.start = "25:00".into();
        assert!(matches!(Schedule::new(&m), Err(WindowError::Start { .. })));
        m.start = "21:15".into();
        m.days = vec!["funday".into()];
        assert!(matches!(Schedule::new(&m), Err(WindowError::Day { .. })));
        m.days = vec![];
        m.duration_minutes = 0;
        assert!(matches!(Schedule::new(&m), Err(WindowError::Duration { .. })));
    }
}
