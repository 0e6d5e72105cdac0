//! Clocks, their timers (the due-time index) and the units' levels.

use sqlx::{Any, Executor, Row};

use super::{from_doc, to_doc};
use crate::clock::{Clock, Timer, TimerKind};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

fn from_row(row: &sqlx::any::AnyRow) -> Result<Clock, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut c: Clock = from_doc(&doc)?;
    c.version = row.try_get("version")?;
    c.calendar_version = row.try_get("calendar_version")?;
    Ok(c)
}

/// A case's clock.
pub async fn get<'c, E: Executor<'c, Database = Any>>(
    db: E,
    case_id: &str,
) -> Result<Option<Clock>, StoreError> {
    let row = sqlx::query("SELECT version, calendar_version, doc FROM clocks WHERE case_id = $1")
        .bind(case_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes a clock: inserts it when its version is 0, else updates it if still at its
/// version. False when it changed underneath (the caller retries). Bumps `c.version`.
pub async fn save(tx: &mut Tx, c: &mut Clock) -> Result<bool, StoreError> {
    let doc = to_doc(&*c)?;
    let p = &c.place;
    let done = if c.version == 0 {
        sqlx::query(
            "INSERT INTO clocks (case_id, state, unit, district, street, community, grid, \
                building, due_time, create_time, update_time, version, doc, city, \
                calendar_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $14) \
             ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(&c.case_id)
        .bind(i64::from(c.state.wire()))
        .bind(&c.unit)
        .bind(&p.district)
        .bind(&p.street)
        .bind(&p.community)
        .bind(&p.grid)
        .bind(&p.building)
        .bind(c.due.unwrap_or(0))
        .bind(c.create_time)
        .bind(c.update_time)
        .bind(doc)
        .bind(&c.city)
        .bind(c.calendar_version)
        .execute(tx.conn())
        .await?
    } else {
        sqlx::query(
            "UPDATE clocks SET state = $1, unit = $2, district = $3, street = $4, \
                community = $5, grid = $6, building = $7, due_time = $8, update_time = $9, \
                version = version + 1, doc = $10, city = $11, calendar_version = $12 \
             WHERE case_id = $13 AND version = $14",
        )
        .bind(i64::from(c.state.wire()))
        .bind(&c.unit)
        .bind(&p.district)
        .bind(&p.street)
        .bind(&p.community)
        .bind(&p.grid)
        .bind(&p.building)
        .bind(c.due.unwrap_or(0))
        .bind(c.update_time)
        .bind(doc)
        .bind(&c.city)
        .bind(c.calendar_version)
        .bind(&c.case_id)
        .bind(c.version)
        .execute(tx.conn())
        .await?
    };
    if done.rows_affected() == 1 {
        c.version += 1;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Which clocks to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// States (wire values); empty for all.
    pub states: Vec<i64>,
    /// `(column, code)` of a place.
    pub place: Option<(&'static str, String)>,
    /// A unit.
    pub unit: Option<String>,
    /// After this `(due_time, case_id)` (the page token).
    pub after: Option<(i64, String)>,
}

/// A page of clocks, soonest deadline first (no deadline counts as the far future).
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    db: E,
    f: &Filter,
    limit: i64,
) -> Result<Vec<(i64, Clock)>, StoreError> {
    const FAR: i64 = i64::MAX;
    let mut clauses = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let key = format!("(CASE WHEN due_time = 0 THEN {FAR} ELSE due_time END)");
    if !f.states.is_empty() {
        let list: Vec<String> = f.states.iter().map(|_| next()).collect();
        clauses.push(format!("state IN ({})", list.join(", ")));
    }
    if let Some((column, _)) = &f.place {
        clauses.push(format!("{column} = {}", next()));
    }
    if f.unit.is_some() {
        clauses.push(format!("unit = {}", next()));
    }
    if f.after.is_some() {
        let (a, b, c) = (next(), next(), next());
        clauses.push(format!("({key} > {a} OR ({key} = {b} AND case_id > {c}))"));
    }
    let limit_arg = next();
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT {key} AS sort_key, version, calendar_version, doc FROM clocks{where_sql} \
         ORDER BY sort_key, case_id LIMIT {limit_arg}"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for s in &f.states {
        q = q.bind(*s);
    }
    if let Some((_, code)) = &f.place {
        q = q.bind(code.clone());
    }
    if let Some(u) = &f.unit {
        q = q.bind(u.clone());
    }
    if let Some((due, case)) = &f.after {
        q = q.bind(*due).bind(*due).bind(case.clone());
    }
    q = q.bind(limit);
    let rows = q.fetch_all(db).await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<i64, _>("sort_key")?, from_row(r)?)))
        .collect()
}

