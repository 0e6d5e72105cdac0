//! Reading indicators: sums of rollup rows, and case lists from the facts.

use sqlx::Row;

use super::{
    facts::{self, Facts},
    period::Span,
    rollup::{self, Counts},
};
use minqing_kit::{db::Db, error::StoreError};

/// Which rows: the whole place, or one dimension (all its values, or one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// "", "category", "unit" or "channel".
    pub dim: &'static str,
    /// Only this value of `dim`.
    pub value: Option<String>,
}

/// The counts of `place` over `span`, per value of the slice's dimension (one group, value
/// "", for the whole place), largest first.
pub async fn counts(
    db: &Db,
    place: &str,
    span: &Span,
    slice: &Slice,
) -> Result<Vec<(String, Counts)>, StoreError> {
    let (grain, from, to) = span.rows();
    let sums: Vec<String> = rollup::count_columns()
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect();
    let mut sql = format!(
        "SELECT value, {} FROM ind_rollup WHERE place = $1 AND dim = $2 AND grain = $3 \
         AND period >= $4 AND period <= $5",
        sums.join(", ")
    );
    if slice.value.is_some() {
        sql.push_str(" AND value = $6");
    }
    sql.push_str(" GROUP BY value");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(place)
        .bind(slice.dim)
        .bind(grain)
        .bind(from)
        .bind(to);
    if let Some(v) = &slice.value {
        q = q.bind(v);
    }
    let rows = q.fetch_all(db.pool()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let c = rollup::counts_from_row(row, 1)?;
        // A row whose cases all moved elsewhere (e.g. the unit "" once routed) sums to zero.
        if !c.is_zero() {
            out.push((row.try_get::<String, _>(0)?, c));
        }
    }
    out.sort_by(|a, b| b.1.received.cmp(&a.1.received).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// The sum of groups.
pub fn total(groups: &[(String, Counts)]) -> Counts {
    let mut t = Counts::default();
    for (_, c) in groups {
        t.add(c, 1);
    }
    t
}

/// Counts of a list of cases.
pub fn counts_of(cases: &[Facts]) -> Counts {
    let mut t = Counts::default();
    for f in cases {
        t.add(&Counts::of(f), 1);
    }
    t
}

/// Cases whose `column` is `value`, received in [start, end), oldest first, at most `limit`.
/// `liaison_only` keeps those raised at a liaison station.
pub async fn cases(
    db: &Db,
    column: Column,
    value: &str,
    (start, end): (i64, i64),
    liaison_only: bool,
    limit: i64,
) -> Result<Vec<Facts>, StoreError> {
    let mut sql = format!(
        "SELECT {} FROM ind_cases WHERE {} = $1 AND receive_time >= $2 AND receive_time < $3",
        facts::columns(),
        column.name()
    );
    if liaison_only {
        sql.push_str(" AND station <> ''");
    }
    sql.push_str(" ORDER BY receive_time, case_id LIMIT $4");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .bind(start)
        .bind(end)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(facts::from_row).collect()
}

/// The place columns cases can be selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// A liaison station.
    Station,
    /// A district.
    District,
    /// A street.
    Street,
    /// A community.
    Community,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Station => "station",
            Column::District => "district",
            Column::Street => "street",
            Column::Community => "community",
        }
    }
}

/// Received cases of a place, newest first, after the keyset `(receive_time, case_id)`.
pub async fn public_cases(
    db: &Db,
    column: Column,
    place: &str,
    category: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Facts>, StoreError> {
    let mut sql = format!(
        "SELECT {} FROM ind_cases WHERE {} = $1 AND receive_time > 0",
        facts::columns(),
        column.name()
    );
    let mut n = 1;
    if category.is_some() {
        n += 1;
        sql.push_str(&format!(" AND category = ${n}"));
    }
    if after.is_some() {
        sql.push_str(&format!(
            " AND (receive_time < ${} OR (receive_time = ${} AND case_id < ${}))",
            n + 1,
            n + 1,
            n + 2
        ));
        n += 2;
    }
    sql.push_str(&format!(
        " ORDER BY receive_time DESC, case_id DESC LIMIT ${}",
        n + 1
    ));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(place);
    if let Some(c) = category {
        q = q.bind(c);
    }
    if let Some((t, id)) = &after {
        q = q.bind(*t).bind(id.clone());
    }
    let rows = q.bind(limit).fetch_all(db.pool()).await?;
    rows.iter().map(facts::from_row).collect()
}
