//! Periods in city time (China Standard Time, UTC+8, no daylight saving): days as YYYYMMDD
//! and months as YYYYMM, so a range of either is a range of integers.

use chrono::{Datelike, Duration, NaiveDate};

use minqing_proto::minqing::supervision::v1::{Period, PeriodKind};

/// The city's offset from UTC, in seconds.
pub const CITY_OFFSET_SECS: i64 = 8 * 3600;

/// The city day of a time in microseconds, as YYYYMMDD.
pub fn day_of(micros: i64) -> i64 {
    let secs = micros.div_euclid(1_000_000) + CITY_OFFSET_SECS;
    let date = chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.date_naive())
        .unwrap_or_default();
    ymd(date)
}

/// YYYYMMDD of a date.
pub fn ymd(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

/// The first microsecond of a city day.
pub fn start_micros(d: NaiveDate) -> i64 {
    (d.and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp()
        - CITY_OFFSET_SECS)
        * 1_000_000
}

/// A period resolved to its first and last day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Day or week periods read day rows; the others month rows.
    pub daily: bool,
    /// First day.
    pub first: NaiveDate,
    /// Last day.
    pub last: NaiveDate,
}

impl Span {
    /// The rollup grain and the inclusive range of periods to read.
    pub fn rows(&self) -> (&'static str, i64, i64) {
        if self.daily {
            ("D", ymd(self.first), ymd(self.last))
        } else {
            ("M", ymd(self.first) / 100, ymd(self.last) / 100)
        }
    }

    /// [start, end) in microseconds.
    pub fn micros(&self) -> (i64, i64) {
        (
            start_micros(self.first),
            start_micros(self.last + Duration::days(1)),
        )
    }
}

/// Checks a period; `Err` says what is wrong with which sub-field.
pub fn parse(p: Option<&Period>) -> Result<Span, Vec<(&'static str, &'static str)>> {
    let Some(p) = p else {
        return Err(vec![("", "required")]);
    };
    let mut bad = Vec::new();
    let kind = PeriodKind::try_from(p.kind).unwrap_or(PeriodKind::Unspecified);
    if kind == PeriodKind::Unspecified {
        bad.push(("kind", "must be DAY, WEEK, MONTH, QUARTER or YEAR"));
    }
    let date = NaiveDate::parse_from_str(&p.date, "%Y-%m-%d")
        .ok()
        .filter(|d| (2000..=2100).contains(&d.year()));
    if date.is_none() {
        bad.push((
            "date",
            "must be a date \"YYYY-MM-DD\" between 2000 and 2100",
        ));
    }
    let (Some(d), false) = (date, !bad.is_empty()) else {
        return Err(bad);
    };
    let month_start = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d);
    let span = |first: NaiveDate, months: u32| {
        let last = first
            .checked_add_months(chrono::Months::new(months))
            .map(|n| n - Duration::days(1))
            .unwrap_or(first);
        Span {
            daily: false,
            first,
            last,
        }
    };
    Ok(match kind {
        PeriodKind::Day | PeriodKind::Unspecified => Span {
            daily: true,
            first: d,
            last: d,
        },
        PeriodKind::Week => {
            let first = d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
            Span {
                daily: true,
                first,
                last: first + Duration::days(6),
            }
        }
        PeriodKind::Month => span(month_start(d.year(), d.month()), 1),
        PeriodKind::Quarter => span(month_start(d.year(), (d.month0() / 3) * 3 + 1), 3),
        PeriodKind::Year => span(month_start(d.year(), 1), 12),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: PeriodKind, date: &str) -> Span {
        parse(Some(&Period {
            kind: kind as i32,
            date: date.into(),
        }))
        .unwrap()
    }

    #[test]
    fn periods_cover_their_calendar_span() {
        assert_eq!(
            p(PeriodKind::Week, "2026-11-29").rows(),
            ("D", 20261123, 20261129)
        );
        assert_eq!(
            p(PeriodKind::Month, "2026-02-10").rows(),
            ("M", 202602, 202602)
        );
        assert_eq!(
            p(PeriodKind::Quarter, "2026-08-10").rows(),
            ("M", 202607, 202609)
        );
        assert_eq!(
            p(PeriodKind::Year, "2026-08-10").rows(),
            ("M", 202601, 202612)
        );
        assert_eq!(
            p(PeriodKind::Day, "2026-08-10").rows(),
            ("D", 20260810, 20260810)
        );
    }

    #[test]
    fn days_are_city_days() {
        // 2026-11-29 17:00 UTC is already 2026-11-30 in the city.
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-29T17:00:00Z").unwrap();
        assert_eq!(day_of(t.timestamp_micros()), 20261130);
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(start_micros(d), t.timestamp_micros() - 3600 * 1_000_000);
    }

    #[test]
    fn bad_periods_name_their_fields() {
        let bad = parse(Some(&Period {
            kind: 0,
            date: "2026-13-01".into(),
        }))
        .unwrap_err();
        assert_eq!(bad.len(), 2);
        assert!(parse(None).is_err());
    }
}