/// Replaces a clock's unfired timers with `timers`; a timer that already fired keeps its
/// mark (its id is the same), so it never fires twice.
pub async fn set_timers(tx: &mut Tx, case_id: &str, timers: &[Timer]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM timers WHERE case_id = $1 AND fired = 0")
        .bind(case_id)
        .execute(tx.conn())
        .await?;
    for t in timers {
        sqlx::query(
            "INSERT INTO timers (id, case_id, kind, step, fire_time, fired, fired_time) \
             VALUES ($1, $2, $3, $4, $5, 0, 0) ON CONFLICT (id) DO NOTHING",
        )
        .bind(t.id)
        .bind(&t.case_id)
        .bind(t.kind.wire())
        .bind(i64::from(t.step))
        .bind(t.fire)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Inserts many timers of new clocks (bulk loads), a few statements for all.
pub async fn insert_timers(tx: &mut Tx, timers: &[Timer]) -> Result<(), StoreError> {
    for chunk in timers.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO timers (id, case_id, kind, step, fire_time, fired, fired_time) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 5;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, 0, 0)",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            q = q
                .bind(t.id)
                .bind(t.case_id.clone())
                .bind(t.kind.wire())
                .bind(i64::from(t.step))
                .bind(t.fire);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// An unfired timer, by id.
pub async fn timer(tx: &mut Tx, id: i64) -> Result<Option<Timer>, StoreError> {
    let row = sqlx::query(
        "SELECT case_id, kind, step, fire_time FROM timers WHERE id = $1 AND fired = 0",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kind: i64 = row.try_get("kind")?;
    let step: i64 = row.try_get("step")?;
    Ok(TimerKind::from_wire(kind).map(|kind| Timer {
        id,
        case_id: row.try_get("case_id").unwrap_or_default(),
        kind,
        step: i32::try_from(step).unwrap_or(0),
        fire: row.try_get("fire_time").unwrap_or(0),
    }))
}

/// Marks a timer fired at `now`; false when it already was (or is gone).
pub async fn mark_fired(tx: &mut Tx, id: i64, now: Micros) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE timers SET fired = 1, fired_time = $1 WHERE id = $2 AND fired = 0")
            .bind(now)
            .bind(id)
            .execute(tx.conn())
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Unfired timers due at or before `until`, soonest first: `(fire_time, id)`.
pub async fn due_timers<'c, E: Executor<'c, Database = Any>>(
    db: E,
    until: Micros,
    limit: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT fire_time, id FROM timers WHERE fired = 0 AND fire_time <= $1 \
         ORDER BY fire_time LIMIT $2",
    )
    .bind(until)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("fire_time")?, r.try_get("id")?)))
        .collect()
}

/// Every unfired timer, `(fire_time, id)`, read in pages so a million rows do not sit in
/// one result.
pub async fn all_unfired(db: &minqing_kit::db::Db) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut out = Vec::new();
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT id, fire_time FROM timers WHERE fired = 0 AND id > $1 ORDER BY id LIMIT 50000",
        )
        .bind(after)
        .fetch_all(db.pool())
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id")?;
        for r in &rows {
            out.push((r.try_get("fire_time")?, r.try_get("id")?));
        }
    }
    Ok(out)
}

