//! The working-day calendar: which local dates are worked (weekdays, less public holidays,
//! plus make-up working days), the working hours of a worked day, and the pure arithmetic
//! every deadline is counted with. A calendar belongs to a city; a case's city is its
//! district code's first four digits (China's administrative codes nest that way).

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use minqing_kit::time::{Micros, from_micros};

/// The most days any count walks before giving up (ten years): a calendar with no working
/// day in reach must not loop for ever.
const MAX_DAYS: i64 = 3_660;
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// What a special day is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    /// A public holiday: no work even on a weekday.
    Holiday,
    /// A make-up working day: work even on a weekend.
    Workday,
}

/// A day that is not what its weekday says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Special {
    /// Holiday or make-up day.
    pub kind: DayKind,
    /// What it is.
    pub description: String,
}

/// A span of working time, in minutes after local midnight, `start < end <= 1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First working minute.
    pub start: u32,
    /// The minute work stops.
    pub end: u32,
}

impl Span {
    /// Parses "HH:MM-HH:MM".
    pub fn parse(text: &str) -> Option<Span> {
        let (a, b) = text.split_once('-')?;
        let span = Span {
            start: parse_hhmm(a.trim())?,
            end: parse_hhmm(b.trim())?,
        };
        (span.start < span.end).then_some(span)
    }

    /// Minutes in it.
    pub fn minutes(&self) -> u32 {
        self.end - self.start
    }
}

/// "HH:MM" (24:00 allowed as the end of the day) to minutes after midnight.
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

/// Minutes after midnight as "HH:MM".
pub fn format_hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Checks working spans: one to eight, each valid, in order, not overlapping.
pub fn check_spans(spans: &[Span]) -> Result<(), String> {
    if spans.is_empty() || spans.len() > 8 {
        return Err("must have 1 to 8 spans".into());
    }
    for (i, s) in spans.iter().enumerate() {
        if s.start >= s.end || s.end > 24 * 60 {
            return Err(format!(
                "span {i} must start before it ends, within the day"
            ));
        }
        if i > 0 && spans[i - 1].end > s.start {
            return Err(format!("span {i} overlaps or precedes the one before it"));
        }
    }
    Ok(())
}

/// A city's working-day calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    /// The city code, e.g. "6201".
    pub city: String,
    /// The city's name, for people.
    pub display_name: String,
    /// Offset from UTC in minutes.
    pub utc_offset_minutes: i32,
    /// The working hours of a worked day, in order.
    pub hours: Vec<Span>,
    /// Holidays and make-up days.
    pub days: BTreeMap<NaiveDate, Special>,
}

impl Calendar {
    /// A calendar with ordinary weeks (Monday to Friday) and no special days.
    pub fn plain(city: &str, utc_offset_minutes: i32, hours: Vec<Span>) -> Self {
        Self {
            city: city.to_string(),
            display_name: city.to_string(),
            utc_offset_minutes,
            hours,
            days: BTreeMap::new(),
        }
    }

    fn offset(&self) -> FixedOffset {
        FixedOffset::east_opt(self.utc_offset_minutes.clamp(-1079, 1079) * 60)
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset is valid"))
    }

    /// The local date of `at`.
    pub fn local_date(&self, at: Micros) -> NaiveDate {
        from_micros(at).with_timezone(&self.offset()).date_naive()
    }

    /// The instant of `minute` after local midnight on `date`.
    pub fn instant(&self, date: NaiveDate, minute: u32) -> Micros {
        let midnight = date.and_time(NaiveTime::MIN);
        let start = self
            .offset()
            .from_local_datetime(&midnight)
            .single()
            .map_or(0, |t| t.timestamp_micros());
        start + i64::from(minute) * MICROS_PER_MINUTE
    }

