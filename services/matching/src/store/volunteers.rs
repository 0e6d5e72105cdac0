//! Volunteers: rows, skills and team memberships for filtering, and the load each carries.

use std::collections::HashMap;

use sqlx::{Any, Executor, Row};

use super::{Inserted, Val, Where, decode_error, from_doc, to_doc};
use crate::{
    calendar::Calendar,
    domain::{AssignmentOrigin, AssignmentState, Volunteer},
    rank::{FAIRNESS_WINDOW, Load},
};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

fn from_row(row: &sqlx::any::AnyRow) -> Result<Volunteer, StoreError> {
    let doc: String = row.try_get("doc")?;
    let mut v: Volunteer = from_doc(&doc)?;
    v.version = row.try_get("version")?;
    Ok(v)
}

async fn write_side_tables(tx: &mut Tx, v: &Volunteer) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM volunteer_skills WHERE volunteer_id = $1")
        .bind(&v.id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM volunteer_teams WHERE volunteer_id = $1")
        .bind(&v.id)
        .execute(tx.conn())
        .await?;
    for s in &v.profile.skills {
        sqlx::query("INSERT INTO volunteer_skills (volunteer_id, skill) VALUES ($1, $2)")
            .bind(&v.id)
            .bind(&s.skill)
            .execute(tx.conn())
            .await?;
    }
    for t in &v.profile.teams {
        sqlx::query("INSERT INTO volunteer_teams (volunteer_id, team_id) VALUES ($1, $2)")
            .bind(&v.id)
            .bind(t)
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// Inserts a volunteer unless `(registered_by, request_id)` was used before. A clash on the
/// external id is a unique violation the caller maps to ALREADY_EXISTS.
pub async fn insert(
    tx: &mut Tx,
    v: &Volunteer,
    request_hash: &str,
) -> Result<Inserted<Volunteer>, StoreError> {
    let p = &v.profile;
    let done = sqlx::query(
        "INSERT INTO volunteers (id, registered_by, request_id, request_hash, external_id, \
            district, street, community, grid, building, state, party_member, organisation, \
            create_time, update_time, version, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (registered_by, request_id) DO NOTHING",
    )
    .bind(&v.id)
    .bind(&v.registered_by)
    .bind(&v.request_id)
    .bind(request_hash)
    .bind(&p.external_id)
    .bind(&p.home.district)
    .bind(&p.home.street)
    .bind(&p.home.community)
    .bind(&p.home.grid)
    .bind(&p.home.building)
    .bind(i64::from(v.state.wire()))
    .bind(i64::from(p.party_member))
    .bind(p.organisation.clone().unwrap_or_default())
    .bind(v.create_time)
    .bind(v.update_time)
    .bind(v.version)
    .bind(to_doc(v)?)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 1 {
        write_side_tables(tx, v).await?;
        return Ok(Inserted::New);
    }
    let row = sqlx::query(
        "SELECT doc, version, request_hash FROM volunteers WHERE registered_by = $1 AND request_id = $2",
    )
    .bind(&v.registered_by)
    .bind(&v.request_id)
    .fetch_one(tx.conn())
    .await?;
    let existing = from_row(&row)?;
    Ok(Inserted::Existing {
        request_hash: row.try_get("request_hash")?,
        value: Box::new(existing),
    })
}

/// One volunteer.
pub async fn get<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Volunteer>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM volunteers WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The volunteer with `external_id`.
pub async fn by_external_id<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    external_id: &str,
) -> Result<Option<Volunteer>, StoreError> {
    let row = sqlx::query("SELECT doc, version FROM volunteers WHERE external_id = $1")
        .bind(external_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes `v` if the row is still at `expected_version` (then at `v.version`); false if it
/// changed meanwhile.
pub async fn update(tx: &mut Tx, v: &Volunteer, expected_version: i64) -> Result<bool, StoreError> {
    let p = &v.profile;
    let done = sqlx::query(
        "UPDATE volunteers SET external_id = $2, district = $3, street = $4, community = $5, \
            grid = $6, building = $7, state = $8, party_member = $9, organisation = $10, \
            update_time = $11, version = $12, doc = $13 \
         WHERE id = $1 AND version = $14",
    )
    .bind(&v.id)
    .bind(&p.external_id)
    .bind(&p.home.district)
    .bind(&p.home.street)
    .bind(&p.home.community)
    .bind(&p.home.grid)
    .bind(&p.home.building)
    .bind(i64::from(v.state.wire()))
    .bind(i64::from(p.party_member))
    .bind(p.organisation.clone().unwrap_or_default())
    .bind(v.update_time)
    .bind(v.version)
    .bind(to_doc(v)?)
    .bind(expected_version)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    write_side_tables(tx, v).await?;
    Ok(true)
}

/// Bumps a volunteer's version (their load changed) if still at `expected`; false if not.
pub async fn bump(tx: &mut Tx, id: &str, expected: i64) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE volunteers SET version = version + 1 WHERE id = $1 AND version = $2")
            .bind(id)
            .bind(expected)
            .execute(tx.conn())
            .await?;
    Ok(done.rows_affected() == 1)
}

/// A list filter, already checked.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `(column, code)` of a place.
    pub place: Option<(&'static str, String)>,
    /// The caller's place scope.
    pub scope: Option<(&'static str, String)>,
    /// Skill.
    pub skill: Option<String>,
    /// Team id.
    pub team: Option<String>,
    /// Organisation id.
    pub organisation: Option<String>,
    /// States.
    pub states: Vec<i64>,
    /// Party members only.
    pub party_members_only: bool,
    /// External id.
    pub external_id: Option<String>,
    /// Keyset: ids after this one.
    pub after_id: Option<String>,
}

/// Volunteers matching `filter`, by id (registration order), up to `limit`.
pub async fn list<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    f: &Filter,
    limit: i64,
) -> Result<Vec<Volunteer>, StoreError> {
    let mut w = Where::default();
    for (column, code) in [&f.place, &f.scope].into_iter().flatten() {
        w.text(column, code);
    }
    if let Some(skill) = &f.skill {
        let p = w.arg(Val::Text(skill.clone()));
        w.push(format!(
            "id IN (SELECT volunteer_id FROM volunteer_skills WHERE skill = {p})"
        ));
    }
    if let Some(team) = &f.team {
        let p = w.arg(Val::Text(team.clone()));
        w.push(format!(
            "id IN (SELECT volunteer_id FROM volunteer_teams WHERE team_id = {p})"
        ));
    }
    if let Some(org) = &f.organisation {
        w.text("organisation", org);
    }
    w.ints_in("state", &f.states);
    if f.party_members_only {
        w.push("party_member = 1".into());
    }
    if let Some(x) = &f.external_id {
        w.text("external_id", x);
    }
    if let Some(after) = &f.after_id {
        let p = w.arg(Val::Text(after.clone()));
        w.push(format!("id > {p}"));
    }
    let p = w.arg(Val::Int(limit));
    let sql = format!(
        "SELECT doc, version FROM volunteers{} ORDER BY id LIMIT {p}",
        w.sql()
    );
    let rows = w
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Every volunteer that is not retired (the index's snapshot).
pub async fn all_current<'c, E: Executor<'c, Database = Any>>(
    executor: E,
) -> Result<Vec<Volunteer>, StoreError> {
    let rows = sqlx::query("SELECT doc, version FROM volunteers WHERE state <> $1 ORDER BY id")
        .bind(i64::from(crate::domain::VolunteerState::Retired.wire()))
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Active members of a team.
pub async fn team_member_count<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    team_id: &str,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM volunteer_teams t JOIN volunteers v ON v.id = t.volunteer_id \
         WHERE t.team_id = $1 AND v.state <> $2",
    )
    .bind(team_id)
    .bind(i64::from(crate::domain::VolunteerState::Retired.wire()))
    .fetch_one(executor)
    .await?)
}

fn open_states() -> [i64; 3] {
    AssignmentState::OPEN.map(|s| i64::from(s.wire()))
}

/// The assignment rows that make up loads: open ones, done ones starting from last week on,
/// and recent offers. For one volunteer (`Some(name)`) or all.
async fn load_rows<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    assignee: Option<&str>,
    now: Micros,
) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
    let [a, b, c] = open_states();
    let since = now - FAIRNESS_WINDOW - 8 * 86_400_000_000;
    let filter = if assignee.is_some() {
        "assignee = $7 AND"
    } else {
        "assignee LIKE 'volunteers/%' AND"
    };
    let sql = format!(
        "SELECT assignee, state, origin, start_time, effort_minutes, minutes, create_time FROM assignments \
         WHERE {filter} (state IN ($1, $2, $3) OR (state = $4 AND start_time >= $5) OR create_time >= $6)"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(i64::from(AssignmentState::Done.wire()))
        .bind(since)
        .bind(since);
    if let Some(name) = assignee {
        q = q.bind(name.to_string());
    }
    Ok(q.fetch_all(executor).await?)
}

fn add_row(
    load: &mut Load,
    row: &sqlx::any::AnyRow,
    calendar: &Calendar,
    now: Micros,
) -> Result<(), StoreError> {
    let state: i64 = row.try_get(1)?;
    let origin: i64 = row.try_get(2)?;
    let start: i64 = row.try_get(3)?;
    let effort: i64 = row.try_get(4)?;
    let minutes: i64 = row.try_get(5)?;
    let created: i64 = row.try_get(6)?;
    let state = AssignmentState::from_wire(state as i32)
        .ok_or_else(|| decode_error("assignment state", state))?;
    let week = calendar.week(start);
    let add = |load: &mut Load, m: u32| match load.weeks.iter_mut().find(|(w, _)| *w == week) {
        Some(slot) => slot.1 += m,
        None => load.weeks.push((week, m)),
    };
    if state.is_open() {
        load.open_tasks += 1;
        add(load, effort.clamp(0, i64::from(u32::MAX)) as u32);
    } else if state == AssignmentState::Done {
        add(load, minutes.clamp(0, i64::from(u32::MAX)) as u32);
    }
    let offered = matches!(
        AssignmentOrigin::from_wire(origin as i32),
        Some(AssignmentOrigin::Offer | AssignmentOrigin::Plan | AssignmentOrigin::Reassignment)
    );
    if offered && created > now - FAIRNESS_WINDOW {
        load.offers.push(created);
    }
    Ok(())
}

/// One volunteer's load.
pub async fn load<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    volunteer_id: &str,
    calendar: &Calendar,
    now: Micros,
) -> Result<Load, StoreError> {
    let name = format!("volunteers/{volunteer_id}");
    let rows = load_rows(executor, Some(&name), now).await?;
    let mut load = Load::default();
    for row in &rows {
        add_row(&mut load, row, calendar, now)?;
    }
    Ok(load)
}

/// Every volunteer's load, by volunteer id.
pub async fn all_loads<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    calendar: &Calendar,
    now: Micros,
) -> Result<HashMap<String, Load>, StoreError> {
    let rows = load_rows(executor, None, now).await?;
    let mut out: HashMap<String, Load> = HashMap::new();
    for row in &rows {
        let assignee: String = row.try_get(0)?;
        let id = assignee.trim_start_matches("volunteers/").to_string();
        add_row(out.entry(id).or_default(), row, calendar, now)?;
    }
    Ok(out)
}

/// Totals for a volunteer's stats: `(minutes, assignments done)`.
pub async fn totals<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    volunteer_id: &str,
) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(minutes), 0) AS BIGINT), COUNT(*) FROM assignments \
         WHERE assignee = $1 AND state = $2",
    )
    .bind(format!("volunteers/{volunteer_id}"))
    .bind(i64::from(AssignmentState::Done.wire()))
    .fetch_one(executor)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}
