//! Writing events in the caller's transaction, and reading them back in feed order.

use prost::{Message, Name};
use sqlx::Row;

use super::horizon::{Pass, horizon_cte};
use crate::{
    db::{Backend, Db, Tx},
    error::StoreError,
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::events::v1 as pb;

/// A position in a feed: after the event written by transaction `txid` with sequence `seq`.
/// On SQLite `txid` is always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// Writing transaction's id (PostgreSQL), 0 on SQLite.
    pub txid: i64,
    /// Sequence number within the feed.
    pub seq: i64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor { txid: 0, seq: 0 };

    /// Parses a cursor given by a client; empty means [`Cursor::START`].
    pub fn parse(text: &str) -> Option<Cursor> {
        if text.is_empty() {
            return Some(Cursor::START);
        }
        let rest = text.strip_prefix("c1.")?;
        let (txid, seq) = rest.split_once('.')?;
        let cursor = Cursor {
            txid: txid.parse().ok()?,
            seq: seq.parse().ok()?,
        };
        (cursor.txid >= 0 && cursor.seq >= 0).then_some(cursor)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c1.{}.{}", self.txid, self.seq)
    }
}

/// Who caused a change, and the trace it belongs to.
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    /// The principal, e.g. `window_staff:window-07`, or `system:<consumer>`.
    pub actor: String,
    /// W3C traceparent of the causing request.
    pub traceparent: String,
    /// W3C tracestate.
    pub tracestate: String,
}

impl EventMeta {
    /// Meta for `actor` in the current trace (the current `tracing` span's context).
    pub fn current(actor: impl Into<String>) -> Self {
        let (traceparent, tracestate) = crate::telemetry::current_trace_context();
        Self {
            actor: actor.into(),
            traceparent,
            tracestate,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position.
    pub cursor: Cursor,
    /// Unique id.
    pub id: String,
    /// Full message name of the payload.
    pub kind: String,
    /// The resource it is about.
    pub subject: String,
    /// Commit time (as the writer's clock saw it).
    pub create_time: Micros,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Who caused it.
    pub actor: String,
    /// Trace context.
    pub traceparent: String,
    /// Trace state.
    pub tracestate: String,
}

/// An event row, ready to insert: what [`append`] writes. A service that writes a change and
/// its event in one statement (see intake's submit on PostgreSQL) binds it with [`EventRow::bind`]
/// into an `INSERT INTO events (`[`EventRow::COLUMNS`]`) …`, then calls
/// [`Db::events_committed`](crate::db::Db::events_committed) after the statement succeeds.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Unique id.
    pub id: String,
    /// Full message name.
    pub kind: String,
    /// Resource it is about.
    pub subject: String,
    /// Commit time.
    pub create_time: Micros,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Who caused it.
    pub actor: String,
    /// Trace context.
    pub traceparent: String,
    /// Trace state.
    pub tracestate: String,
}

impl EventRow {
    /// The columns [`EventRow::bind`] binds, in order.
    pub const COLUMNS: &'static str =
        "id, kind, subject, create_time, payload, actor, traceparent, tracestate";

    /// The row for `event` about `subject`.
    pub fn new<M: Message + Name>(meta: &EventMeta, subject: &str, event: &M, now: Micros) -> Self {
        Self::encoded(meta, subject, &M::full_name(), event.encode_to_vec(), now)
    }

    /// The row for an already-encoded event.
    pub fn encoded(
        meta: &EventMeta,
        subject: &str,
        kind: &str,
        payload: Vec<u8>,
        now: Micros,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_string(),
            subject: subject.to_string(),
            create_time: now,
            payload,
            actor: meta.actor.clone(),
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
        }
    }

    /// Binds the row's values, in the order of [`EventRow::COLUMNS`].
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        query
            .bind(self.id)
            .bind(self.kind)
            .bind(self.subject)
            .bind(self.create_time)
            .bind(self.payload)
            .bind(self.actor)
            .bind(self.traceparent)
            .bind(self.tracestate)
    }
}

