//! Deputies' liaison stations: their records and storage. Stations, deputies, rotas,
//! sessions and suggestions are JSON records beside the columns queries filter on.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Executor, Row};

use crate::{
    domain::Weekday,
    store::{from_json, to_json},
};
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

/// A liaison station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Station {
    /// Id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// Place code served.
    pub place: String,
    /// Address.
    pub address: String,
    /// Receiving residents.
    pub active: bool,
    /// Created.
    pub create_time: Micros,
    /// Changed.
    pub update_time: Micros,
}

/// A deputy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deputy {
    /// Id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// Kind (wire value of DeputyKind).
    pub kind: i32,
    /// Station ids.
    pub stations: Vec<String>,
    /// Congress or conference and term.
    pub body: String,
    /// Phone (personal data).
    pub phone: String,
    /// Serving.
    pub active: bool,
    /// Token principal, if bound.
    pub principal: String,
    /// Created.
    pub create_time: Micros,
}

/// One duty slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Day.
    pub day: Weekday,
    /// From (minutes after midnight).
    pub start: u32,
    /// Until.
    pub end: u32,
    /// Deputy id.
    pub deputy: String,
}

/// A reception session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Id.
    pub id: String,
    /// Station id.
    pub station: String,
    /// Kind (wire value of SessionKind).
    pub kind: i32,
    /// Start.
    pub start_time: Micros,
    /// End.
    pub end_time: Micros,
    /// Deputy ids.
    pub deputies: Vec<String>,
    /// Guests.
    pub guests: Vec<String>,
    /// Topic.
    pub topic: String,
    /// State (wire value of SessionState).
    pub state: i32,
    /// Visits recorded.
    pub visit_count: i32,
    /// Opened.
    pub open_time: Option<Micros>,
    /// Closed.
    pub close_time: Option<Micros>,
    /// Summary.
    pub summary: String,
    /// Bumped by every change.
    pub version: i64,
}

/// A visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// Id.
    pub id: String,
    /// Session id.
    pub session: String,
    /// Deputy id.
    pub deputy: String,
    /// Case id.
    pub case_id: String,
    /// Title.
    pub title: String,
    /// When.
    pub create_time: Micros,
}

/// One step of a suggestion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuggestionStep {
    /// State entered (wire value).
    pub state: i32,
    /// Note.
    pub note: String,
    /// When.
    pub time: Micros,
    /// Who.
    pub actor: String,
}

/// A suggestion or motion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    /// Id.
    pub id: String,
    /// Deputy id.
    pub deputy: String,
    /// Station id.
    pub station: String,
    /// Kind (wire value).
    pub kind: i32,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Case ids.
    pub cases: Vec<String>,
    /// Addressee.
    pub addressee: String,
    /// State (wire value).
    pub state: i32,
    /// Answer.
    pub response: String,
    /// History.
    pub history: Vec<SuggestionStep>,
    /// Created.
    pub create_time: Micros,
    /// Changed.
    pub update_time: Micros,
    /// Bumped by every change.
    pub version: i64,
}

/// Inserts a station; false when the id is taken.
pub async fn insert_station(tx: &mut Tx, s: &Station) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO stations (id, place, data, create_time) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&s.id)
    .bind(&s.place)
    .bind(to_json("station", s)?)
    .bind(s.create_time)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One station.
pub async fn get_station<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<Station>, StoreError> {
    let d: Option<String> = sqlx::query_scalar("SELECT data FROM stations WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?;
    d.map(|d| from_json("station", &d)).transpose()
}

/// Stations after `after`, by id.
pub async fn list_stations<'c, E: Executor<'c, Database = Any>>(
    e: E,
    after: &str,
    limit: i64,
) -> Result<Vec<Station>, StoreError> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT data FROM stations WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(e)
            .await?;
    rows.iter().map(|d| from_json("station", d)).collect()
}

