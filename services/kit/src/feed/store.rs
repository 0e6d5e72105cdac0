//! Writing events in the caller's transaction, and reading them back in feed order.

use prost::{Message, Name};
use sqlx::Row;

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

/// Appends `event` about `subject` in `tx`; it becomes visible when `tx` commits.
pub async fn append<M: Message + Name>(
    tx: &mut Tx,
    meta: &EventMeta,
    subject: &str,
    event: &M,
    now: Micros,
) -> Result<String, StoreError> {
    append_raw(
        tx,
        meta,
        subject,
        &M::full_name(),
        &event.encode_to_vec(),
        now,
    )
    .await
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
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO events (id, kind, subject, create_time, payload, actor, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(kind)
    .bind(subject)
    .bind(now)
    .bind(payload)
    .bind(&meta.actor)
    .bind(&meta.traceparent)
    .bind(&meta.tracestate)
    .execute(tx.conn())
    .await?;
    tx.note_event();
    Ok(id)
}

const COLUMNS: &str =
    "txid, seq, id, kind, subject, create_time, payload, actor, traceparent, tracestate";

/// Up to `limit` events after `after`, in feed order, never skipping one (see the module docs).
pub async fn read_after(
    db: &Db,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = match db.backend() {
        Backend::Postgres => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events \
                 WHERE (txid, seq) > ($1, $2) \
                   AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY txid, seq LIMIT $3"
            )))
            .bind(after.txid)
            .bind(after.seq)
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
        Backend::Sqlite => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
            )))
            .bind(after.seq)
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
    };
    rows.iter()
        .map(|row| {
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
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Whether events after `after` are committed but held back because an older transaction is
/// still running (PostgreSQL only): the reader should look again very soon.
pub async fn pending_after(db: &Db, after: Cursor) -> Result<bool, StoreError> {
    if db.backend() != Backend::Postgres {
        return Ok(false);
    }
    let row = sqlx::query("SELECT 1 FROM events WHERE (txid, seq) > ($1, $2) LIMIT 1")
        .bind(after.txid)
        .bind(after.seq)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// The cursor after the last event visible now (`START` for an empty feed).
pub async fn latest_cursor(db: &Db) -> Result<Cursor, StoreError> {
    let sql = match db.backend() {
        Backend::Postgres => {
            "SELECT txid, seq FROM events \
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY txid DESC, seq DESC LIMIT 1"
        }
        Backend::Sqlite => "SELECT txid, seq FROM events ORDER BY seq DESC LIMIT 1",
    };
    let row = sqlx::query(sql).fetch_optional(db.pool()).await?;
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