/// Appends `event` about `subject` in `tx`; it becomes visible when `tx` commits.
pub async fn append<M: Message + Name>(
    tx: &mut Tx,
    meta: &EventMeta,
    subject: &str,
    event: &M,
    now: Micros,
) -> Result<String, StoreError> {
    append_row(tx, EventRow::new(meta, subject, event, now)).await
}

/// Appends an already-encoded event.
pub async fn append_raw(
    tx: &mut Tx,
    meta: &EventMeta,
    subject: &str,
    kind: &str,
    payload: &[u8],
    now: Micros,
) -> Result<String, StoreError> {
    append_row(
        tx,
        EventRow::encoded(meta, subject, kind, payload.to_vec(), now),
    )
    .await
}

/// Appends many prepared rows in `tx`, in order, a few multi-row statements instead of one
/// round trip each: consumers that apply a batch of events write their own events this way.
pub async fn append_rows(tx: &mut Tx, rows: Vec<EventRow>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    for row in &rows {
        tx.check_kind(&row.kind)?;
    }
    crate::db::execute_rows(
        tx.conn(),
        8,
        rows,
        |r| {
            64 + r.payload.len()
                + r.kind.len()
                + r.subject.len()
                + r.actor.len()
                + r.traceparent.len()
                + r.tracestate.len()
        },
        |values| format!("INSERT INTO events ({}) VALUES {values}", EventRow::COLUMNS),
        |query, row| row.bind(query),
    )
    .await?;
    tx.note_event();
    Ok(())
}

/// Appends a prepared [`EventRow`] in `tx`.
pub async fn append_row(tx: &mut Tx, row: EventRow) -> Result<String, StoreError> {
    tx.check_kind(&row.kind)?;
    let id = row.id.clone();
    row.bind(sqlx::query(
        "INSERT INTO events (id, kind, subject, create_time, payload, actor, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    ))
    .execute(tx.conn())
    .await?;
    tx.note_event();
    Ok(id)
}

const COLUMNS: &str =
    "txid, seq, id, kind, subject, create_time, payload, actor, traceparent, tracestate";

/// What one read of the feed found.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events safe to deliver, in feed order.
    pub events: Vec<StoredEvent>,
    /// Committed events exist after these but are held back because an older transaction is
    /// still running (PostgreSQL only): look again very soon.
    pub held_back: bool,
}

/// Up to `limit` events after `after`, in feed order, never skipping one (see the module docs).
pub async fn read_after(db: &Db, after: Cursor, limit: i64) -> Result<Batch, StoreError> {
    read_after_passing(db, after, limit, &Pass::default()).await
}

/// [`read_after`] passing the running transactions of the lanes in `pass`: for a reader that
/// wants none of their kinds, since events of theirs may yet commit behind what it returns.
pub(crate) async fn read_after_passing(
    db: &Db,
    after: Cursor,
    limit: i64,
    pass: &Pass,
) -> Result<Batch, StoreError> {
    match db.backend() {
        Backend::Postgres => {
            past_other_services(db, pass, || read_after_postgres(db, after, limit, pass)).await
        }
        Backend::Sqlite => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
            )))
            .bind(after.seq)
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
            Ok(Batch {
                events: rows.iter().map(stored).collect::<Result<_, _>>()?,
                held_back: false,
            })
        }
    }
}

/// One read of [`read_after`] on PostgreSQL, and the horizon when events were held back by it.
async fn read_after_postgres(
    db: &Db,
    after: Cursor,
    limit: i64,
    pass: &Pass,
) -> Result<(Batch, Option<i64>), StoreError> {
    // One statement (one snapshot, so one horizon): the next events of transactions below
    // the horizon, and a one-row probe saying whether committed events beyond them are held
    // back by an older transaction still running (and the horizon, in `create_time`).
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH {} (SELECT {COLUMNS}, 1 AS safe FROM events \
           WHERE (txid, seq) > ($1, $2) AND txid < (SELECT below FROM horizon) \
           ORDER BY txid, seq LIMIT $3) \
         UNION ALL \
         (SELECT 0, 0, '', '', '', (SELECT below FROM horizon), ''::bytea, '', '', '', 0 \
           FROM events WHERE (txid, seq) > ($1, $2) AND txid >= (SELECT below FROM horizon) \
           ORDER BY txid, seq LIMIT 1)",
        horizon_cte(4)
    )))
    .bind(after.txid)
    .bind(after.seq)
    .bind(limit)
    .bind(db.xids().param(pass))
    .fetch_all(db.pool())
    .await?;
    let mut batch = Batch::default();
    let mut held_at = None;
    for row in &rows {
        if row.try_get::<i64, _>(10)? == 0 {
            batch.held_back = true;
            held_at = Some(row.try_get(5)?);
        } else {
            batch.events.push(stored(row)?);
        }
    }
    Ok((batch, held_at))
}

