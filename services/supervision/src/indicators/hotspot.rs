//! Hot spots: when reports of one category gather in one place (a grid, else its community)
//! within the window, a systemic problem is raised to the district — once per hot spot: while
//! one is open (its latest report within the window), further reports join it.

use std::collections::HashMap;

use sqlx::Row;

use super::{IndicatorsConfig, facts::Facts};
use minqing_kit::{
    db::Tx,
    error::StoreError,
    feed::{self, EventMeta},
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::{supervision::v1 as pb, r#type::v1::PlaceLevel};

/// The actor of the events raised here.
const ACTOR: &str = "system:supervision-indicators";

/// A stored systemic problem.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Its id.
    pub id: String,
    /// District told.
    pub district: String,
    /// Where.
    pub place: String,
    /// Its level.
    pub level: PlaceLevel,
    /// Category.
    pub category: String,
    /// Cases, "cases/{id}".
    pub cases: Vec<String>,
    /// Window, hours.
    pub window_hours: i64,
    /// First report counted.
    pub first_time: Micros,
    /// Latest report counted.
    pub last_time: Micros,
    /// When raised.
    pub raise_time: Micros,
}

impl Problem {
    /// Its wire form.
    pub fn to_proto(&self) -> pb::SystemicProblem {
        pb::SystemicProblem {
            name: format!("systemic-problems/{}", self.id),
            district: self.district.clone(),
            place: self.place.clone(),
            level: self.level as i32,
            category: self.category.clone(),
            case_count: self.cases.len() as i32,
            window_hours: self.window_hours as i32,
            first_time: Some(to_timestamp(self.first_time)),
            last_time: Some(to_timestamp(self.last_time)),
            raise_time: Some(to_timestamp(self.raise_time)),
            cases: self.cases.clone(),
        }
    }
}

/// Looks at a newly received case: joins it to an open hot spot of its grid or community, or
/// raises a new one (with its event) when the window holds enough reports.
///
/// `batch` holds the facts of the cases a batch has changed so far and not yet written (the
/// case itself among them, or not): they count as they are there, not as they are stored, so a
/// batch finds the same hot spots as one event at a time would.
pub async fn check(
    tx: &mut Tx,
    cfg: &IndicatorsConfig,
    f: &Facts,
    batch: &HashMap<String, Facts>,
    now: Micros,
) -> Result<(), StoreError> {
    if f.category.is_empty() || f.district.is_empty() {
        return Ok(());
    }
    let window = i64::from(cfg.hotspot_window_hours) * 3_600_000_000;
    for (level, column, place) in [
        (PlaceLevel::Grid, "grid", &f.grid),
        (PlaceLevel::Community, "community", &f.community),
    ] {
        if place.is_empty() {
            continue;
        }
        if join_open(tx, place, f, window).await? {
            return Ok(());
        }
        let sql = format!(
            "SELECT case_id, receive_time FROM ind_cases WHERE {column} = $1 AND category = $2 \
             AND receive_time > $3 AND receive_time <= $4 AND withdrawn = 0 \
             ORDER BY receive_time, case_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(place)
            .bind(&f.category)
            .bind(f.receive_time - window)
            .bind(f.receive_time)
            .fetch_all(tx.conn())
            .await?;
        // The stored rows, but the batch's cases (and this one) as they are now.
        let mut found: Vec<(i64, String)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0)?;
            if id != f.case_id && !batch.contains_key(&id) {
                found.push((row.try_get(1)?, id));
            }
        }
        let others = batch.values().filter(|c| c.case_id != f.case_id);
        for c in others.chain(std::iter::once(f)) {
            let at = if level == PlaceLevel::Grid {
                &c.grid
            } else {
                &c.community
            };
            if at == place
                && c.category == f.category
                && c.receive_time > f.receive_time - window
                && c.receive_time <= f.receive_time
                && !c.withdrawn
            {
                found.push((c.receive_time, c.case_id.clone()));
            }
        }
        // The database's order: receive time, then id.
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        if found.len() < cfg.hotspot_threshold as usize {
            continue;
        }
        let mut cases = Vec::with_capacity(found.len());
        let mut first = f.receive_time;
        for (time, id) in found {
            first = first.min(time);
            cases.push(format!("cases/{id}"));
        }
        let problem = Problem {
            id: uuid::Uuid::now_v7().to_string(),
            district: f.district.clone(),
            place: place.clone(),
            level,
            category: f.category.clone(),
            cases,
            window_hours: i64::from(cfg.hotspot_window_hours),
            first_time: first,
            last_time: f.receive_time,
            raise_time: now,
        };
        insert(tx, &problem).await?;
        let event = pb::SystemicProblemRaised {
            problem: Some(problem.to_proto()),
        };
        let subject = format!("systemic-problems/{}", problem.id);
        feed::append(tx, &EventMeta::current(ACTOR), &subject, &event, now).await?;
        tracing::info!(place = %problem.place, category = %problem.category, count = problem.cases.len(), "systemic problem raised");
        return Ok(());
    }
    Ok(())
}

