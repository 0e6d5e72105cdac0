//! Needs (the menu's items) and published menus.

use std::collections::HashSet;

use sqlx::{Any, Executor, Row};

use super::{Inserted, Val, Where, from_doc, to_doc};
use crate::domain::{Menu, Need};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

fn from_row(row: &sqlx::any::AnyRow) -> Result<Need, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut n: Need = from_doc(&doc)?;
    n.version = row.try_get("version")?;
    Ok(n)
}

async fn write_skills(tx: &mut Tx, n: &Need) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM need_skills WHERE need_id = $1")
        .bind(&n.id)
        .execute(tx.conn())
        .await?;
    for s in &n.spec.skills {
        sqlx::query("INSERT INTO need_skills (need_id, skill) VALUES ($1, $2)")
            .bind(&n.id)
            .bind(&s.skill)
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// Inserts a need unless `(posted_by, request_id)` was used before.
pub async fn insert(tx: &mut Tx, n: &Need, hash: &str) -> Result<Inserted<Need>, StoreError> {
    let p = &n.spec.place;
    let done = sqlx::query(
        "INSERT INTO needs (id, posted_by, request_id, request_hash, source, case_name, district, \
            street, community, grid, building, state, start_time, end_time, urgency, menu_id, \
            create_time, update_time, version, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT (posted_by, request_id) DO NOTHING",
    )
    .bind(&n.id)
    .bind(&n.posted_by)
    .bind(&n.request_id)
    .bind(hash)
    .bind(i64::from(n.source.wire()))
    .bind(n.case.clone().unwrap_or_default())
    .bind(&p.district)
    .bind(&p.street)
    .bind(&p.community)
    .bind(&p.grid)
    .bind(&p.building)
    .bind(i64::from(n.state.wire()))
    .bind(n.spec.start)
    .bind(n.spec.end)
    .bind(i64::from(n.spec.urgency.wire()))
    .bind(n.menu.clone().unwrap_or_default())
    .bind(n.create_time)
    .bind(n.update_time)
    .bind(n.version)
    .bind(to_doc(n)?)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        write_skills(tx, n).await?;
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM needs WHERE posted_by = $1 AND request_id = $2",
    )
    .bind(&n.posted_by)
    .bind(&n.request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Inserted::Existing {
        request_hash: row.try_get("request_hash")?,
        value: Box::new(from_row(&row)?),
    })
}

