//! Calendars: one document per city.

use sqlx::{Any, Executor, Row};

use super::{from_doc, to_doc};
use crate::calendar::Calendar;
use minqing_kit::{db::Tx, error::StoreError, time::Micros};

/// A stored calendar with its version and last change.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The calendar.
    pub calendar: Calendar,
    /// Bumped by every change.
    pub version: i64,
    /// When it last changed.
    pub update_time: Micros,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Stored, StoreError> {
    let doc: String = row.try_get("doc")?;
    Ok(Stored {
        calendar: from_doc(&doc)?,
        version: row.try_get("version")?,
        update_time: row.try_get("update_time")?,
    })
}

/// Every calendar, by city.
pub async fn all<'c, E: Executor<'c, Database = Any>>(db: E) -> Result<Vec<Stored>, StoreError> {
    let rows = sqlx::query("SELECT version, update_time, doc FROM calendars ORDER BY city")
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Inserts a calendar unless its city has one; true when inserted.
pub async fn insert(tx: &mut Tx, c: &Calendar, now: Micros) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO calendars (city, version, update_time, doc) VALUES ($1, 1, $2, $3) \
         ON CONFLICT (city) DO NOTHING",
    )
    .bind(&c.city)
    .bind(now)
    .bind(to_doc(c)?)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a calendar if it is still at `version`; false when it changed underneath.
pub async fn update(
    tx: &mut Tx,
    c: &Calendar,
    version: i64,
    now: Micros,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE calendars SET version = version + 1, update_time = $1, doc = $2 \
         WHERE city = $3 AND version = $4",
    )
    .bind(now)
    .bind(to_doc(c)?)
    .bind(&c.city)
    .bind(version)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}
