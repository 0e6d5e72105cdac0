//! Routing's storage. Whole records are JSON in a `data` column beside the columns queries
//! filter on; changes take the handler's `&mut Tx` so they commit with their events. A case's
//! route is its aggregate: every change to the route or its assignments bumps the route's
//! `version`, and `update_route` only writes at the version read (optimistic concurrency:
//! SQLite has no `SELECT … FOR UPDATE`), so two concurrent actions never both win.

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Any, Executor, Row};

use crate::domain::{Assignment, AssignmentState, Route, RouteState, Unit};
use minqing_kit::{
    db::{Backend, Db, Tx, execute_rows},
    error::StoreError,
    feed::{Cursor, Pass},
    time::Micros,
};

pub(crate) const MIGRATIONS: minqing_kit::db::Migrations = minqing_kit::db::Migrations {
    sqlite: &[(
        100,
        "routing tables",
        include_str!("../migrations/sqlite.sql"),
    )],
    postgres: &[(
        100,
        "routing tables",
        include_str!("../migrations/postgres.sql"),
    )],
};

fn decode_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(format!("{what}: {err}").into()))
}

/// A record as JSON.
pub fn to_json<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| decode_error(what, e))
}

/// A record from JSON.
pub fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| decode_error(what, e))
}

// ----- units -------------------------------------------------------------------------------

/// Inserts a unit; false when the id is taken.
pub async fn insert_unit(tx: &mut Tx, unit: &Unit) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO units (id, kind, active, data, create_time, update_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&unit.id)
    .bind(i64::from(unit.kind.wire()))
    .bind(i64::from(unit.active))
    .bind(to_json("unit", unit)?)
    .bind(unit.create_time)
    .bind(unit.update_time)
    .bind(unit.version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a unit if it is still at `expected_version`.
pub async fn update_unit(
    tx: &mut Tx,
    unit: &Unit,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE units SET kind = $2, active = $3, data = $4, update_time = $5, version = $6 \
         WHERE id = $1 AND version = $7",
    )
    .bind(&unit.id)
    .bind(i64::from(unit.kind.wire()))
    .bind(i64::from(unit.active))
    .bind(to_json("unit", unit)?)
    .bind(unit.update_time)
    .bind(unit.version)
    .bind(expected_version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One unit.
pub async fn get_unit<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Unit>, StoreError> {
    let data: Option<String> = sqlx::query_scalar("SELECT data FROM units WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    data.map(|d| from_json("unit", &d)).transpose()
}

/// Every unit, by id.
pub async fn all_units<'c, E: Executor<'c, Database = Any>>(
    executor: E,
) -> Result<Vec<Unit>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT data FROM units ORDER BY id")
        .fetch_all(executor)
        .await?;
    rows.iter().map(|d| from_json("unit", d)).collect()
}

/// How many units.
pub async fn count_units(db: &Db) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM units")
        .fetch_one(db.pool())
        .await?)
}

// ----- idempotency -------------------------------------------------------------------------

/// Records `request_id` in `scope` for `resource`; when it was used before, the earlier
/// request's hash and resource instead.
pub async fn claim_request(
    tx: &mut Tx,
    scope: &str,
    request_id: &str,
    hash: &str,
    resource: &str,
    now: Micros,
) -> Result<Option<(String, String)>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO requests (scope, request_id, request_hash, resource, create_time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, request_id) DO NOTHING",
    )
    .bind(scope)
    .bind(request_id)
    .bind(hash)
    .bind(resource)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT request_hash, resource FROM requests WHERE scope = $1 AND request_id = $2",
    )
    .bind(scope)
    .bind(request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Some((row.try_get(0)?, row.try_get(1)?)))
}

// ----- routes and assignments --------------------------------------------------------------

/// Inserts a case's route; false when the case was routed already.
pub async fn insert_route(tx: &mut Tx, route: &Route) -> Result<bool, StoreError> {
    Ok(insert_routes(tx, std::slice::from_ref(route)).await? == 1)
}