/// Inserts a deputy and their stations; false when the id is taken.
pub async fn insert_deputy(tx: &mut Tx, d: &Deputy) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO deputies (id, kind, data, create_time) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&d.id)
    .bind(i64::from(d.kind))
    .bind(to_json("deputy", d)?)
    .bind(d.create_time)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    for s in &d.stations {
        sqlx::query("INSERT INTO deputy_stations (station_id, deputy_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(s)
            .bind(&d.id)
            .execute(tx.conn())
            .await?;
    }
    Ok(true)
}

/// One deputy.
pub async fn get_deputy<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<Deputy>, StoreError> {
    let d: Option<String> = sqlx::query_scalar("SELECT data FROM deputies WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?;
    d.map(|d| from_json("deputy", &d)).transpose()
}

/// Deputies after `after`, by id, of `station` (or all) and `kind` (or all).
pub async fn list_deputies<'c, E: Executor<'c, Database = Any>>(
    e: E,
    station: Option<&str>,
    kind: Option<i32>,
    after: &str,
    limit: i64,
) -> Result<Vec<Deputy>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT d.data FROM deputies d WHERE d.id > $1 \
           AND ($2 = '' OR EXISTS (SELECT 1 FROM deputy_stations s WHERE s.deputy_id = d.id AND s.station_id = $2)) \
           AND ($3 = 0 OR d.kind = $3) \
         ORDER BY d.id LIMIT $4",
    )
    .bind(after)
    .bind(station.unwrap_or(""))
    .bind(i64::from(kind.unwrap_or(0)))
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.iter().map(|d| from_json("deputy", d)).collect()
}

/// Replaces a station's rota.
pub async fn set_rota(
    tx: &mut Tx,
    station: &str,
    slots: &[Slot],
    now: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rotas (station_id, data, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT (station_id) DO UPDATE SET data = excluded.data, update_time = excluded.update_time",
    )
    .bind(station)
    .bind(to_json("rota", &slots)?)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A station's rota and when it was set.
pub async fn get_rota<'c, E: Executor<'c, Database = Any>>(
    e: E,
    station: &str,
) -> Result<Option<(Vec<Slot>, Micros)>, StoreError> {
    let row = sqlx::query("SELECT data, update_time FROM rotas WHERE station_id = $1")
        .bind(station)
        .fetch_optional(e)
        .await?;
    match row {
        Some(r) => {
            let d: String = r.try_get(0)?;
            Ok(Some((from_json("rota", &d)?, r.try_get(1)?)))
        }
        None => Ok(None),
    }
}

/// Inserts a session.
pub async fn insert_session(tx: &mut Tx, s: &Session) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, station_id, state, version, data) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&s.id)
    .bind(&s.station)
    .bind(i64::from(s.state))
    .bind(s.version)
    .bind(to_json("session", s)?)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Writes a session if it is still at `expected`.
pub async fn update_session(tx: &mut Tx, s: &Session, expected: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET state = $2, version = $3, data = $4 WHERE id = $1 AND version = $5",
    )
    .bind(&s.id)
    .bind(i64::from(s.state))
    .bind(s.version)
    .bind(to_json("session", s)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One session.
pub async fn get_session<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<Session>, StoreError> {
    let d: Option<String> = sqlx::query_scalar("SELECT data FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?;
    d.map(|d| from_json("session", &d)).transpose()
}

/// A station's sessions below `below` (ids are time-ordered), newest first.
pub async fn list_sessions<'c, E: Executor<'c, Database = Any>>(
    e: E,
    station: &str,
    below: Option<&str>,
    limit: i64,
) -> Result<Vec<Session>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM sessions WHERE station_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(station)
    .bind(below.unwrap_or(""))
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.iter().map(|d| from_json("session", d)).collect()
}

/// Inserts a visit; false when it was recorded already.
pub async fn insert_visit(tx: &mut Tx, v: &Visit) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO visits (id, session_id, deputy_id, case_id, title, create_time) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&v.id)
    .bind(&v.session)
    .bind(&v.deputy)
    .bind(&v.case_id)
    .bind(&v.title)
    .bind(v.create_time)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

