//! Assignments, and the rows service records are summed from.

use sqlx::{Any, Executor, Row};

use super::{Inserted, Val, Where, from_doc, to_doc};
use crate::domain::{Assignment, AssignmentState};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

fn from_row(row: &sqlx::any::AnyRow) -> Result<Assignment, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut a: Assignment = from_doc(&doc)?;
    a.version = row.try_get("version")?;
    Ok(a)
}

/// Inserts an assignment; with a request id, unless `(created_by, request_id)` was used.
pub async fn insert(
    tx: &mut Tx,
    a: &Assignment,
    hash: &str,
) -> Result<Inserted<Assignment>, StoreError> {
    let p = &a.place;
    let sql = format!(
        "INSERT INTO assignments (id, created_by, request_id, request_hash, need_id, case_name, \
            district, street, community, grid, building, assignee, team_id, organisation_id, origin, \
            state, start_time, effort_minutes, minutes, offer_expire_time, complete_time, \
            create_time, update_time, version, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
            $19, $20, $21, $22, $23, $24, $25){}",
        if a.request_id.is_empty() {
            ""
        } else {
            " ON CONFLICT (created_by, request_id) WHERE request_id <> '' DO NOTHING"
        }
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&a.id)
        .bind(&a.created_by)
        .bind(&a.request_id)
        .bind(hash)
        .bind(&a.need_id)
        .bind(a.case.clone().unwrap_or_default())
        .bind(&p.district)
        .bind(&p.street)
        .bind(&p.community)
        .bind(&p.grid)
        .bind(&p.building)
        .bind(a.assignee.name())
        .bind(a.team.clone().unwrap_or_default())
        .bind(a.organisation.clone().unwrap_or_default())
        .bind(i64::from(a.origin.wire()))
        .bind(i64::from(a.state.wire()))
        .bind(a.start)
        .bind(i64::from(a.effort_minutes))
        .bind(i64::from(a.minutes))
        .bind(a.offer_expire_time.unwrap_or(0))
        .bind(a.complete_time.unwrap_or(0))
        .bind(a.create_time)
        .bind(a.update_time)
        .bind(a.version)
        .bind(to_doc(a)?)
        .execute(tx.conn())
        .await?;
    if done.rows_affected() == 1 {
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM assignments WHERE created_by = $1 AND request_id = $2",
    )
    .bind(&a.created_by)
    .bind(&a.request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Inserted::Existing {
        request_hash: row.try_get("request_hash")?,
        value: Box::new(from_row(&row)?),
    })
}

/// One assignment.
pub async fn get<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Assignment>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM assignments WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes an assignment if still at `expected`.
pub async fn update(tx: &mut Tx, a: &Assignment, expected: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE assignments SET team_id = $2, organisation_id = $3, state = $4, minutes = $5, \
            offer_expire_time = $6, complete_time = $7, update_time = $8, version = $9, doc = $10 \
         WHERE id = $1 AND version = $11",
    )
    .bind(&a.id)
    .bind(a.team.clone().unwrap_or_default())
    .bind(a.organisation.clone().unwrap_or_default())
    .bind(i64::from(a.state.wire()))
    .bind(i64::from(a.minutes))
    .bind(a.offer_expire_time.unwrap_or(0))
    .bind(a.complete_time.unwrap_or(0))
    .bind(a.update_time)
    .bind(a.version)
    .bind(to_doc(a)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A list filter, already checked.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Need id.
    pub need: Option<String>,
    /// Assignee name.
    pub assignee: Option<String>,
    /// States.
    pub states: Vec<i64>,
    /// `(column, code)`.
    pub place: Option<(&'static str, String)>,
    /// The caller's scope.
    pub scope: Option<(&'static str, String)>,
    /// Case name.
    pub case: Option<String>,
    /// Keyset: ids before this one.
    pub before_id: Option<String>,
}

/// Assignments matching `f`, newest first.
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    f: &Filter,
    limit: i64,
) -> Result<Vec<Assignment>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [&f.place, &f.scope].into_iter().flatten() {
        w.text(column, code);
    }
    if let Some(n) = &f.need {
        w.text("need_id", n);
    }
    if let Some(a) = &f.assignee {
        w.text("assignee", a);
    }
    w.ints_in("state", &f.states);
    if let Some(c) = &f.case {
        w.text("case_name", c);
    }
    if let Some(b) = &f.before_id {
        let p = w.arg(Val::Text(b.clone()));
        w.push(format!("id < {p}"));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc, version FROM assignments{} ORDER BY id DESC LIMIT {p}",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// A need's open assignments.
pub async fn open_for_need<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    need_id: &str,
) -> Result<Vec<Assignment>, StoreError> {
    let f = Filter {
        need: Some(need_id.to_string()),
        states: AssignmentState::OPEN
            .iter()
            .map(|s| i64::from(s.wire()))
            .collect(),
        ..Default::default()
    };
    list(executor, &f, 10_000).await
}

/// An assignee's open assignments.
pub async fn open_for_assignee<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    assignee: &str,
) -> Result<Vec<Assignment>, StoreError> {
    let f = Filter {
        assignee: Some(assignee.to_string()),
        states: AssignmentState::OPEN
            .iter()
            .map(|s| i64::from(s.wire()))
            .collect(),
        ..Default::default()
    };
    list(executor, &f, 10_000).await
}

/// Offers whose answer was due before `now`, oldest first.
pub async fn expired_offers<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    now: Micros,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM assignments WHERE state = $1 AND offer_expire_time > 0 AND offer_expire_time <= $2 \
         ORDER BY offer_expire_time LIMIT $3",
    )
    .bind(i64::from(AssignmentState::Offered.wire()))
    .bind(now)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}

/// Done assignments completed in `[start, end)`, optionally at a place: the raw material of
/// service records.
pub async fn done_between<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    start: Micros,
    end: Micros,
    place: Option<(&'static str, String)>,
    scope: Option<(&'static str, String)>,
) -> Result<Vec<Assignment>, StoreError> {
    let mut w = Where::default();
    let ps = w.arg(Val::Int(i64::from(AssignmentState::Done.wire())));
    w.push(format!("state = {ps}"));
    let a = w.arg(Val::Int(start));
    let b = w.arg(Val::Int(end));
    w.push(format!("complete_time >= {a} AND complete_time < {b}"));
    for (column, code) in [place, scope].into_iter().flatten() {
        w.text(column, &code);
    }
    let sql = format!(
        "SELECT doc, version FROM assignments{} ORDER BY complete_time, id",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The assignment an earlier request with this id made, and that request's hash.
pub async fn by_request<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    created_by: &str,
    request_id: &str,
) -> Result<Option<(String, Assignment)>, StoreError> {
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM assignments WHERE created_by = $1 AND request_id = $2",
    )
    .bind(created_by)
    .bind(request_id)
    .fetch_optional(executor)
    .await?;
    row.map(|r| Ok((r.try_get("request_hash")?, from_row(&r)?)))
        .transpose()
}
