//! Local time as availability and records need it: the city's fixed UTC offset, ISO weeks
//! starting on Monday, and how many minutes of a time window a volunteer is free.
//!
//! Weekly windows are local wall-clock times; the city has one fixed offset (China: UTC+8,
//! no daylight saving), so a plain offset is exact and no time-zone database is needed.

use crate::domain::Availability;
use minqing_kit::time::Micros;

/// Minutes in a week.
pub const WEEK_MINUTES: i64 = 7 * 1440;
const MICROS_PER_MINUTE: i64 = 60_000_000;
/// 1970-01-01 was a Thursday: three days after the Monday that starts its week.
const EPOCH_WEEKDAY_OFFSET: i64 = 3 * 1440;

/// The city's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    /// Offset from UTC in minutes.
    pub offset_minutes: i64,
}

impl Calendar {
    /// A calendar `offset_minutes` ahead of UTC.
    pub fn new(offset_minutes: i32) -> Self {
        Self {
            offset_minutes: i64::from(offset_minutes),
        }
    }

    /// Local minutes since the epoch, rounded down.
    pub fn local_minute(&self, t: Micros) -> i64 {
        t.div_euclid(MICROS_PER_MINUTE) + self.offset_minutes
    }

    /// Local minutes since the epoch, rounded up.
    fn local_minute_ceil(&self, t: Micros) -> i64 {
        -(-t).div_euclid(MICROS_PER_MINUTE) + self.offset_minutes
    }

    /// The ISO week (a number counting Monday-to-Sunday local weeks) holding `t`.
    pub fn week(&self, t: Micros) -> i64 {
        (self.local_minute(t) + EPOCH_WEEKDAY_OFFSET).div_euclid(WEEK_MINUTES)
    }

    /// When `week` starts (local Monday midnight), as a UTC instant.
    pub fn week_start(&self, week: i64) -> Micros {
        (week * WEEK_MINUTES - EPOCH_WEEKDAY_OFFSET - self.offset_minutes) * MICROS_PER_MINUTE
    }

    /// Local midnight starting the day holding `t`, as a UTC instant.
    pub fn day_start(&self, t: Micros) -> Micros {
        let day = self.local_minute(t).div_euclid(1440);
        (day * 1440 - self.offset_minutes) * MICROS_PER_MINUTE
    }

    /// The local calendar date holding `t`.
    pub fn date(&self, t: Micros) -> chrono::NaiveDate {
        let day = self.local_minute(t).div_euclid(1440);
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(day)))
            .unwrap_or_default()
    }

    /// Local midnight starting `date`, as a UTC instant.
    pub fn date_start(&self, date: chrono::NaiveDate) -> Micros {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let day = (date - epoch).num_days();
        (day * 1440 - self.offset_minutes) * MICROS_PER_MINUTE
    }

    /// Minutes within [start, end) that `availability` leaves free: the weekly windows plus
    /// exceptions marked available, minus exceptions marked unavailable (which win).
    pub fn free_minutes(&self, availability: &Availability, start: Micros, end: Micros) -> u32 {
        let s = self.local_minute_ceil(start);
        let e = self.local_minute(end);
        if e <= s {
            return 0;
        }
        let exceptions: Vec<(i64, i64, bool)> = availability
            .exceptions
            .iter()
            .map(|x| {
                (
                    self.local_minute(x.start).max(s),
                    self.local_minute_ceil(x.end).min(e),
                    x.available,
                )
            })
            .filter(|(a, b, _)| a < b)
            .collect();
        if exceptions.is_empty() {
            // The common case: no exception touches the window; sum the weekly overlaps.
            let mut total = 0i64;
            let mut week = s - (s + EPOCH_WEEKDAY_OFFSET).rem_euclid(WEEK_MINUTES);
            while week < e {
                for w in &availability.weekly {
                    let a = week + i64::from(w.day - 1) * 1440 + i64::from(w.start);
                    let b = week + i64::from(w.day - 1) * 1440 + i64::from(w.end);
                    total += (b.min(e) - a.max(s)).max(0);
                }
                week += WEEK_MINUTES;
            }
            return total.clamp(0, i64::from(u32::MAX)) as u32;
        }
        let mut free = self.weekly_intervals(availability, s, e);
        free.extend(exceptions.iter().filter(|x| x.2).map(|x| (x.0, x.1)));
        let mut free = merge(free);
        for (a, b, _) in exceptions.iter().filter(|x| !x.2) {
            free = subtract(&free, *a, *b);
        }
        let total: i64 = free.iter().map(|(a, b)| b - a).sum();
        total.clamp(0, i64::from(u32::MAX)) as u32
    }

    fn weekly_intervals(&self, availability: &Availability, s: i64, e: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut week = s - (s + EPOCH_WEEKDAY_OFFSET).rem_euclid(WEEK_MINUTES);
        while week < e {
            for w in &availability.weekly {
                let a = (week + i64::from(w.day - 1) * 1440 + i64::from(w.start)).max(s);
                let b = (week + i64::from(w.day - 1) * 1440 + i64::from(w.end)).min(e);
                if a < b {
                    out.push((a, b));
                }
            }
            week += WEEK_MINUTES;
        }
        out
    }
}