/// A unit's ladder level (0 unknown).
pub async fn unit_level(tx: &mut Tx, unit: &str) -> Result<i32, StoreError> {
    let row = sqlx::query("SELECT level FROM units WHERE name = $1")
        .bind(unit)
        .fetch_optional(tx.conn())
        .await?;
    Ok(match row {
        Some(r) => i32::try_from(r.try_get::<i64, _>("level")?).unwrap_or(0),
        None => 0,
    })
}

/// Inserts many new clocks (bulk loads: benchmarks, imports), a few statements for all.
pub async fn insert_clocks(tx: &mut Tx, clocks: &[Clock]) -> Result<(), StoreError> {
    for chunk in clocks.chunks(200) {
        let mut sql = String::from(
            "INSERT INTO clocks (case_id, state, unit, district, street, community, grid, \
                building, due_time, create_time, update_time, version, doc, city, \
                calendar_version) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 14;
            if i > 0 {
                sql.push_str(", ");
            }
            let args: Vec<String> = (1..=14).map(|k| format!("${}", b + k)).collect();
            sql.push_str(&format!(
                "({}, 1, {})",
                args[..11].join(", "),
                args[11..].join(", ")
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            let p = &c.place;
            q = q
                .bind(c.case_id.clone())
                .bind(i64::from(c.state.wire()))
                .bind(c.unit.clone())
                .bind(p.district.clone())
                .bind(p.street.clone())
                .bind(p.community.clone())
                .bind(p.grid.clone())
                .bind(p.building.clone())
                .bind(c.due.unwrap_or(0))
                .bind(c.create_time)
                .bind(c.update_time)
                .bind(to_doc(c)?)
                .bind(c.city.clone())
                .bind(c.calendar_version);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

fn placeholders(from: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", from + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks the unfired ones of `ids` that are due at `now` fired and returns them with what
/// they are: one statement, so a burst of due timers costs one round trip per few hundred. A
/// timer whose row was moved later (its clock re-planned on a calendar edit) is not due yet,
/// whatever the queue's copy of it said.
pub async fn fire_timers(tx: &mut Tx, ids: &[i64], now: Micros) -> Result<Vec<Timer>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE timers SET fired = 1, fired_time = $1 \
             WHERE fired = 0 AND fire_time <= $2 AND id IN ({}) \
             RETURNING id, case_id, kind, step, fire_time",
            placeholders(3, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(tx.conn()).await? {
            let kind: i64 = row.try_get("kind")?;
            let step: i64 = row.try_get("step")?;
            if let Some(kind) = TimerKind::from_wire(kind) {
                out.push(Timer {
                    id: row.try_get("id")?,
                    case_id: row.try_get("case_id")?,
                    kind,
                    step: i32::try_from(step).unwrap_or(0),
                    fire: row.try_get("fire_time")?,
                });
            }
        }
    }
    Ok(out)
}

/// Clocks by case, in one statement per few hundred.
pub async fn get_many(tx: &mut Tx, case_ids: &[String]) -> Result<Vec<Clock>, StoreError> {
    let mut out = Vec::new();
    for chunk in case_ids.chunks(500) {
        let sql = format!(
            "SELECT version, calendar_version, doc FROM clocks WHERE case_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(tx.conn()).await? {
            out.push(from_row(&row)?);
        }
    }
    Ok(out)
}

/// Brings a clock's unfired timers from `before` to `after`, touching only what differs.
pub async fn change_timers(
    tx: &mut Tx,
    before: &[Timer],
    after: &[Timer],
) -> Result<(), StoreError> {
    for t in before {
        if !after.iter().any(|a| a.id == t.id) {
            sqlx::query("DELETE FROM timers WHERE id = $1 AND fired = 0")
                .bind(t.id)
                .execute(tx.conn())
                .await?;
        }
    }
    let new: Vec<Timer> = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.id == a.id))
        .cloned()
        .collect();
    insert_timers(tx, &new).await
}

/// Writes many changed clocks (each already stored) in a few multi-row statements, each only
/// if still at its version; returns how many were written (fewer: some changed underneath,
/// and the caller's transaction must not commit). Bumps each written `version`.
pub async fn save_many(tx: &mut Tx, clocks: &mut [Clock]) -> Result<u64, StoreError> {
    // [`update_many`] writes each to its new version if still at the one read.
    for c in clocks.iter_mut() {
        c.version += 1;
    }
    let rows: Vec<(&Clock, i64)> = clocks.iter().map(|c| (c, c.version - 1)).collect();
    let written = update_many(tx, &rows).await;
    if !matches!(written, Ok(n) if n == clocks.len() as u64) {
        for c in clocks.iter_mut() {
            c.version -= 1;
        }
    }
    written
}

/// Deletes these timers unless they fired: a few statements for all.
pub async fn delete_unfired(tx: &mut Tx, ids: &[i64]) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "DELETE FROM timers WHERE fired = 0 AND id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Writes clocks the timer worker changed — only what firing changes: state, document and
/// update time (place, unit, deadline and calendar stay) — each only if still at its version,
/// in a few multi-row statements; returns how many were written (fewer: some changed
/// underneath, and the caller's transaction must not commit). Bumps each written `version`.
/// Leaving the other columns out of the statement spares SQLite the rewriting of the indexes
/// on them; on SQLite (no network, so no reason to keep statements small) 200 rows go in one
/// statement. Planned at each run on PostgreSQL, as [`update_many`] is.
pub async fn save_fired(tx: &mut Tx, clocks: &mut [Clock]) -> Result<u64, StoreError> {
    const COLUMNS: usize = 5;
    let sql = |values: &str| {
        format!(
            "WITH v (case_id, version, state, update_time, doc) AS (VALUES {values}) \
             UPDATE clocks SET state = v.state, update_time = v.update_time, doc = v.doc, \
                version = clocks.version + 1 \
             FROM v WHERE clocks.case_id = v.case_id AND clocks.version = v.version"
        )
    };
    let bind = |q: minqing_kit::db::AnyQuery, (c, doc): (&Clock, String)| {
        q.bind(c.case_id.clone())
            .bind(c.version)
            .bind(i64::from(c.state.wire()))
            .bind(c.update_time)
            .bind(doc)
    };
    let rows = clocks
        .iter()
        .map(|c| Ok((c, to_doc(c)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let written = match tx.backend() {
        minqing_kit::db::Backend::Sqlite => {
            let mut written = 0;
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<_> = rows.by_ref().take(200).collect();
                let text = sql(&minqing_kit::db::values_list(chunk.len(), COLUMNS));
                let mut q: minqing_kit::db::AnyQuery = sqlx::query(sqlx::AssertSqlSafe(text));
                for row in chunk {
                    q = bind(q, row);
                }
                written += q.execute(tx.conn()).await?.rows_affected();
            }
            written
        }
        minqing_kit::db::Backend::Postgres => {
            minqing_kit::db::execute_rows_planned(
                tx.conn(),
                minqing_kit::db::Planning::EachRun,
                COLUMNS,
                rows,
                |(c, doc)| doc.len() + c.case_id.len() + 32,
                sql,
                bind,
            )
            .await?
        }
    };
    if written == clocks.len() as u64 {
        for c in clocks.iter_mut() {
            c.version += 1;
        }
    }
    Ok(written)
}

/// Clocks by case for a batch that changes them, `case_ids` sorted: a statement per few
/// hundred ids. On PostgreSQL the rows are locked (`FOR UPDATE`) in case order (byte order,
/// whatever the database's collation), so two batches locking clocks never wait on each other
/// in a cycle, and no clock read can change before the batch writes it.
pub async fn lock_many(tx: &mut Tx, case_ids: &[String]) -> Result<Vec<Clock>, StoreError> {
    let tail = match tx.backend() {
        minqing_kit::db::Backend::Postgres => " ORDER BY case_id COLLATE \"C\" FOR UPDATE",
        minqing_kit::db::Backend::Sqlite => "",
    };
    let mut out = Vec::new();
    for chunk in super::id_chunks(case_ids, 1) {
        let sql = format!(
            "SELECT version, calendar_version, doc FROM clocks WHERE case_id IN ({}){tail}",
            minqing_kit::db::placeholders(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(tx.conn()).await? {
            out.push(from_row(&row)?);
        }
    }
    Ok(out)
}

fn clock_bytes(c: &Clock, doc: &str) -> usize {
    let p = &c.place;
    doc.len()
        + c.case_id.len()
        + c.unit.len()
        + p.district.len()
        + p.street.len()
        + p.community.len()
        + p.grid.len()
        + p.building.len()
        + c.city.len()
        + 56
}

/// Inserts new clocks at their `version` (the saves a batch made of each) in a few multi-row
/// statements; returns how many were inserted (fewer: some were inserted meanwhile by
/// another transaction, and the caller's must not commit).
pub async fn insert_new(tx: &mut Tx, clocks: &[&Clock]) -> Result<u64, StoreError> {
    let rows = clocks
        .iter()
        .map(|c| Ok((*c, to_doc(*c)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    minqing_kit::db::execute_rows(
        tx.conn(),
        15,
        rows,
        |(c, doc)| clock_bytes(c, doc),
        |values| {
            format!(
                "INSERT INTO clocks (case_id, state, unit, district, street, community, grid, \
                    building, due_time, create_time, update_time, version, doc, city, \
                    calendar_version) VALUES {values} ON CONFLICT (case_id) DO NOTHING"
            )
        },
        |q, (c, doc)| {
            let p = &c.place;
            q.bind(c.case_id.clone())
                .bind(i64::from(c.state.wire()))
                .bind(c.unit.clone())
                .bind(p.district.clone())
                .bind(p.street.clone())
                .bind(p.community.clone())
                .bind(p.grid.clone())
                .bind(p.building.clone())
                .bind(c.due.unwrap_or(0))
                .bind(c.create_time)
                .bind(c.update_time)
                .bind(c.version)
                .bind(doc)
                .bind(c.city.clone())
                .bind(c.calendar_version)
        },
    )
    .await
}

/// Writes stored clocks a batch changed, `(clock, version read)`, in a few multi-row
/// statements, each only if still at the version read, to its new `version`; returns how
/// many were written (fewer: some changed underneath, and the caller's transaction must not
/// commit).
pub async fn update_many(tx: &mut Tx, clocks: &[(&Clock, i64)]) -> Result<u64, StoreError> {
    let rows = clocks
        .iter()
        .map(|(c, read)| Ok((*c, *read, to_doc(*c)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Batches change the stored clocks their events move (acceptance, escalation, resolution
    // and the rest), while the table grows by a clock for every case.
    minqing_kit::db::execute_rows_planned(
        tx.conn(),
        minqing_kit::db::Planning::EachRun,
        15,
        rows,
        |(c, _, doc)| clock_bytes(c, doc),
        |values| {
            format!(
                "WITH v (case_id, read_version, version, state, unit, district, street, \
                    community, grid, building, due_time, update_time, doc, city, \
                    calendar_version) AS (VALUES {values}) \
                 UPDATE clocks SET state = v.state, unit = v.unit, district = v.district, \
                    street = v.street, community = v.community, grid = v.grid, \
                    building = v.building, due_time = v.due_time, update_time = v.update_time, \
                    doc = v.doc, city = v.city, calendar_version = v.calendar_version, \
                    version = v.version \
                 FROM v WHERE clocks.case_id = v.case_id AND clocks.version = v.read_version"
            )
        },
        |q, (c, read, doc)| {
            let p = &c.place;
            q.bind(c.case_id.clone())
                .bind(read)
                .bind(c.version)
                .bind(i64::from(c.state.wire()))
                .bind(c.unit.clone())
                .bind(p.district.clone())
                .bind(p.street.clone())
                .bind(p.community.clone())
                .bind(p.grid.clone())
                .bind(p.building.clone())
                .bind(c.due.unwrap_or(0))
                .bind(c.update_time)
                .bind(doc)
                .bind(c.city.clone())
                .bind(c.calendar_version)
        },
    )
    .await
}

/// Replaces the unfired timers of the cases `case_ids` with `timers`, as [`set_timers`] does
/// for one: one delete and one insert per statement-size chunk for all of them. A timer that
/// already fired keeps its mark (its id is the same), so it never fires twice.
pub async fn replace_timers(
    tx: &mut Tx,
    case_ids: &[String],
    timers: &[Timer],
) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        1,
        case_ids,
        |id| id.len() + 8,
        |values| {
            format!(
                "WITH v (case_id) AS (VALUES {values}) \
                 DELETE FROM timers WHERE fired = 0 AND case_id IN (SELECT case_id FROM v)"
            )
        },
        |q, id| q.bind(id.clone()),
    )
    .await?;
    minqing_kit::db::execute_rows(
        tx.conn(),
        7,
        timers,
        |t| t.case_id.len() + 48,
        |values| {
            format!(
                "INSERT INTO timers (id, case_id, kind, step, fire_time, fired, fired_time) \
                 VALUES {values} ON CONFLICT (id) DO NOTHING"
            )
        },
        |q, t| {
            q.bind(t.id)
                .bind(t.case_id.clone())
                .bind(t.kind.wire())
                .bind(i64::from(t.step))
                .bind(t.fire)
                .bind(0_i64)
                .bind(0_i64)
        },
    )
    .await?;
    Ok(())
}

/// The ladder levels of `units` known (a unit not listed is unknown: level 0).
pub async fn unit_levels(
    tx: &mut Tx,
    units: &[String],
) -> Result<std::collections::HashMap<String, i32>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in super::id_chunks(units, 1) {
        let sql = format!(
            "SELECT name, level FROM units WHERE name IN ({})",
            minqing_kit::db::placeholders(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            q = q.bind(u.clone());
        }
        for row in q.fetch_all(tx.conn()).await? {
            let level = i32::try_from(row.try_get::<i64, _>("level")?).unwrap_or(0);
            out.insert(row.try_get::<String, _>("name")?, level);
        }
    }
    Ok(out)
}

/// Records units' ladder levels, each unit once, in a few multi-row statements.
pub async fn set_unit_levels(tx: &mut Tx, levels: &[(String, i32)]) -> Result<(), StoreError> {
    minqing_kit::db::execute_rows(
        tx.conn(),
        2,
        levels,
        |(name, _)| name.len() + 16,
        |values| {
            format!(
                "INSERT INTO units (name, level) VALUES {values} \
                 ON CONFLICT (name) DO UPDATE SET level = excluded.level"
            )
        },
        |q, (name, level)| q.bind(name.clone()).bind(i64::from(*level)),
    )
    .await?;
    Ok(())
}

/// The cases, sorted, of those of the timers `ids` not fired yet: a statement per few hundred.
pub async fn cases_of_unfired(tx: &mut Tx, ids: &[i64]) -> Result<Vec<String>, StoreError> {
    let mut out = std::collections::BTreeSet::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT DISTINCT case_id FROM timers WHERE fired = 0 AND id IN ({})",
            minqing_kit::db::placeholders(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(tx.conn()).await? {
            out.insert(row.try_get::<String, _>("case_id")?);
        }
    }
    Ok(out.into_iter().collect())
}