fn visit_row(r: &sqlx::any::AnyRow) -> Result<Visit, sqlx::Error> {
    Ok(Visit {
        id: r.try_get(0)?,
        session: r.try_get(1)?,
        deputy: r.try_get(2)?,
        case_id: r.try_get(3)?,
        title: r.try_get(4)?,
        create_time: r.try_get(5)?,
    })
}

/// One visit.
pub async fn get_visit<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<Visit>, StoreError> {
    let row = sqlx::query(
        "SELECT id, session_id, deputy_id, case_id, title, create_time FROM visits WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(e)
    .await?;
    row.as_ref()
        .map(visit_row)
        .transpose()
        .map_err(StoreError::from)
}

/// A session's visits after `after`, oldest first.
pub async fn list_visits<'c, E: Executor<'c, Database = Any>>(
    e: E,
    session: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Visit>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, session_id, deputy_id, case_id, title, create_time FROM visits \
         WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(session)
    .bind(after)
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.iter()
        .map(visit_row)
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// Records a case raised at a station (from a visit, or seen on intake's feed).
pub async fn insert_station_case(
    tx: &mut Tx,
    case_id: &str,
    station: &str,
    deputy: &str,
    title: &str,
    category: &str,
    create_time: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO station_cases (case_id, station_id, deputy_id, title, category, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (case_id) DO NOTHING",
    )
    .bind(case_id)
    .bind(station)
    .bind(deputy)
    .bind(title)
    .bind(category)
    .bind(create_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A case raised at a station: (case id, deputy, title, category, time).
pub type StationCaseRow = (String, String, String, String, Micros);

/// A station's cases (of one deputy, or all) below `below`, newest first.
pub async fn list_station_cases<'c, E: Executor<'c, Database = Any>>(
    e: E,
    station: &str,
    deputy: Option<&str>,
    below: Option<&str>,
    limit: i64,
) -> Result<Vec<StationCaseRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT case_id, deputy_id, title, category, create_time FROM station_cases \
         WHERE station_id = $1 AND ($2 = '' OR deputy_id = $2) AND ($3 = '' OR case_id < $3) \
         ORDER BY case_id DESC LIMIT $4",
    )
    .bind(station)
    .bind(deputy.unwrap_or(""))
    .bind(below.unwrap_or(""))
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Inserts a suggestion.
pub async fn insert_suggestion(tx: &mut Tx, s: &Suggestion) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO suggestions (id, deputy_id, station_id, state, version, data) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&s.id)
        .bind(&s.deputy)
        .bind(&s.station)
        .bind(i64::from(s.state))
        .bind(s.version)
        .bind(to_json("suggestion", s)?)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Writes a suggestion if it is still at `expected`.
pub async fn update_suggestion(
    tx: &mut Tx,
    s: &Suggestion,
    expected: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE suggestions SET state = $2, version = $3, data = $4 WHERE id = $1 AND version = $5",
    )
    .bind(&s.id)
    .bind(i64::from(s.state))
    .bind(s.version)
    .bind(to_json("suggestion", s)?)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One suggestion.
pub async fn get_suggestion<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<Suggestion>, StoreError> {
    let d: Option<String> = sqlx::query_scalar("SELECT data FROM suggestions WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?;
    d.map(|d| from_json("suggestion", &d)).transpose()
}

/// Suggestions (of a deputy, a station, or all) below `below`, newest first; states are
/// filtered by the caller.
pub async fn list_suggestions<'c, E: Executor<'c, Database = Any>>(
    e: E,
    deputy: Option<&str>,
    station: Option<&str>,
    below: Option<&str>,
    limit: i64,
) -> Result<Vec<Suggestion>, StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT data FROM suggestions WHERE ($1 = '' OR deputy_id = $1) AND ($2 = '' OR station_id = $2) \
           AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(deputy.unwrap_or(""))
    .bind(station.unwrap_or(""))
    .bind(below.unwrap_or(""))
    .bind(limit)
    .fetch_all(e)
    .await?;
    rows.iter().map(|d| from_json("suggestion", d)).collect()
}
