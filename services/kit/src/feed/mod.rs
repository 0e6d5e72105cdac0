//! The event feed: a transactional outbox per service, served as
//! `minqing.events.v1.EventFeed/Subscribe`, and followed by other services' consumers.
//!
//! **Ordering without skips.** With concurrent writers, sequence numbers become visible out of
//! order: a transaction holding seq 7 may commit after one holding seq 8, so a reader that
//! saw 8 and moved its cursor past it would never see 7. On PostgreSQL each event therefore
//! records the id of the transaction that wrote it, events are ordered by `(txid, seq)`, and a
//! reader only returns events of transactions older than the oldest one still running that
//! could write this feed (`horizon.rs`: transactions of other services and other databases
//! do not hold it back). Every transaction below that horizon has finished, and any later
//! writer gets a larger id, so nothing can appear behind the cursor. A reader of a few kinds
//! also passes the service's lanes that append none of them ([`crate::db::Lane`]: a
//! consumer's long batches, say): what those may yet commit behind its cursor it would never
//! take. On SQLite writers are serialized by the database lock, so `seq` alone is commit order.
//!
//! **Following live without polling.** A commit that appended events wakes the local readers
//! through a watch channel ([`crate::db::Tx::commit`]); on PostgreSQL other replicas are told
//! by `NOTIFY`, sent outside the writing transaction (NOTIFY inside it would serialize every
//! commit on PostgreSQL's notification lock). A slow fallback timer covers lost notifications.
//!
//! **One reader per database.** Subscribers caught up with the feed do not read it themselves:
//! one task per [`Db`](crate::db::Db) in the process reads each new batch once and hands it to
//! all of them (a broadcast of shared batches, `tail.rs`). A subscriber that is behind —
//! replaying, slow, or lagged past what the broadcast keeps — reads the database itself, its
//! kinds filtered there ([`read_kinds_after`]), until it has caught up; batches that do not
//! join up with its cursor are never taken, so nothing is skipped or repeated.

mod consumer;
mod horizon;
mod notify;
mod server;
mod store;
mod tail;

pub use consumer::{
    Apply, BearerToken, Consumer, ConsumerOptions, FeedSource, Prepared, event_span,
};
pub use horizon::{Pass, Xids, horizon_cte};
pub use notify::spawn_postgres_bridge;
pub use server::EventFeedService;
pub use store::{
    Batch, Cursor, EventMeta, EventRow, StoredEvent, append, append_raw, append_row, append_rows,
    latest_cursor, read_after, read_kinds_after, to_proto,
};
pub(crate) use tail::TailSlot;

pub(crate) const BASE_MIGRATIONS_SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "kit event feed and consumers",
        r#"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txid INTEGER NOT NULL DEFAULT 0,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    payload BLOB NOT NULL,
    actor TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    tracestate TEXT NOT NULL
);
CREATE TABLE consumer_cursors (
    name TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE TABLE consumer_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expire_time INTEGER NOT NULL
);
"#,
    ),
    (2, "kit audit log", AUDIT_MIGRATION_SQLITE),
];

const AUDIT_MIGRATION_SQLITE: &str = "
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_resource ON audit_log (resource, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
";

const AUDIT_MIGRATION_POSTGRES: &str = "
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_resource ON audit_log (resource, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
";

pub(crate) const BASE_MIGRATIONS_POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "kit event feed and consumers",
        r#"
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    actor TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    tracestate TEXT NOT NULL,
    PRIMARY KEY (txid, seq)
);
CREATE TABLE consumer_cursors (
    name TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE TABLE consumer_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expire_time BIGINT NOT NULL
);
"#,
    ),
    (2, "kit audit log", AUDIT_MIGRATION_POSTGRES),
];