    /// Whether `date` is worked.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        match self.days.get(&date) {
            Some(s) => s.kind == DayKind::Workday,
            None => !matches!(date.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun),
        }
    }

    fn close_of(&self) -> u32 {
        self.hours.last().map_or(24 * 60, |s| s.end)
    }

    /// The end of working hours on the `n`-th working day after the day of `from`; for 0,
    /// the end of `from`'s working day, or of the next working day when `from` is on a day
    /// off or after hours.
    pub fn add_working_days(&self, from: Micros, n: u32) -> Micros {
        let mut date = self.local_date(from);
        let close = self.instant(date, self.close_of());
        let mut left = i64::from(n);
        if n == 0 && !(self.is_working_day(date) && from < close) {
            left = 1;
        }
        if left == 0 {
            return close;
        }
        for _ in 0..MAX_DAYS {
            date = date.succ_opt().unwrap_or(date);
            if self.is_working_day(date) {
                left -= 1;
                if left == 0 {
                    return self.instant(date, self.close_of());
                }
            }
        }
        self.instant(date, self.close_of())
    }

    /// Working days after the day of `from` up to and including the day of `to` (0 when
    /// `to` is not after `from`'s day).
    pub fn working_days_between(&self, from: Micros, to: Micros) -> i32 {
        let (mut date, end) = (self.local_date(from), self.local_date(to));
        let mut count = 0;
        for _ in 0..MAX_DAYS {
            if date >= end {
                break;
            }
            date = date.succ_opt().unwrap_or(end);
            if self.is_working_day(date) {
                count += 1;
            }
        }
        count
    }

    /// Working time between `from` and `to` in microseconds (0 when `to <= from`).
    pub fn working_micros(&self, from: Micros, to: Micros) -> i64 {
        if to <= from {
            return 0;
        }
        let (mut date, last) = (self.local_date(from), self.local_date(to));
        let mut total = 0;
        for _ in 0..MAX_DAYS {
            if self.is_working_day(date) {
                for s in &self.hours {
                    let a = self.instant(date, s.start).max(from);
                    let b = self.instant(date, s.end).min(to);
                    total += (b - a).max(0);
                }
            }
            if date >= last {
                break;
            }
            date = date.succ_opt().unwrap_or(last);
        }
        total
    }

    /// Working minutes between `from` and `to`, rounded down.
    pub fn working_minutes(&self, from: Micros, to: Micros) -> i64 {
        self.working_micros(from, to) / MICROS_PER_MINUTE
    }

    /// The instant `minutes` working minutes after `from` (or before it, when negative).
    /// Moving forward from a time off lands inside the next working span; moving back from
    /// one lands inside the last span before it.
    pub fn shift_working_minutes(&self, from: Micros, minutes: i64) -> Micros {
        let mut left = minutes.abs() * MICROS_PER_MINUTE;
        let forward = minutes >= 0;
        let mut date = self.local_date(from);
        for _ in 0..MAX_DAYS {
            if self.is_working_day(date) {
                let spans: Vec<&Span> = if forward {
                    self.hours.iter().collect()
                } else {
                    self.hours.iter().rev().collect()
                };
                for s in spans {
                    let (a, b) = (self.instant(date, s.start), self.instant(date, s.end));
                    if forward {
                        let a = a.max(from);
                        if b <= a {
                            continue;
                        }
                        if b - a >= left {
                            return a + left;
                        }
                        left -= b - a;
                    } else {
                        let b = b.min(from);
                        if b <= a {
                            continue;
                        }
                        if b - a >= left {
                            return b - left;
                        }
                        left -= b - a;
                    }
                }
            }
            date = if forward {
                date.succ_opt().unwrap_or(date)
            } else {
                date.pred_opt().unwrap_or(date)
            };
        }
        from + if forward { left } else { -left }
    }

    /// Adds, changes and removes special days; `hours` replaces the working hours when
    /// given.
    pub fn edit(
        &mut self,
        hours: Option<Vec<Span>>,
        upsert: impl IntoIterator<Item = (NaiveDate, Special)>,
        remove: impl IntoIterator<Item = NaiveDate>,
    ) {
        if let Some(h) = hours {
            self.hours = h;
        }
        for d in remove {
            self.days.remove(&d);
        }
        self.days.extend(upsert);
    }
}