/// One need.
pub async fn get<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Need>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM needs WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes a need if still at `expected` (then at `n.version`); false if it changed.
pub async fn update(tx: &mut Tx, n: &Need, expected: i64) -> Result<bool, StoreError> {
    let p = &n.spec.place;
    let done = sqlx::query(
        "UPDATE needs SET district = $2, street = $3, community = $4, grid = $5, building = $6, \
            state = $7, start_time = $8, end_time = $9, urgency = $10, menu_id = $11, \
            update_time = $12, version = $13, doc = $14 \
         WHERE id = $1 AND version = $15",
    )
    .bind(&n.id)
    .bind(&p.district)
    .bind(&p.street)
    .bind(&p.community)
    .bind(&p.grid)
    .bind(&p.building)
    .bind(i64::from(n.state.wire()))
    .bind(n.spec.start)
    .bind(n.spec.end)
    .bind(i64::from(n.spec.urgency.wire()))
    .bind(n.menu.clone().unwrap_or_default())
    .bind(n.update_time)
    .bind(n.version)
    .bind(to_doc(n)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    write_skills(tx, n).await?;
    Ok(true)
}

/// A list filter, already checked.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `(column, code)`.
    pub place: Option<(&'static str, String)>,
    /// The caller's scope.
    pub scope: Option<(&'static str, String)>,
    /// Skill.
    pub skill: Option<String>,
    /// Window overlap: `[start, end)`.
    pub window: Option<(Micros, Micros)>,
    /// States.
    pub states: Vec<i64>,
    /// Case name.
    pub case: Option<String>,
    /// Menu id.
    pub menu: Option<String>,
    /// Explicit ids.
    pub ids: Vec<String>,
    /// Keyset: after `(start_time, id)`.
    pub after: Option<(Micros, String)>,
}

/// Needs matching `f`, soonest window first, up to `limit`.
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    f: &Filter,
    limit: i64,
) -> Result<Vec<Need>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [&f.place, &f.scope].into_iter().flatten() {
        w.text(column, code);
    }
    if let Some(skill) = &f.skill {
        let p = w.arg(Val::Text(skill.clone()));
        w.push(format!(
            "id IN (SELECT need_id FROM need_skills WHERE skill = {p})"
        ));
    }
    if let Some((s, e)) = f.window {
        let ps = w.arg(Val::Int(s));
        let pe = w.arg(Val::Int(e));
        w.push(format!("end_time > {ps} AND start_time < {pe}"));
    }
    w.ints_in("state", &f.states);
    if let Some(c) = &f.case {
        w.text("case_name", c);
    }
    if let Some(m) = &f.menu {
        w.text("menu_id", m);
    }
    if !f.ids.is_empty() {
        let list: Vec<String> = f.ids.iter().map(|i| w.arg(Val::Text(i.clone()))).collect();
        w.push(format!("id IN ({})", list.join(", ")));
    }
    if let Some((t, id)) = &f.after {
        let pt = w.arg(Val::Int(*t));
        let pt2 = w.arg(Val::Int(*t));
        let pi = w.arg(Val::Text(id.clone()));
        w.push(format!(
            "(start_time > {pt} OR (start_time = {pt2} AND id > {pi}))"
        ));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc, version FROM needs{} ORDER BY start_time, id LIMIT {p}",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Volunteers (ids) that were ever offered or assigned `need_id`, in any state: a need is not
/// offered twice to the same person.
pub async fn asked<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    need_id: &str,
) -> Result<HashSet<String>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT assignee FROM assignments WHERE need_id = $1 AND assignee LIKE 'volunteers/%'",
    )
    .bind(need_id)
    .fetch_all(executor)
    .await?;
    Ok(names
        .into_iter()
        .map(|n| n.trim_start_matches("volunteers/").to_string())
        .collect())
}

/// Inserts a menu unless the request id was used before.
pub async fn insert_menu(
    tx: &mut Tx,
    m: &Menu,
    place: &crate::domain::Place,
    hash: &str,
) -> Result<Inserted<Menu>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO menus (id, published_by, request_id, request_hash, district, street, community, publish_time, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (published_by, request_id) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.published_by)
    .bind(&m.request_id)
    .bind(hash)
    .bind(&place.district)
    .bind(&place.street)
    .bind(&place.community)
    .bind(m.publish_time)
    .bind(to_doc(m)?)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, request_hash FROM menus WHERE published_by = $1 AND request_id = $2",
    )
    .bind(&m.published_by)
    .bind(&m.request_id)
    .fetch_one(tx.conn())
    .await?;
    let doc: String = row.try_get(0)?;
    Ok(Inserted::Existing {
        request_hash: row.try_get(1)?,
        value: Box::new(from_doc(&doc)?),
    })
}

/// One menu.
pub async fn get_menu<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Menu>, StoreError> {
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM menus WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    doc.as_deref().map(from_doc).transpose()
}

/// Menus at a place, newest first (ids are time-ordered), before `before`.
pub async fn list_menus<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    place: Option<(&'static str, String)>,
    scope: Option<(&'static str, String)>,
    before: Option<String>,
    limit: i64,
) -> Result<Vec<Menu>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [place, scope].into_iter().flatten() {
        let column = match column {
            "grid" | "building" => "community",
            c => c,
        };
        w.text(column, &code);
    }
    if let Some(b) = before {
        let p = w.arg(Val::Text(b));
        w.push(format!("id < {p}"));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc FROM menus{} ORDER BY id DESC LIMIT {p}",
        w.sql()
    );
    let docs: Vec<String> = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    docs.iter().map(|d| from_doc(d)).collect()
}
