//! Local time and provisional working-day deadlines.
//!
//! Routing promises a deadline when it decides, counting Monday to Friday in the city's local
//! time (a fixed UTC offset: Chinese cities keep one all year). Holidays and make-up working
//! days are supervision's calendar, which is authoritative: events carry the time limit in
//! working days and the clock's start, so supervision recounts on its own calendar.

use chrono::{Datelike, Duration, FixedOffset, NaiveTime, Offset, TimeZone, Timelike};

use crate::domain::Weekday;
use minqing_kit::time::{Micros, from_micros};

/// The city's local time.
#[derive(Debug, Clone, Copy)]
pub struct LocalTime {
    offset: FixedOffset,
}

impl LocalTime {
    /// Local time at `minutes` east of UTC (clamped to ±18 h).
    pub fn new(offset_minutes: i32) -> Self {
        let seconds = offset_minutes.clamp(-18 * 60 + 1, 18 * 60 - 1) * 60;
        Self {
            offset: FixedOffset::east_opt(seconds).unwrap_or_else(|| chrono::Utc.fix()),
        }
    }

    /// The weekday and minutes after local midnight of `at`.
    pub fn weekday_minutes(&self, at: Micros) -> (Weekday, u32) {
        let local = from_micros(at).with_timezone(&self.offset);
        (
            Weekday::from_chrono(local.weekday()),
            local.hour() * 60 + local.minute(),
        )
    }

    /// The end of the local day of `at` (23:59:59).
    pub fn end_of_day(&self, at: Micros) -> Micros {
        let local = from_micros(at).with_timezone(&self.offset);
        let end = local
            .date_naive()
            .and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default());
        self.offset
            .from_local_datetime(&end)
            .single()
            .map_or(at, |t| t.timestamp_micros())
    }

    /// `days` working days (Monday to Friday) after `from`, at the same local time of day;
    /// 0 is the end of `from`'s local day (done on the spot). A start on a weekend counts
    /// from the following Monday's start.
    pub fn add_working_days(&self, from: Micros, days: u32) -> Micros {
        if days == 0 {
            return self.end_of_day(from);
        }
        let mut t = from_micros(from).with_timezone(&self.offset);
        if is_weekend(t.weekday()) {
            while is_weekend(t.weekday()) {
                t += Duration::days(1);
            }
            let start = t
                .date_naive()
                .and_time(NaiveTime::from_hms_opt(0, 0, 0).unwrap_or_default());
            if let Some(s) = self.offset.from_local_datetime(&start).single() {
                t = s;
            }
        }
        let mut left = days;
        while left > 0 {
            t += Duration::days(1);
            if !is_weekend(t.weekday()) {
                left -= 1;
            }
        }
        t.timestamp_micros()
    }
}

fn is_weekend(d: chrono::Weekday) -> bool {
    matches!(d, chrono::Weekday::Sat | chrono::Weekday::Sun)
}

/// Parses "HH:MM" into minutes after midnight.
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Minutes after midnight as "HH:MM".
pub fn format_hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60 % 24, minutes % 60)
}

/// Whether `minute` falls in `[start, end)`, wrapping past midnight when `end <= start`.
pub fn in_window(minute: u32, start: u32, end: u32) -> bool {
    if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Micros {
        // Local (UTC+8) wall time to micros.
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .timestamp_micros()
            - 8 * 3_600_000_000
    }

    #[test]
    fn working_days_skip_weekends() {
        let lt = LocalTime::new(480);
        // Thursday 2026-11-26 10:00 + 3 working days = Tuesday 2026-12-01 10:00.
        assert_eq!(
            lt.add_working_days(at(2026, 11, 26, 10, 0), 3),
            at(2026, 12, 1, 10, 0)
        );
        // Saturday counts from Monday's start: + 1 = Tuesday 00:00.
        assert_eq!(
            lt.add_working_days(at(2026, 11, 28, 15, 0), 1),
            at(2026, 12, 1, 0, 0)
        );
        // 0 = end of the same local day.
        assert_eq!(
            lt.add_working_days(at(2026, 11, 26, 10, 0), 0),
            at(2026, 11, 26, 23, 59) + 59_000_000
        );
    }

    #[test]
    fn local_weekday_and_minutes() {
        let lt = LocalTime::new(480);
        // 2026-11-23 is a Monday; 01:00 UTC is 09:00 local.
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 1, 0, 0)
            .single()
            .unwrap()
            .timestamp_micros();
        assert_eq!(lt.weekday_minutes(t), (Weekday::Monday, 9 * 60));
    }

    #[test]
    fn hhmm_and_windows() {
        assert_eq!(parse_hhmm("08:30"), Some(510));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("8:30"), None);
        assert_eq!(format_hhmm(510), "08:30");
        assert!(in_window(23 * 60, 22 * 60, 6 * 60));
        assert!(in_window(60, 22 * 60, 6 * 60));
        assert!(!in_window(12 * 60, 22 * 60, 6 * 60));
        assert!(in_window(9 * 60, 8 * 60, 18 * 60));
    }
}