/// Inserts new cases' routes with multi-row statements; how many were inserted (a case
/// routed already is left as it is and not counted).
pub async fn insert_routes(tx: &mut Tx, routes: &[Route]) -> Result<u64, StoreError> {
    let rows = routes
        .iter()
        .map(|r| Ok((r, to_json("route", r)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    execute_rows(
        tx.conn(),
        15,
        rows,
        |(_, data)| 400 + data.len(),
        |values| {
            format!(
                "INSERT INTO routes (case_id, state, disposition, handling_unit, coordinating_unit, \
                    district, street, community, grid, building, station, create_time, update_time, version, data) \
                 VALUES {values} ON CONFLICT (case_id) DO NOTHING"
            )
        },
        |q, (route, data)| {
            let p = &route.facts.place;
            q.bind(route.case_id.clone())
                .bind(i64::from(route.state.wire()))
                .bind(i64::from(route.disposition.wire()))
                .bind(route.handling_unit.clone())
                .bind(route.coordinating_unit.clone())
                .bind(p.district.clone())
                .bind(p.street.clone())
                .bind(p.community.clone())
                .bind(p.grid.clone())
                .bind(p.building.clone())
                .bind(route.facts.liaison_station.clone())
                .bind(route.create_time)
                .bind(route.update_time)
                .bind(route.version)
                .bind(data)
        },
    )
    .await
}

/// Which of `case_ids` have a route already.
pub async fn routed_among(
    tx: &mut Tx,
    case_ids: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut out = std::collections::HashSet::new();
    for chunk in minqing_kit::db::statement_chunks(case_ids, 512) {
        let sql = format!(
            "SELECT case_id FROM routes WHERE case_id IN ({})",
            minqing_kit::db::placeholders(chunk.len())
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(tx.conn()).await?);
    }
    Ok(out)
}

/// Writes a route if it is still at `expected_version`.
pub async fn update_route(
    tx: &mut Tx,
    route: &Route,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE routes SET state = $2, disposition = $3, handling_unit = $4, coordinating_unit = $5, \
            update_time = $6, version = $7, data = $8 \
         WHERE case_id = $1 AND version = $9",
    )
    .bind(&route.case_id)
    .bind(i64::from(route.state.wire()))
    .bind(i64::from(route.disposition.wire()))
    .bind(&route.handling_unit)
    .bind(&route.coordinating_unit)
    .bind(route.update_time)
    .bind(route.version)
    .bind(to_json("route", route)?)
    .bind(expected_version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One case's route.
pub async fn get_route<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    case_id: &str,
) -> Result<Option<Route>, StoreError> {
    let data: Option<String> = sqlx::query_scalar("SELECT data FROM routes WHERE case_id = $1")
        .bind(case_id)
        .fetch_optional(executor)
        .await?;
    data.map(|d| from_json("route", &d)).transpose()
}

/// A route list filter, already checked.
#[derive(Debug, Default, Clone)]
pub struct RouteFilter {
    /// States (any of).
    pub states: Vec<RouteState>,
    /// Dispositions (any of), wire values.
    pub dispositions: Vec<i32>,
    /// Handling unit id.
    pub handling_unit: Option<String>,
    /// Coordinating unit id.
    pub coordinating_unit: Option<String>,
    /// Place: (column, code).
    pub place: Option<(&'static str, String)>,
    /// Caller's place scope: (column, code).
    pub scope: Option<(&'static str, String)>,
    /// Station id.
    pub station: Option<String>,
    /// Keyset: case ids below this one.
    pub below: Option<String>,
}

enum Value {
    Text(String),
    Int(i64),
}

/// Routes matching `filter`, newest first (case ids are time-ordered), up to `limit`.
pub async fn list_routes<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    filter: &RouteFilter,
    limit: i64,
) -> Result<Vec<Route>, StoreError> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let push = |values: &mut Vec<Value>, v: Value| {
        values.push(v);
        format!("${}", values.len())
    };
    if !filter.states.is_empty() {
        let list: Vec<String> = filter
            .states
            .iter()
            .map(|s| push(&mut values, Value::Int(i64::from(s.wire()))))
            .collect();
        clauses.push(format!("state IN ({})", list.join(", ")));
    }
    if !filter.dispositions.is_empty() {
        let list: Vec<String> = filter
            .dispositions
            .iter()
            .map(|d| push(&mut values, Value::Int(i64::from(*d))))
            .collect();
        clauses.push(format!("disposition IN ({})", list.join(", ")));
    }
    for (column, value) in [
        ("handling_unit", &filter.handling_unit),
        ("coordinating_unit", &filter.coordinating_unit),
        ("station", &filter.station),
    ] {
        if let Some(v) = value {
            let p = push(&mut values, Value::Text(v.clone()));
            clauses.push(format!("{column} = {p}"));
        }
    }
    for (column, code) in [&filter.place, &filter.scope].into_iter().flatten() {
        let p = push(&mut values, Value::Text(code.clone()));
        clauses.push(format!("{column} = {p}"));
    }
    if let Some(below) = &filter.below {
        let p = push(&mut values, Value::Text(below.clone()));
        clauses.push(format!("case_id < {p}"));
    }
    let limit_at = push(&mut values, Value::Int(limit));
    let where_clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql =
        format!("SELECT data FROM routes {where_clause} ORDER BY case_id DESC LIMIT {limit_at}");
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = match v {
            Value::Text(t) => query.bind(t),
            Value::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(executor).await?;
    rows.iter().map(|d| from_json("route", d)).collect()
}

/// Inserts an assignment.
pub async fn insert_assignment(tx: &mut Tx, a: &Assignment) -> Result<(), StoreError> {
    insert_assignments(tx, std::slice::from_ref(a)).await
}

/// Inserts assignments with multi-row statements.
pub async fn insert_assignments(tx: &mut Tx, list: &[Assignment]) -> Result<(), StoreError> {
    let rows = list
        .iter()
        .map(|a| Ok((a, to_json("assignment", a)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    execute_rows(
        tx.conn(),
        8,
        rows,
        |(_, data)| 200 + data.len(),
        |values| {
            format!(
                "INSERT INTO assignments (id, case_id, unit_id, state, accept_by, overdue, create_time, data) \
                 VALUES {values}"
            )
        },
        |q, (a, data)| {
            q.bind(a.id.clone())
                .bind(a.case_id.clone())
                .bind(a.unit.clone())
                .bind(i64::from(a.state.wire()))
                .bind(a.accept_by)
                .bind(i64::from(a.acceptance_overdue))
                .bind(a.create_time)
                .bind(data)
        },
    )
    .await?;
    Ok(())
}

/// Writes an assignment (the caller holds its route's version).
pub async fn update_assignment(tx: &mut Tx, a: &Assignment) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE assignments SET state = $2, accept_by = $3, overdue = $4, data = $5 WHERE id = $1",
    )
    .bind(&a.id)
    .bind(i64::from(a.state.wire()))
    .bind(a.accept_by)
    .bind(i64::from(a.acceptance_overdue))
    .bind(to_json("assignment", a)?)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// One assignment.
pub async fn get_assignment<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Assignment>, StoreError> {
    let data: Option<String> = sqlx::query_scalar("SELECT data FROM assignments WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    data.map(|d| from_json("assignment", &d)).transpose()
}

/// A case's assignments, oldest first.
pub async fn case_assignments<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    case_id: &str,
) -> Result<Vec<Assignment>, StoreError> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT data FROM assignments WHERE case_id = $1 ORDER BY id")
            .bind(case_id)
            .fetch_all(executor)
            .await?;
    rows.iter().map(|d| from_json("assignment", d)).collect()
}

/// Assignments of `unit` (or any), in `states` (or any), of `case_id` (or any), newest first.
pub async fn list_assignments<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    unit: Option<&str>,
    states: &[AssignmentState],
    case_id: Option<&str>,
    below: Option<&str>,
    limit: i64,
) -> Result<Vec<Assignment>, StoreError> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let push = |values: &mut Vec<Value>, v: Value| {
        values.push(v);
        format!("${}", values.len())
    };
    if let Some(u) = unit {
        let p = push(&mut values, Value::Text(u.to_string()));
        clauses.push(format!("unit_id = {p}"));
    }
    if let Some(c) = case_id {
        let p = push(&mut values, Value::Text(c.to_string()));
        clauses.push(format!("case_id = {p}"));
    }
    if !states.is_empty() {
        let list: Vec<String> = states
            .iter()
            .map(|s| push(&mut values, Value::Int(i64::from(s.wire()))))
            .collect();
        clauses.push(format!("state IN ({})", list.join(", ")));
    }
    if let Some(b) = below {
        let p = push(&mut values, Value::Text(b.to_string()));
        clauses.push(format!("id < {p}"));
    }
    let limit_at = push(&mut values, Value::Int(limit));
    let where_clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql =
        format!("SELECT data FROM assignments {where_clause} ORDER BY id DESC LIMIT {limit_at}");
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = match v {
            Value::Text(t) => query.bind(t),
            Value::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(executor).await?;
    rows.iter().map(|d| from_json("assignment", d)).collect()
}

/// Pending assignments whose acceptance window passed and that were not yet noticed.
pub async fn overdue_acceptances(
    db: &Db,
    now: Micros,
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, case_id FROM assignments WHERE state = $1 AND overdue = 0 AND accept_by < $2 \
         ORDER BY accept_by LIMIT $3",
    )
    .bind(i64::from(AssignmentState::Pending.wire()))
    .bind(now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

// ----- desks -------------------------------------------------------------------------------

/// An item on a unit's desk.
#[derive(Debug, Clone)]
pub struct DeskRow {
    /// Position.
    pub cursor: Cursor,
    /// Kind (wire value of DeskItemKind).
    pub kind: i32,
    /// Note.
    pub note: String,
    /// When.
    pub create_time: Micros,
    /// Encoded assignment.
    pub payload: Vec<u8>,
}

/// An item to put on a unit's desk.
#[derive(Debug, Clone)]
pub struct NewDeskItem {
    /// The unit.
    pub unit: String,
    /// Kind (wire value of DeskItemKind).
    pub kind: i32,
    /// Note.
    pub note: String,
    /// When.
    pub create_time: Micros,
    /// Encoded assignment.
    pub payload: Vec<u8>,
}

/// Puts an item on `unit`'s desk; it becomes visible when `tx` commits.
pub async fn append_desk_item(
    tx: &mut Tx,
    unit: &str,
    kind: i32,
    note: &str,
    now: Micros,
    payload: &[u8],
) -> Result<(), StoreError> {
    append_desk_items(
        tx,
        vec![NewDeskItem {
            unit: unit.to_string(),
            kind,
            note: note.to_string(),
            create_time: now,
            payload: payload.to_vec(),
        }],
    )
    .await
}

/// Puts items on desks, in order, with multi-row statements; they become visible when `tx`
/// commits.
pub async fn append_desk_items(tx: &mut Tx, items: Vec<NewDeskItem>) -> Result<(), StoreError> {
    execute_rows(
        tx.conn(),
        5,
        items,
        |item| 80 + item.unit.len() + item.note.len() + item.payload.len(),
        |values| {
            format!(
                "INSERT INTO desk_items (unit_id, kind, note, create_time, payload) VALUES {values}"
            )
        },
        |q, item| {
            q.bind(item.unit)
                .bind(i64::from(item.kind))
                .bind(item.note)
                .bind(item.create_time)
                .bind(item.payload)
        },
    )
    .await?;
    Ok(())
}

/// Up to `limit` items of `unit`'s desk after `after`, never skipping one (ordered and held
/// back exactly like the kit's event feed).
pub async fn read_desk(
    db: &Db,
    unit: &str,
    after: Cursor,
    limit: i64,
) -> Result<Vec<DeskRow>, StoreError> {
    let rows = match db.backend() {
        Backend::Postgres => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH {} SELECT txid, seq, kind, note, create_time, payload FROM desk_items \
                 WHERE unit_id = $1 AND (txid, seq) > ($2, $3) \
                   AND txid < (SELECT below FROM horizon) \
                 ORDER BY txid, seq LIMIT $4",
                minqing_kit::feed::horizon_cte(5)
            )))
            .bind(unit)
            .bind(after.txid)
            .bind(after.seq)
            .bind(limit)
            .bind(db.xids().param(&Pass::default()))
            .fetch_all(db.pool())
            .await?
        }
        Backend::Sqlite => {
            sqlx::query(
                "SELECT txid, seq, kind, note, create_time, payload FROM desk_items \
                 WHERE unit_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(unit)
            .bind(after.seq)
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(DeskRow {
                cursor: Cursor {
                    txid: r.try_get(0)?,
                    seq: r.try_get(1)?,
                },
                kind: r.try_get::<i64, _>(2)? as i32,
                note: r.try_get(3)?,
                create_time: r.try_get(4)?,
                payload: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Whether items after what [`read_desk`] returned are committed but not yet readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeskHeld {
    /// Nothing is waiting.
    No,
    /// Held back by an older running transaction of this service (PostgreSQL): look again
    /// very soon.
    Soon,
    /// The transaction holding them back turned out to be another service's: read again now.
    Now,
}

/// Whether items after `after` are committed but held back behind an older running
/// transaction (PostgreSQL).
pub async fn desk_held_back(db: &Db, unit: &str, after: Cursor) -> Result<DeskHeld, StoreError> {
    if db.backend() != Backend::Postgres {
        return Ok(DeskHeld::No);
    }
    let below: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH {} SELECT (SELECT below FROM horizon) FROM desk_items \
         WHERE unit_id = $1 AND (txid, seq) > ($2, $3) LIMIT 1",
        minqing_kit::feed::horizon_cte(4)
    )))
    .bind(unit)
    .bind(after.txid)
    .bind(after.seq)
    .bind(db.xids().param(&Pass::default()))
    .fetch_optional(db.pool())
    .await?;
    Ok(match below {
        None => DeskHeld::No,
        Some(below) if db.xids().learn(db, below, &Pass::default()).await? => DeskHeld::Now,
        Some(_) => DeskHeld::Soon,
    })
}

/// The cursor a unit saved.
pub async fn desk_cursor(db: &Db, unit: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT cursor FROM desk_cursors WHERE unit_id = $1")
            .bind(unit)
            .fetch_optional(db.pool())
            .await?,
    )
}

/// Saves a unit's cursor.
pub async fn save_desk_cursor(
    tx: &mut Tx,
    unit: &str,
    cursor: &str,
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO desk_cursors (unit_id, cursor, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT (unit_id) DO UPDATE SET cursor = excluded.cursor, update_time = excluded.update_time",
    )
    .bind(unit)
    .bind(cursor)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

// ----- rule loads --------------------------------------------------------------------------

/// Records the rule set in force; the previous version when it changed, `None` when the same
/// set was in force already (no event then).
pub async fn record_rule_load(
    tx: &mut Tx,
    sha256: &str,
    version: &str,
    now: Micros,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT sha256, version FROM rule_loads WHERE id = 1")
        .fetch_optional(tx.conn())
        .await?;
    let previous = match row {
        Some(r) => {
            let (sha, version): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            if sha == sha256 {
                return Ok(None);
            }
            version
        }
        None => String::new(),
    };
    sqlx::query(
        "INSERT INTO rule_loads (id, sha256, version, load_time) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET sha256 = excluded.sha256, version = excluded.version, load_time = excluded.load_time",
    )
    .bind(sha256)
    .bind(version)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(Some(previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minqing_kit::{
        db::Migrations,
        feed::{self, EventMeta},
        testing::TestDatabase,
    };

    const NONE: Migrations = Migrations {
        sqlite: &[],
        postgres: &[],
    };

    async fn put(db: &Db, unit: &str, note: &str) {
        let mut tx = db.begin().await.unwrap();
        append_desk_item(&mut tx, unit, 1, note, 0, b"")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn notes(db: &Db, unit: &str, after: Cursor) -> Vec<String> {
        read_desk(db, unit, after, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.note)
            .collect()
    }

    /// A desk is held back by routing's own running transactions only: one of another
    /// service is learnt to be passed over, and the desk is read again at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_desk_waits_for_routing_transactions_only() {
        let Some(t) = TestDatabase::new(Backend::Postgres).await else {
            return;
        };
        let db = t.db("routing", &MIGRATIONS).await;
        let other = t.db("supervision", &NONE).await;
        let unit = "units/clinic";

        // Another service's transaction, older than the item.
        let mut long = other.begin().await.unwrap();
        feed::append(
            &mut long,
            &EventMeta::current("test"),
            "x",
            &prost_types::Duration::default(),
            0,
        )
        .await
        .unwrap();
        put(&db, unit, "first").await;
        let start = Cursor::START;
        // Not yet known to be another service's, it holds the first read; a probe that sees
        // it again looks it up and says to read again now. (Other tests' transactions, in
        // other databases, may be looked up first.)
        assert!(notes(&db, unit, start).await.is_empty());
        let mut probes = Vec::new();
        while probes.last() != Some(&DeskHeld::Now) && probes.len() < 100 {
            probes.push(desk_held_back(&db, unit, start).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        assert_eq!(probes.last(), Some(&DeskHeld::Now), "{probes:?}");
        assert!(probes.iter().all(|p| *p != DeskHeld::No), "{probes:?}");
        assert_eq!(notes(&db, unit, start).await, ["first"]);
        let after = read_desk(&db, unit, start, 10).await.unwrap()[0].cursor;
        assert_eq!(
            desk_held_back(&db, unit, after).await.unwrap(),
            DeskHeld::No
        );
        long.commit().await.unwrap();

        // Routing's own: the item after it waits.
        let mut own = db.begin().await.unwrap();
        append_desk_item(&mut own, "units/other", 1, "slow", 0, b"")
            .await
            .unwrap();
        put(&db, unit, "second").await;
        for _ in 0..5 {
            assert!(notes(&db, unit, after).await.is_empty());
            assert_eq!(
                desk_held_back(&db, unit, after).await.unwrap(),
                DeskHeld::Soon
            );
        }
        own.commit().await.unwrap();
        assert_eq!(notes(&db, unit, after).await, ["second"]);
    }
}
