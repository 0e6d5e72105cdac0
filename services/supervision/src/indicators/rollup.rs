//! Rollups: each case adds its counts to one row per (grain, period, place, dimension). A
//! case counts in the city day and month in which it was received, at each of its places
//! (district, street, community, grid), once in total and once under each of its category,
//! unit and channel — so any place's figures for any period, whole or filtered on one
//! dimension, read a handful of rows (a year: twelve month rows per group).

use std::collections::HashMap;

use sqlx::Row;

use super::{facts::Facts, period};
use minqing_kit::{db::Tx, error::StoreError};
use minqing_proto::minqing::{supervision::v1 as pb, r#type::v1::Channel};

/// Upper bounds of the handling-time histogram's buckets, in hours (the last is open).
pub const BUCKETS: [i64; 19] = [
    1, 2, 4, 8, 12, 24, 36, 48, 72, 96, 120, 168, 240, 336, 504, 720, 1080, 1440, 2160,
];
/// Buckets, with the open last one.
pub const NBUCKETS: usize = BUCKETS.len() + 1;

/// Where a row counts: `grain` 'D' (period YYYYMMDD) or 'M' (YYYYMM); `dim` "" (all cases),
/// "category", "unit" or "channel", with its `value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// 'D' or 'M'.
    pub grain: &'static str,
    /// YYYYMMDD or YYYYMM.
    pub period: i64,
    /// A place code at any level.
    pub place: String,
    /// The dimension, "" for all cases.
    pub dim: &'static str,
    /// Its value.
    pub value: String,
}

/// The counts of a row (or of any sum of rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Received.
    pub received: i64,
    /// Withdrawn.
    pub withdrawn: i64,
    /// Answered.
    pub answered: i64,
    /// Answered on time.
    pub answered_on_time: i64,
    /// Resolved.
    pub resolved: i64,
    /// Overdue now.
    pub overdue: i64,
    /// Rated.
    pub rated: i64,
    /// Rated 4 or 5.
    pub satisfied: i64,
    /// Sum of ratings.
    pub rating_sum: i64,
    /// Sum of handling times, seconds.
    pub handling_sum: i64,
    /// Handling-time histogram.
    pub hist: [i64; NBUCKETS],
}

impl Counts {
    /// Adds `o` times `sign`.
    pub fn add(&mut self, o: &Counts, sign: i64) {
        self.received += sign * o.received;
        self.withdrawn += sign * o.withdrawn;
        self.answered += sign * o.answered;
        self.answered_on_time += sign * o.answered_on_time;
        self.resolved += sign * o.resolved;
        self.overdue += sign * o.overdue;
        self.rated += sign * o.rated;
        self.satisfied += sign * o.satisfied;
        self.rating_sum += sign * o.rating_sum;
        self.handling_sum += sign * o.handling_sum;
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a += sign * b;
        }
    }

    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    /// One case's counts.
    pub fn of(f: &Facts) -> Counts {
        let mut c = Counts {
            received: 1,
            withdrawn: i64::from(f.withdrawn),
            ..Counts::default()
        };
        if f.answer_time > 0 && !f.withdrawn {
            c.answered = 1;
            c.answered_on_time = i64::from(f.on_time);
            let secs = ((f.answer_time - f.receive_time) / 1_000_000).max(0);
            c.handling_sum = secs;
            c.hist[bucket(secs)] = 1;
        }
        c.resolved = i64::from(f.resolved && !f.withdrawn);
        c.overdue = i64::from(f.overdue && f.answer_time == 0 && !f.withdrawn);
        if f.rating > 0 {
            c.rated = 1;
            c.satisfied = i64::from(f.rating >= 4);
            c.rating_sum = i64::from(f.rating);
        }
        c
    }

    /// The figures these counts give.
    pub fn figures(&self) -> pb::Figures {
        let base = (self.received - self.withdrawn).max(0);
        let ratio = |n: i64, d: i64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        pb::Figures {
            received: self.received,
            withdrawn: self.withdrawn,
            answered: self.answered,
            answered_on_time: self.answered_on_time,
            resolved: self.resolved,
            overdue_now: self.overdue,
            rated: self.rated,
            satisfied: self.satisfied,
            response_rate: ratio(self.answered_on_time, base),
            resolution_rate: ratio(self.resolved, base),
            satisfaction_rate: ratio(self.satisfied, self.rated),
            mean_rating: ratio(self.rating_sum, self.rated),
            average_handling_seconds: if self.answered > 0 {
                self.handling_sum / self.answered
            } else {
                0
            },
            p90_handling_seconds: percentile(&self.hist, 0.9),
        }
    }
}

