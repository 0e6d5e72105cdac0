//! Teams and partner organisations.

use sqlx::{Any, Executor, Row};

use super::{Inserted, Val, Where, from_doc, to_doc};
use crate::domain::{Organisation, Place, Team};
use minqing_kit::{db::Tx, error::StoreError};

fn team_from_row(row: &sqlx::any::AnyRow) -> Result<Team, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut t: Team = from_doc(&doc)?;
    t.version = row.try_get("version")?;
    Ok(t)
}

fn org_from_row(row: &sqlx::any::AnyRow) -> Result<Organisation, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut o: Organisation = from_doc(&doc)?;
    o.version = row.try_get("version")?;
    Ok(o)
}

/// Inserts a team unless `(created_by, request_id)` was used before.
pub async fn insert_team(tx: &mut Tx, t: &Team, hash: &str) -> Result<Inserted<Team>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO teams (id, created_by, request_id, request_hash, kind, state, district, street, \
            community, grid, building, create_time, update_time, version, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (created_by, request_id) DO NOTHING",
    )
    .bind(&t.id)
    .bind(&t.created_by)
    .bind(&t.request_id)
    .bind(hash)
    .bind(i64::from(t.kind.wire()))
    .bind(i64::from(t.state.wire()))
    .bind(&t.place.district)
    .bind(&t.place.street)
    .bind(&t.place.community)
    .bind(&t.place.grid)
    .bind(&t.place.building)
    .bind(t.create_time)
    .bind(t.update_time)
    .bind(t.version)
    .bind(to_doc(t)?)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM teams WHERE created_by = $1 AND request_id = $2",
    )
    .bind(&t.created_by)
    .bind(&t.request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Inserted::Existing {
        request_hash: row.try_get("request_hash")?,
        value: Box::new(team_from_row(&row)?),
    })
}

/// One team.
pub async fn get_team<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Team>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM teams WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(team_from_row).transpose()
}

/// Writes a team if still at `expected`.
pub async fn update_team(tx: &mut Tx, t: &Team, expected: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE teams SET kind = $2, state = $3, district = $4, street = $5, community = $6, \
            grid = $7, building = $8, update_time = $9, version = $10, doc = $11 \
         WHERE id = $1 AND version = $12",
    )
    .bind(&t.id)
    .bind(i64::from(t.kind.wire()))
    .bind(i64::from(t.state.wire()))
    .bind(&t.place.district)
    .bind(&t.place.street)
    .bind(&t.place.community)
    .bind(&t.place.grid)
    .bind(&t.place.building)
    .bind(t.update_time)
    .bind(t.version)
    .bind(to_doc(t)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Teams at a place (column, code) and of a kind, by id after `after`, up to `limit`.
pub async fn list_teams<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    place: Option<(&'static str, String)>,
    scope: Option<(&'static str, String)>,
    kind: Option<i64>,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<Team>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [place, scope].into_iter().flatten() {
        w.text(column, &code);
    }
    if let Some(k) = kind {
        let p = w.arg(Val::Int(k));
        w.push(format!("kind = {p}"));
    }
    if let Some(a) = after {
        let p = w.arg(Val::Text(a));
        w.push(format!("id > {p}"));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc, version FROM teams{} ORDER BY id LIMIT {p}",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(team_from_row).collect()
}

async fn write_org_places(tx: &mut Tx, id: &str, places: &[Place]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM organisation_places WHERE organisation_id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    for p in places {
        sqlx::query(
            "INSERT INTO organisation_places (organisation_id, district, street, community) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(&p.district)
        .bind(&p.street)
        .bind(&p.community)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Inserts an organisation (with its communities, resolved) unless the request id was used.
pub async fn insert_org(
    tx: &mut Tx,
    o: &Organisation,
    places: &[Place],
    hash: &str,
) -> Result<Inserted<Organisation>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO organisations (id, created_by, request_id, request_hash, kind, state, \
            create_time, update_time, version, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (created_by, request_id) DO NOTHING",
    )
    .bind(&o.id)
    .bind(&o.created_by)
    .bind(&o.request_id)
    .bind(hash)
    .bind(i64::from(o.kind.wire()))
    .bind(i64::from(o.state.wire()))
    .bind(o.create_time)
    .bind(o.update_time)
    .bind(o.version)
    .bind(to_doc(o)?)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        write_org_places(tx, &o.id, places).await?;
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM organisations WHERE created_by = $1 AND request_id = $2",
    )
    .bind(&o.created_by)
    .bind(&o.request_id)
    .fetch_one(tx.conn())
    .await?;
    Ok(Inserted::Existing {
        request_hash: row.try_get("request_hash")?,
        value: Box::new(org_from_row(&row)?),
    })
}

/// One organisation.
pub async fn get_org<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Organisation>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM organisations WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(org_from_row).transpose()
}

/// Writes an organisation if still at `expected` (and its communities when given).
pub async fn update_org(
    tx: &mut Tx,
    o: &Organisation,
    places: Option<&[Place]>,
    expected: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE organisations SET kind = $2, state = $3, update_time = $4, version = $5, doc = $6 \
         WHERE id = $1 AND version = $7",
    )
    .bind(&o.id)
    .bind(i64::from(o.kind.wire()))
    .bind(i64::from(o.state.wire()))
    .bind(o.update_time)
    .bind(o.version)
    .bind(to_doc(o)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    if let Some(places) = places {
        write_org_places(tx, &o.id, places).await?;
    }
    Ok(true)
}

/// Organisations partnering with a community at a place (column, code), by id.
pub async fn list_orgs<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    place: Option<(&'static str, String)>,
    scope: Option<(&'static str, String)>,
    kind: Option<i64>,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<Organisation>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [place, scope].into_iter().flatten() {
        // Organisations have no grid or building: a finer code matches its community.
        let column = match column {
            "grid" | "building" => "community",
            c => c,
        };
        let p = w.arg(Val::Text(code));
        w.push(format!(
            "id IN (SELECT organisation_id FROM organisation_places WHERE {column} = {p})"
        ));
    }
    if let Some(k) = kind {
        let p = w.arg(Val::Int(k));
        w.push(format!("kind = {p}"));
    }
    if let Some(a) = after {
        let p = w.arg(Val::Text(a));
        w.push(format!("id > {p}"));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc, version FROM organisations{} ORDER BY id LIMIT {p}",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(org_from_row).collect()
}