fn merge(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn subtract(v: &[(i64, i64)], a: i64, b: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(v.len() + 1);
    for &(x, y) in v {
        if y <= a || x >= b {
            out.push((x, y));
            continue;
        }
        if x < a {
            out.push((x, a));
        }
        if y > b {
            out.push((b, y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AvailabilityException, WeeklyWindow};
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Micros {
        // Local (UTC+8) wall-clock time to a UTC instant.
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .timestamp_micros()
            - 8 * 3_600_000_000
    }

    fn weekday_evenings() -> Availability {
        Availability {
            weekly: (1..=5)
                .map(|day| WeeklyWindow {
                    day,
                    start: 18 * 60,
                    end: 21 * 60,
                })
                .collect(),
            exceptions: vec![],
        }
    }

    #[test]
    fn weeks_start_on_local_monday() {
        let cal = Calendar::new(480);
        // 2026-11-23 is a Monday.
        let monday = at(2026, 11, 23, 0, 0);
        assert_eq!(cal.week_start(cal.week(monday)), monday);
        assert_eq!(cal.week(monday - 1), cal.week(monday) - 1);
        assert_eq!(cal.week(at(2026, 11, 29, 23, 59)), cal.week(monday));
        assert_eq!(
            cal.day_start(at(2026, 11, 25, 13, 5)),
            at(2026, 11, 25, 0, 0)
        );
        assert_eq!(
            cal.date(at(2026, 11, 25, 23, 59)),
            chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
        );
        assert_eq!(
            cal.date_start(chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()),
            at(2026, 11, 25, 0, 0)
        );
    }

    #[test]
    fn free_minutes_follow_the_weekly_pattern() {
        let cal = Calendar::new(480);
        let av = weekday_evenings();
        // Wednesday 17:00 to 20:00: two hours of the evening window.
        assert_eq!(
            cal.free_minutes(&av, at(2026, 11, 25, 17, 0), at(2026, 11, 25, 20, 0)),
            120
        );
        // A whole week: five evenings.
        assert_eq!(
            cal.free_minutes(&av, at(2026, 11, 23, 0, 0), at(2026, 11, 30, 0, 0)),
            5 * 180
        );
        // Saturday: nothing.
        assert_eq!(
            cal.free_minutes(&av, at(2026, 11, 28, 8, 0), at(2026, 11, 28, 22, 0)),
            0
        );
        // Across a week boundary: Sunday to Tuesday night.
        assert_eq!(
            cal.free_minutes(&av, at(2026, 11, 29, 0, 0), at(2026, 12, 2, 0, 0)),
            2 * 180
        );
    }

    #[test]
    fn exceptions_add_and_remove_time_and_unavailable_wins() {
        let cal = Calendar::new(480);
        let mut av = weekday_evenings();
        av.exceptions = vec![
            AvailabilityException {
                start: at(2026, 11, 25, 0, 0),
                end: at(2026, 11, 26, 0, 0),
                available: false,
                note: "hospital".into(),
            },
            AvailabilityException {
                start: at(2026, 11, 28, 9, 0),
                end: at(2026, 11, 28, 12, 0),
                available: true,
                note: "extra Saturday".into(),
            },
            AvailabilityException {
                start: at(2026, 11, 28, 11, 0),
                end: at(2026, 11, 28, 11, 30),
                available: false,
                note: "lunch".into(),
            },
        ];
        let week = cal.free_minutes(&av, at(2026, 11, 23, 0, 0), at(2026, 11, 30, 0, 0));
        assert_eq!(week, 4 * 180 + 150);
        assert_eq!(
            cal.free_minutes(&av, at(2026, 11, 25, 17, 0), at(2026, 11, 25, 22, 0)),
            0
        );
    }
}