/// The bucket of a handling time.
pub fn bucket(secs: i64) -> usize {
    BUCKETS
        .iter()
        .position(|&h| secs < h * 3600)
        .unwrap_or(BUCKETS.len())
}

/// The `q` quantile from a histogram, interpolated linearly inside its bucket (the open
/// last bucket answers its lower bound).
pub fn percentile(hist: &[i64; NBUCKETS], q: f64) -> i64 {
    let n: i64 = hist.iter().sum();
    if n <= 0 {
        return 0;
    }
    let rank = (q * n as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, &count) in hist.iter().enumerate() {
        if count > 0 && seen + count >= rank {
            let low = if i == 0 { 0 } else { BUCKETS[i - 1] * 3600 };
            let Some(&high) = BUCKETS.get(i) else {
                return low;
            };
            let within = (rank - seen) as f64 / count as f64;
            return low + ((high * 3600 - low) as f64 * within).round() as i64;
        }
        seen += count;
    }
    0
}

/// A channel's name as used for the dimension's value ("CHANNEL_HOTLINE").
pub fn channel_name(channel: i32) -> String {
    Channel::try_from(channel)
        .unwrap_or(Channel::Unspecified)
        .as_str_name()
        .to_string()
}

/// Where one case counts, with its counts (nothing until intake's event has been read).
pub fn contribution(f: &Facts) -> Vec<(Key, Counts)> {
    if f.receive_time == 0 {
        return Vec::new();
    }
    let counts = Counts::of(f);
    let day = period::day_of(f.receive_time);
    let month = day / 100;
    let channel = channel_name(f.channel);
    let dims: [(&'static str, &str); 4] = [
        ("", ""),
        ("category", &f.category),
        ("unit", &f.unit),
        ("channel", &channel),
    ];
    let mut out = Vec::with_capacity(32);
    for (grain, period) in [("D", day), ("M", month)] {
        for place in [&f.district, &f.street, &f.community, &f.grid] {
            if place.is_empty() {
                continue;
            }
            for (dim, value) in dims {
                out.push((
                    Key {
                        grain,
                        period,
                        place: place.clone(),
                        dim,
                        value: value.to_string(),
                    },
                    counts,
                ));
            }
        }
    }
    out
}

/// Whether two states of a case count in the same rollup rows (see [`contribution`]).
fn same_rows(a: &Facts, b: &Facts) -> bool {
    (a.receive_time == 0) == (b.receive_time == 0)
        && period::day_of(a.receive_time) == period::day_of(b.receive_time)
        && a.district == b.district
        && a.street == b.street
        && a.community == b.community
        && a.grid == b.grid
        && a.category == b.category
        && a.unit == b.unit
        && a.channel == b.channel
}

/// Changes to rollup rows, gathered over a batch and written once.
#[derive(Debug, Default)]
pub struct Deltas(pub HashMap<Key, Counts>);

impl Deltas {
    /// Records that a case's facts went from `old` to `new`.
    ///
    /// Most events change a case's counts without moving it between rows (an answer, a
    /// rating) or change neither (a clustering, a reply queued): then the difference is added
    /// to the rows once, or nothing is done, instead of taking the old contribution away from
    /// every row and adding the new one (this was 3 % of the suite's CPU under load).
    pub fn change(&mut self, old: Option<&Facts>, new: &Facts) {
        if let Some(old) = old.filter(|old| same_rows(old, new)) {
            let mut diff = Counts::of(new);
            diff.add(&Counts::of(old), -1);
            if new.receive_time == 0 || diff.is_zero() {
                return;
            }
            for (k, _) in contribution(new) {
                self.0.entry(k).or_default().add(&diff, 1);
            }
            return;
        }
        if let Some(old) = old {
            for (k, c) in contribution(old) {
                self.0.entry(k).or_default().add(&c, -1);
            }
        }
        for (k, c) in contribution(new) {
            self.0.entry(k).or_default().add(&c, 1);
        }
    }

    /// Adds every non-zero delta to its row.
    pub async fn write(self, tx: &mut Tx) -> Result<usize, StoreError> {
        let mut rows: Vec<_> = self.0.into_iter().filter(|(_, c)| !c.is_zero()).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let cols = count_columns();
        let sets: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} = ind_rollup.{c} + excluded.{c}"))
            .collect();
        let (cols, sets) = (cols.join(", "), sets.join(", "));
        // Sorted, so that two writers take the rows' locks in the same order.
        minqing_kit::db::execute_rows(
            tx.conn(),
            5 + COUNT_COLUMNS.len() + NBUCKETS,
            rows.iter(),
            |(key, _)| 32 + key.place.len() + key.value.len() + 12 * NBUCKETS + 8 * 10,
            |values| {
                format!(
                    "INSERT INTO ind_rollup (grain, period, place, dim, value, {cols}) \
                     VALUES {values} ON CONFLICT (place, dim, grain, period, value) \
                     DO UPDATE SET {sets}"
                )
            },
            |mut q, (key, c)| {
                q = q
                    .bind(key.grain)
                    .bind(key.period)
                    .bind(key.place.clone())
                    .bind(key.dim)
                    .bind(key.value.clone());
                for v in values(c) {
                    q = q.bind(v);
                }
                q
            },
        )
        .await?;
        Ok(rows.len())
    }
}