/// Up to `limit` events of `kinds` (every kind when empty) after `after`, in feed order,
/// never skipping one, with the cursor to read on from: after the last event returned when
/// `limit` were, else after the last event safe to read whether wanted or not — so a reader
/// that wants few kinds moves past the others without being sent them. The kinds are
/// filtered by the database: events not wanted are never read out of it.
///
/// The reader passes the running transactions of the store's lanes that append none of
/// `kinds` ([`Db::passable`]), so the cursor returned is one to resume the same kinds from:
/// resumed with other kinds, it may have passed events of theirs that committed later.
pub async fn read_kinds_after(
    db: &Db,
    after: Cursor,
    kinds: &[String],
    limit: i64,
) -> Result<(Batch, Cursor), StoreError> {
    read_kinds_after_passing(db, after, kinds, limit, &db.passable(kinds)).await
}

/// [`read_kinds_after`] passing the lanes in `pass` (which must append none of `kinds`).
pub(crate) async fn read_kinds_after_passing(
    db: &Db,
    after: Cursor,
    kinds: &[String],
    limit: i64,
    pass: &Pass,
) -> Result<(Batch, Cursor), StoreError> {
    if kinds.is_empty() {
        let batch = read_after(db, after, limit).await?;
        let next = batch.events.last().map_or(after, |e| e.cursor);
        return Ok((batch, next));
    }
    past_other_services(db, pass, || read_kinds_once(db, after, kinds, limit, pass)).await
}