/// The calendar file: one `[[calendar]]` per city.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    calendar: Vec<FileCalendar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCalendar {
    city: String,
    #[serde(default)]
    display_name: String,
    utc_offset_minutes: i32,
    working_hours: Vec<String>,
    #[serde(default)]
    holidays: Vec<FileHoliday>,
    #[serde(default)]
    workdays: Vec<FileWorkday>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHoliday {
    from: NaiveDate,
    #[serde(default)]
    to: Option<NaiveDate>,
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkday {
    date: NaiveDate,
    description: String,
}

/// The built-in sample: China's public holidays and make-up working days for 2026 and 2027.
pub const SAMPLE: &str = include_str!("../data/calendar.toml");

/// Parses a calendar file; every problem is reported with the city it is in.
pub fn parse_file(text: &str) -> Result<Vec<Calendar>, String> {
    let file: File = toml::from_str(text).map_err(|e| format!("calendar file: {e}"))?;
    let mut out: Vec<Calendar> = Vec::new();
    for c in file.calendar {
        let here = |m: String| format!("calendar {}: {m}", c.city);
        if c.city.is_empty() || c.city.len() > 12 || !c.city.bytes().all(|b| b.is_ascii_digit()) {
            return Err(here("city must be a code of 1 to 12 digits".into()));
        }
        if out.iter().any(|o| o.city == c.city) {
            return Err(here("appears twice".into()));
        }
        if !(-720..=840).contains(&c.utc_offset_minutes) {
            return Err(here("utc_offset_minutes must be -720 to 840".into()));
        }
        let hours = c
            .working_hours
            .iter()
            .map(|s| Span::parse(s).ok_or_else(|| here(format!("bad working span {s:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        check_spans(&hours).map_err(|e| here(format!("working_hours {e}")))?;
        let mut cal = Calendar::plain(&c.city, c.utc_offset_minutes, hours);
        if !c.display_name.is_empty() {
            cal.display_name = c.display_name.clone();
        }
        for h in &c.holidays {
            let to = h.to.unwrap_or(h.from);
            if to < h.from || (to - h.from).num_days() > 31 {
                return Err(here(format!(
                    "holiday {} must end 0 to 31 days after it starts",
                    h.from
                )));
            }
            let mut d = h.from;
            while d <= to {
                let special = Special {
                    kind: DayKind::Holiday,
                    description: h.description.clone(),
                };
                if cal.days.insert(d, special).is_some() {
                    return Err(here(format!("{d} is given twice")));
                }
                d += Duration::days(1);
            }
        }
        for w in &c.workdays {
            let special = Special {
                kind: DayKind::Workday,
                description: w.description.clone(),
            };
            if cal.days.insert(w.date, special).is_some() {
                return Err(here(format!("{} is given twice", w.date)));
            }
        }
        out.push(cal);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanzhou() -> Calendar {
        parse_file(SAMPLE)
            .unwrap()
            .into_iter()
            .find(|c| c.city == "6201")
            .unwrap()
    }

    fn at(cal: &Calendar, y: i32, m: u32, d: u32, hh: u32, mm: u32) -> Micros {
        cal.instant(NaiveDate::from_ymd_opt(y, m, d).unwrap(), hh * 60 + mm)
    }

    #[test]
    fn the_sample_parses_with_holidays_and_make_up_days() {
        let cal = lanzhou();
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        // National Day 2026 is off though Thursday; Sunday 20 September is worked.
        assert!(!cal.is_working_day(d(2026, 10, 1)));
        assert!(cal.is_working_day(d(2026, 9, 20)));
        // An ordinary weekend and weekday.
        assert!(!cal.is_working_day(d(2026, 11, 28)));
        assert!(cal.is_working_day(d(2026, 11, 30)));
    }

    #[test]
    fn deadlines_skip_weekends_and_holidays_and_count_make_up_days() {
        let cal = lanzhou();
        // Monday 23 Nov 2026, 10:00 + 3 working days = Thursday 26 Nov at close.
        let from = at(&cal, 2026, 11, 23, 10, 0);
        assert_eq!(
            cal.add_working_days(from, 3),
            at(&cal, 2026, 11, 26, 17, 30)
        );
        // Wednesday 30 Sep 2026 + 1: the National Day holidays run to 7 Oct, so the next
        // working days are Thursday 8, Friday 9, then the make-up Saturday 10 Oct.
        let from = at(&cal, 2026, 9, 30, 10, 0);
        assert_eq!(cal.add_working_days(from, 1), at(&cal, 2026, 10, 8, 17, 30));
        assert_eq!(
            cal.add_working_days(from, 3),
            at(&cal, 2026, 10, 10, 17, 30)
        );
        // 0 days: the end of today, or of the next working day when today is off.
        assert_eq!(cal.add_working_days(from, 0), at(&cal, 2026, 9, 30, 17, 30));
        let saturday = at(&cal, 2026, 11, 28, 10, 0);
        assert_eq!(
            cal.add_working_days(saturday, 0),
            at(&cal, 2026, 11, 30, 17, 30)
        );
        let evening = at(&cal, 2026, 11, 23, 19, 0);
        assert_eq!(
            cal.add_working_days(evening, 0),
            at(&cal, 2026, 11, 24, 17, 30)
        );
    }

    #[test]
    fn working_minutes_count_only_working_hours_on_working_days() {
        let cal = lanzhou();
        // Friday 11:00 to Monday 10:00: 1 h + 4 h (Friday) + 1 h (Monday).
        let from = at(&cal, 2026, 11, 27, 11, 0);
        let to = at(&cal, 2026, 11, 30, 10, 0);
        assert_eq!(cal.working_minutes(from, to), 6 * 60);
        assert_eq!(cal.working_minutes(to, from), 0);
        assert_eq!(cal.working_days_between(from, to), 1);
        // Lunch does not count.
        let a = at(&cal, 2026, 11, 30, 11, 30);
        let b = at(&cal, 2026, 11, 30, 14, 0);
        assert_eq!(cal.working_minutes(a, b), 60);
    }

    #[test]
    fn shifting_by_working_minutes_round_trips_and_skips_time_off() {
        let cal = lanzhou();
        let due = at(&cal, 2026, 11, 30, 10, 0);
        // Four working hours before Monday 10:00: one on Monday, three on Friday afternoon.
        let warn = cal.shift_working_minutes(due, -240);
        assert_eq!(warn, at(&cal, 2026, 11, 27, 14, 30));
        assert_eq!(cal.working_minutes(warn, due), 240);
        // Forward from Friday 17:00 by 60 minutes: Monday 09:30.
        let fri = at(&cal, 2026, 11, 27, 17, 0);
        assert_eq!(
            cal.shift_working_minutes(fri, 60),
            at(&cal, 2026, 11, 30, 9, 30)
        );
    }

    #[test]
    fn a_calendar_without_working_days_ends_instead_of_looping() {
        let mut cal = Calendar::plain(
            "1",
            480,
            vec![Span {
                start: 540,
                end: 600,
            }],
        );
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        for i in 0..MAX_DAYS + 10 {
            let d = start + Duration::days(i);
            cal.days.insert(
                d,
                Special {
                    kind: DayKind::Holiday,
                    description: "off".into(),
                },
            );
        }
        let from = cal.instant(start, 0);
        assert!(cal.add_working_days(from, 1) > from);
        assert!(cal.shift_working_minutes(from, 10) > from);
    }

    #[test]
    fn bad_files_are_refused_with_the_city() {
        let bad = r#"
[[calendar]]
city = "6201"
utc_offset_minutes = 480
working_hours = ["12:00-09:00"]
"#;
        assert!(parse_file(bad).unwrap_err().contains("6201"));
        let twice = r#"
[[calendar]]
city = "6201"
utc_offset_minutes = 480
working_hours = ["09:00-12:00"]
holidays = [{ from = "2026-01-01", description = "a" }]
workdays = [{ date = "2026-01-01", description = "b" }]
"#;
        assert!(parse_file(twice).unwrap_err().contains("twice"));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("9:00"), None);
        assert_eq!(format_hhmm(570), "09:30");
    }
}