const COUNT_COLUMNS: [&str; 10] = [
    "received",
    "withdrawn",
    "answered",
    "answered_on_time",
    "resolved",
    "overdue",
    "rated",
    "satisfied",
    "rating_sum",
    "handling_sum",
];

/// Every count column, in [`Counts`] order, then h0..h19.
pub fn count_columns() -> Vec<String> {
    COUNT_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain((0..NBUCKETS).map(|i| format!("h{i}")))
        .collect()
}

/// The counts as a list, in [`count_columns`] order.
pub fn values(c: &Counts) -> Vec<i64> {
    let mut v = vec![
        c.received,
        c.withdrawn,
        c.answered,
        c.answered_on_time,
        c.resolved,
        c.overdue,
        c.rated,
        c.satisfied,
        c.rating_sum,
        c.handling_sum,
    ];
    v.extend_from_slice(&c.hist);
    v
}

/// Counts from a list in [`count_columns`] order.
pub fn from_values(v: &[i64]) -> Counts {
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let mut c = Counts {
        received: get(0),
        withdrawn: get(1),
        answered: get(2),
        answered_on_time: get(3),
        resolved: get(4),
        overdue: get(5),
        rated: get(6),
        satisfied: get(7),
        rating_sum: get(8),
        handling_sum: get(9),
        hist: [0; NBUCKETS],
    };
    for (i, h) in c.hist.iter_mut().enumerate() {
        *h = get(10 + i);
    }
    c
}

/// Counts from `row`'s columns `from..from + 30`.
pub fn counts_from_row(row: &sqlx::any::AnyRow, from: usize) -> Result<Counts, StoreError> {
    let mut v = Vec::with_capacity(10 + NBUCKETS);
    for i in 0..10 + NBUCKETS {
        v.push(row.try_get::<i64, _>(from + i)?);
    }
    Ok(from_values(&v))
}

/// The INSERT … ON CONFLICT that adds a row's counts to what is stored (`rows` rows).
pub fn upsert_sql(rows: usize) -> String {
    let cols = count_columns();
    let per_row = 5 + cols.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=per_row)
                .map(|i| format!("${}", r * per_row + i))
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    let sets: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = ind_rollup.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO ind_rollup (grain, period, place, dim, value, {}) VALUES {} \
         ON CONFLICT (place, dim, grain, period, value) DO UPDATE SET {}",
        cols.join(", "),
        tuples.join(", "),
        sets.join(", ")
    )
}