/// Adds the case to the open hot spot of `place` and its category, if there is one: a row of
/// its own, whatever the hot spot's size.
async fn join_open(tx: &mut Tx, place: &str, f: &Facts, window: i64) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT id, case_count, last_time FROM ind_hotspots WHERE place = $1 AND category = $2 \
         AND last_time >= $3 ORDER BY last_time DESC LIMIT 1",
    )
    .bind(place)
    .bind(&f.category)
    .bind(f.receive_time - window)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let id: String = row.try_get(0)?;
    let count: i64 = row.try_get(1)?;
    let last: i64 = row.try_get(2)?;
    let added = sqlx::query(
        "INSERT INTO ind_hotspot_cases (hotspot_id, case_id, ordinal) VALUES ($1, $2, $3) \
         ON CONFLICT (hotspot_id, case_id) DO NOTHING",
    )
    .bind(&id)
    .bind(format!("cases/{}", f.case_id))
    .bind(count)
    .execute(tx.conn())
    .await?
    .rows_affected();
    sqlx::query("UPDATE ind_hotspots SET case_count = $2, last_time = $3 WHERE id = $1")
        .bind(&id)
        .bind(count + added as i64)
        .bind(last.max(f.receive_time))
        .execute(tx.conn())
        .await?;
    Ok(true)
}

async fn insert(tx: &mut Tx, p: &Problem) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ind_hotspots (id, district, place, level, category, case_count, \
         window_hours, first_time, last_time, raise_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&p.id)
    .bind(&p.district)
    .bind(&p.place)
    .bind(p.level as i64)
    .bind(&p.category)
    .bind(p.cases.len() as i64)
    .bind(p.window_hours)
    .bind(p.first_time)
    .bind(p.last_time)
    .bind(p.raise_time)
    .execute(tx.conn())
    .await?;
    minqing_kit::db::execute_rows(
        tx.conn(),
        3,
        p.cases.iter().enumerate(),
        |(_, case)| p.id.len() + case.len() + 16,
        |values| {
            format!("INSERT INTO ind_hotspot_cases (hotspot_id, case_id, ordinal) VALUES {values}")
        },
        |q, (i, case)| q.bind(p.id.clone()).bind(case.clone()).bind(i as i64),
    )
    .await?;
    Ok(())
}

/// A district's problems, newest first, after the keyset `(raise_time, id)` if given.
pub async fn list(
    db: &minqing_kit::db::Db,
    district: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Problem>, StoreError> {
    let (t, id) = after.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(
        "SELECT id, district, place, level, category, window_hours, first_time, last_time, \
         raise_time FROM ind_hotspots WHERE district = $1 \
         AND (raise_time < $2 OR (raise_time = $2 AND id < $3)) \
         ORDER BY raise_time DESC, id DESC LIMIT $4",
    )
    .bind(district)
    .bind(t)
    .bind(if id.is_empty() {
        "\u{10FFFF}".to_string()
    } else {
        id
    })
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut problems = rows
        .iter()
        .map(|row| {
            Ok(Problem {
                id: row.try_get(0)?,
                district: row.try_get(1)?,
                place: row.try_get(2)?,
                level: PlaceLevel::try_from(row.try_get::<i64, _>(3)? as i32)
                    .unwrap_or(PlaceLevel::Unspecified),
                category: row.try_get(4)?,
                window_hours: row.try_get(5)?,
                first_time: row.try_get(6)?,
                last_time: row.try_get(7)?,
                raise_time: row.try_get(8)?,
                cases: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Their cases, one statement for the page.
    if !problems.is_empty() {
        let list = minqing_kit::db::placeholders(problems.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT hotspot_id, case_id FROM ind_hotspot_cases WHERE hotspot_id IN ({list}) \
             ORDER BY hotspot_id, ordinal"
        )));
        for p in &problems {
            query = query.bind(p.id.clone());
        }
        let mut cases: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in query.fetch_all(db.pool()).await? {
            cases
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        for p in &mut problems {
            p.cases = cases.remove(&p.id).unwrap_or_default();
        }
    }
    Ok(problems)
}