/// Runs `read` (which returns what it read, and the horizon when events were held back by it),
/// and once more at once when the transaction holding the horizon turns out to be another
/// service's, or of a lane in `pass` (see `horizon.rs`).
async fn past_other_services<T, F, Fut>(db: &Db, pass: &Pass, mut read: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(T, Option<i64>), StoreError>>,
{
    let (out, held_at) = read().await?;
    match held_at {
        Some(below) if db.xids().learn(db, below, pass).await? => Ok(read().await?.0),
        _ => Ok(out),
    }
}

/// One read of [`read_kinds_after`], and the horizon when events were held back by it.
async fn read_kinds_once(
    db: &Db,
    after: Cursor,
    kinds: &[String],
    limit: i64,
    pass: &Pass,
) -> Result<((Batch, Cursor), Option<i64>), StoreError> {
    // The kinds' parameters follow the three (PostgreSQL: four) others.
    let first_kind = match db.backend() {
        Backend::Postgres => 5,
        Backend::Sqlite => 4,
    };
    let list = (0..kinds.len())
        .map(|i| format!("${}", i + first_kind))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match db.backend() {
        // One statement, one snapshot: the wanted events below the horizon, the held-back
        // probe of [`read_after`], and the last event below the horizon (safe = 2).
        Backend::Postgres => format!(
            "WITH {} (SELECT {COLUMNS}, 1 AS safe FROM events \
               WHERE (txid, seq) > ($1, $2) \
                 AND txid < (SELECT below FROM horizon) \
                 AND kind IN ({list}) \
               ORDER BY txid, seq LIMIT $3) \
             UNION ALL \
             (SELECT 0, 0, '', '', '', (SELECT below FROM horizon), ''::bytea, '', '', '', 0 \
               FROM events WHERE (txid, seq) > ($1, $2) \
                 AND txid >= (SELECT below FROM horizon) \
               ORDER BY txid, seq LIMIT 1) \
             UNION ALL \
             (SELECT txid, seq, '', '', '', 0, ''::bytea, '', '', '', 2 FROM events \
               WHERE (txid, seq) > ($1, $2) \
                 AND txid < (SELECT below FROM horizon) \
               ORDER BY txid DESC, seq DESC LIMIT 1)",
            horizon_cte(4)
        ),
        // $1 is the sequence number here, $2 the txid (always 0).
        Backend::Sqlite => format!(
            "SELECT * FROM (SELECT {COLUMNS}, 1 AS safe FROM events \
               WHERE seq > $1 AND txid >= $2 AND kind IN ({list}) ORDER BY seq LIMIT $3) \
             UNION ALL \
             SELECT * FROM (SELECT txid, seq, '', '', '', 0, x'', '', '', '', 2 FROM events \
               WHERE seq > $1 AND txid >= $2 ORDER BY seq DESC LIMIT 1)"
        ),
    };
    let (first, second) = match db.backend() {
        Backend::Postgres => (after.txid, after.seq),
        Backend::Sqlite => (after.seq, after.txid),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(first)
        .bind(second)
        .bind(limit);
    if db.backend() == Backend::Postgres {
        query = query.bind(db.xids().param(pass));
    }
    for kind in kinds {
        query = query.bind(kind.clone());
    }
    let mut batch = Batch::default();
    let mut last_safe = None;
    let mut held_at = None;
    for row in &query.fetch_all(db.pool()).await? {
        match row.try_get::<i64, _>(10)? {
            0 => {
                batch.held_back = true;
                held_at = Some(row.try_get(5)?);
            }
            2 => {
                last_safe = Some(Cursor {
                    txid: row.try_get(0)?,
                    seq: row.try_get(1)?,
                })
            }
            _ => batch.events.push(stored(row)?),
        }
    }
    let last = batch.events.last().map_or(after, |e| e.cursor);
    let next = if batch.events.len() as i64 >= limit {
        last
    } else {
        // Every wanted event up to the last safe one was returned.
        last_safe.map_or(last, |safe| safe.max(last))
    };
    Ok(((batch, next), held_at))
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        cursor: Cursor {
            txid: row.try_get(0)?,
            seq: row.try_get(1)?,
        },
        id: row.try_get(2)?,
        kind: row.try_get(3)?,
        subject: row.try_get(4)?,
        create_time: row.try_get(5)?,
        payload: row.try_get(6)?,
        actor: row.try_get(7)?,
        traceparent: row.try_get(8)?,
        tracestate: row.try_get(9)?,
    })
}

/// The cursor after the last event visible now (`START` for an empty feed).
pub async fn latest_cursor(db: &Db) -> Result<Cursor, StoreError> {
    let sql = match db.backend() {
        Backend::Postgres => format!(
            "WITH {} SELECT txid, seq FROM events \
             WHERE txid < (SELECT below FROM horizon) \
             ORDER BY txid DESC, seq DESC LIMIT 1",
            horizon_cte(1)
        ),
        Backend::Sqlite => "SELECT txid, seq FROM events ORDER BY seq DESC LIMIT 1".to_owned(),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if db.backend() == Backend::Postgres {
        query = query.bind(db.xids().param(&Pass::default()));
    }
    let row = query.fetch_optional(db.pool()).await?;
    Ok(match row {
        Some(row) => Cursor {
            txid: row.try_get(0)?,
            seq: row.try_get(1)?,
        },
        None => Cursor::START,
    })
}

/// The wire form of a stored event.
pub fn to_proto(event: StoredEvent, source: &str) -> pb::Event {
    pb::Event {
        cursor: event.cursor.to_string(),
        id: event.id,
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", event.kind),
            value: event.payload,
        }),
        kind: event.kind,
        subject: event.subject,
        create_time: Some(to_timestamp(event.create_time)),
        actor: event.actor,
        traceparent: event.traceparent,
        tracestate: event.tracestate,
        source: source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor { txid: 42, seq: 7 };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert_eq!(Cursor::parse(""), Some(Cursor::START));
        for bad in ["7", "c1.", "c1.a.b", "c1.-1.2", "c2.1.2", "c1.1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