/// Inserts many rows at once (they must not exist yet): for the rebuild and the benchmark.
pub async fn insert_many(tx: &mut Tx, rows: &[(Key, Counts)]) -> Result<(), StoreError> {
    // 35 parameters a row; stay well below SQLite's 32766 and PostgreSQL's 65535.
    for chunk in rows.chunks(400) {
        let sql = upsert_sql(chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, c) in chunk {
            q = q
                .bind(key.grain)
                .bind(key.period)
                .bind(key.place.clone())
                .bind(key.dim)
                .bind(key.value.clone());
            for v in values(c) {
                q = q.bind(v);
            }
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_inside_the_bucket() {
        let mut h = [0; NBUCKETS];
        h[0] = 9; // under an hour
        h[5] = 1; // 12 to 24 hours
        assert_eq!(percentile(&h, 0.9), 3600);
        assert_eq!(percentile(&h, 1.0), 24 * 3600);
        assert_eq!(percentile(&[0; NBUCKETS], 0.9), 0);
        h[NBUCKETS - 1] = 100;
        assert_eq!(percentile(&h, 0.9), 2160 * 3600);
    }

    #[test]
    fn buckets_are_half_open() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(3599), 0);
        assert_eq!(bucket(3600), 1);
        assert_eq!(bucket(i64::MAX), NBUCKETS - 1);
    }

    #[test]
    fn a_case_counts_once_per_place_grain_and_dimension() {
        let f = Facts {
            case_id: "c".into(),
            receive_time: 1_780_000_000_000_000,
            district: "620102".into(),
            street: "620102001".into(),
            community: "620102001001".into(),
            grid: String::new(),
            category: "roads".into(),
            ..Facts::default()
        };
        let rows = contribution(&f);
        assert_eq!(rows.len(), 2 * 3 * 4);
        let mut d = Deltas::default();
        d.change(None, &f);
        d.change(Some(&f), &f);
        assert!(d.0.values().all(|c| c.received == 1));
        assert!(contribution(&Facts::default()).is_empty());
    }

    /// What `change` did before it looked for shortcuts: the old contribution out of every
    /// row, the new one in.
    fn change_in_full(d: &mut Deltas, old: Option<&Facts>, new: &Facts) {
        for (k, c) in old.map(contribution).unwrap_or_default() {
            d.0.entry(k).or_default().add(&c, -1);
        }
        for (k, c) in contribution(new) {
            d.0.entry(k).or_default().add(&c, 1);
        }
    }

    fn non_zero(d: Deltas) -> Vec<(Key, Counts)> {
        let mut rows: Vec<_> = d.0.into_iter().filter(|(_, c)| !c.is_zero()).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    #[test]
    fn a_case_s_life_changes_the_rows_as_taking_it_out_and_putting_it_back_would() {
        let day = 1_780_000_000_000_000;
        let received = Facts {
            case_id: "c".into(),
            receive_time: day,
            district: "620102".into(),
            street: "620102001".into(),
            community: "620102001001".into(),
            grid: "620102001001001".into(),
            category: "roads".into(),
            channel: 2,
            ..Facts::default()
        };
        let unknown = Facts {
            case_id: "c".into(),
            unit: "units/x".into(),
            ..Facts::default()
        };
        let routed = Facts {
            unit: "units/grid-7".into(),
            due_time: day + 86_400_000_000,
            ..received.clone()
        };
        let clustered = routed.clone();
        let answered = Facts {
            answer_time: day + 3_600_000_000,
            on_time: true,
            answer: "fixed".into(),
            ..routed.clone()
        };
        let rated = Facts {
            rating: 5,
            ..answered.clone()
        };
        let moved = Facts {
            receive_time: day + 2 * 86_400_000_000,
            ..rated.clone()
        };
        let withdrawn = Facts {
            withdrawn: true,
            ..moved.clone()
        };
        // Every step of a life, read in order, out of order, and twice over.
        let steps = [
            (None, &unknown),
            (Some(&unknown), &received),
            (None, &received),
            (Some(&received), &routed),
            (Some(&routed), &clustered),
            (Some(&clustered), &answered),
            (Some(&answered), &rated),
            (Some(&rated), &rated),
            (Some(&rated), &moved),
            (Some(&moved), &withdrawn),
            (Some(&withdrawn), &received),
            (Some(&received), &unknown),
            (Some(&unknown), &unknown),
        ];
        let (mut fast, mut full) = (Deltas::default(), Deltas::default());
        for (old, new) in steps {
            let (mut one_fast, mut one_full) = (Deltas::default(), Deltas::default());
            one_fast.change(old, new);
            change_in_full(&mut one_full, old, new);
            assert_eq!(non_zero(one_fast), non_zero(one_full), "{old:?} -> {new:?}");
            fast.change(old, new);
            change_in_full(&mut full, old, new);
        }
        assert_eq!(non_zero(fast), non_zero(full));
    }
}
