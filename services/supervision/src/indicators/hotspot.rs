//! Hot spots: when reports of one category gather in one place (a grid, else its community)
//! within the window, a systemic problem is raised to the district — once per hot spot: while
//! one is open (its latest report within the window), further reports join it.

use std::collections::{BTreeSet, HashMap, HashSet};

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
    open: &mut Open,
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
        if open.join(place, f, window) {
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
        open.raised(&problem);
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

/// The hot spots a batch may join, read once for the batch, and what its cases changed in
/// them, written once at its end ([`Open::write`]).
#[derive(Debug, Default)]
pub struct Open {
    /// By (place, category).
    spots: HashMap<(String, String), Vec<Spot>>,
    /// (hot spot id, "cases/{id}") pairs already stored or added.
    members: HashSet<(String, String)>,
    /// Cases joined: (hot spot id, "cases/{id}", ordinal).
    joins: Vec<(String, String, i64)>,
    /// Hot spots whose count or latest report changed.
    changed: BTreeSet<String>,
}

#[derive(Debug)]
struct Spot {
    id: String,
    count: i64,
    last: i64,
}

/// (place, category) pairs per statement: two parameters each.
const PAIRS_PER_STATEMENT: usize = 500;

impl Open {
    /// Reads the hot spots the cases of `received` (those the batch may receive) could join:
    /// those of their grids and communities and categories still open at the earliest of
    /// their reports (a hot spot's latest report only moves later).
    pub async fn load(
        tx: &mut Tx,
        cfg: &IndicatorsConfig,
        received: &[Facts],
    ) -> Result<Self, StoreError> {
        let mut open = Open::default();
        let window = i64::from(cfg.hotspot_window_hours) * 3_600_000_000;
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut earliest = i64::MAX;
        for f in received {
            if f.category.is_empty() || f.district.is_empty() {
                continue;
            }
            earliest = earliest.min(f.receive_time);
            for place in [&f.grid, &f.community] {
                if !place.is_empty() {
                    pairs.push((place.clone(), f.category.clone()));
                }
            }
        }
        pairs.sort();
        pairs.dedup();
        for chunk in pairs.chunks(PAIRS_PER_STATEMENT) {
            let list = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, place, category, case_count, last_time FROM ind_hotspots \
                 WHERE last_time >= $1 AND (place, category) IN ({list})"
            )))
            .bind(earliest.saturating_sub(window));
            for (place, category) in chunk {
                query = query.bind(place.clone()).bind(category.clone());
            }
            for row in query.fetch_all(tx.conn()).await? {
                open.spots
                    .entry((row.try_get(1)?, row.try_get(2)?))
                    .or_default()
                    .push(Spot {
                        id: row.try_get(0)?,
                        count: row.try_get(3)?,
                        last: row.try_get(4)?,
                    });
            }
        }
        if open.spots.is_empty() {
            return Ok(open);
        }
        // Which of the cases are members already (a case joins a hot spot once).
        let cases: Vec<String> = received
            .iter()
            .map(|f| format!("cases/{}", f.case_id))
            .collect();
        for chunk in cases.chunks(minqing_kit::db::MAX_ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT hotspot_id, case_id FROM ind_hotspot_cases WHERE case_id IN ({})",
                minqing_kit::db::placeholders(chunk.len())
            )));
            for case in chunk {
                query = query.bind(case.clone());
            }
            for row in query.fetch_all(tx.conn()).await? {
                open.members.insert((row.try_get(0)?, row.try_get(1)?));
            }
        }
        Ok(open)
    }

    /// Adds the case to the open hot spot of `place` and its category (the one with the
    /// latest report within the window), if there is one.
    fn join(&mut self, place: &str, f: &Facts, window: i64) -> bool {
        let Some(spots) = self.spots.get_mut(&(place.to_owned(), f.category.clone())) else {
            return false;
        };
        let Some(spot) = spots
            .iter_mut()
            .filter(|s| s.last >= f.receive_time - window)
            .max_by(|a, b| a.last.cmp(&b.last).then_with(|| a.id.cmp(&b.id)))
        else {
            return false;
        };
        let case = format!("cases/{}", f.case_id);
        if self.members.insert((spot.id.clone(), case.clone())) {
            self.joins.push((spot.id.clone(), case, spot.count));
            spot.count += 1;
        }
        spot.last = spot.last.max(f.receive_time);
        self.changed.insert(spot.id.clone());
        true
    }

    /// Records a hot spot raised (and written) in this batch: later cases may join it.
    fn raised(&mut self, p: &Problem) {
        for case in &p.cases {
            self.members.insert((p.id.clone(), case.clone()));
        }
        self.spots
            .entry((p.place.clone(), p.category.clone()))
            .or_default()
            .push(Spot {
                id: p.id.clone(),
                count: p.cases.len() as i64,
                last: p.last_time,
            });
    }

    /// Writes the joins: the new members with multi-row inserts, each changed hot spot's
    /// count and latest report with one statement.
    pub async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        minqing_kit::db::execute_rows(
            tx.conn(),
            3,
            self.joins,
            |(id, case, _)| id.len() + case.len() + 16,
            |values| {
                format!(
                    "INSERT INTO ind_hotspot_cases (hotspot_id, case_id, ordinal) VALUES {values} \
                     ON CONFLICT (hotspot_id, case_id) DO NOTHING"
                )
            },
            |q, (id, case, ordinal)| q.bind(id).bind(case).bind(ordinal),
        )
        .await?;
        let mut spots: HashMap<String, (i64, i64)> = HashMap::new();
        for list in self.spots.into_values() {
            for s in list {
                spots.insert(s.id, (s.count, s.last));
            }
        }
        let rows: Vec<(String, i64, i64)> = self
            .changed
            .into_iter()
            .filter_map(|id| spots.get(&id).map(|&(count, last)| (id, count, last)))
            .collect();
        minqing_kit::db::execute_rows(
            tx.conn(),
            3,
            rows,
            |(id, _, _)| id.len() + 32,
            |values| {
                format!(
                    "WITH v (id, case_count, last_time) AS (VALUES {values}) \
                     UPDATE ind_hotspots SET case_count = v.case_count, last_time = v.last_time \
                     FROM v WHERE ind_hotspots.id = v.id"
                )
            },
            |q, (id, count, last)| q.bind(id).bind(count).bind(last),
        )
        .await?;
        Ok(())
    }
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
