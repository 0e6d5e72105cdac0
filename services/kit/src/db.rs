//! Storage: one pool abstraction over SQLite (the embedded default) and PostgreSQL.
//!
//! Every service owns its tables. On SQLite each service has its own file under the data
//! directory; on PostgreSQL each has its own schema (its `search_path`), so several services
//! can share one database, or each can be given a database of its own.
//!
//! Queries go through sqlx's `Any` driver with `$N` placeholders and portable column types
//! only (TEXT, BIGINT/INTEGER, DOUBLE/REAL, BYTEA/BLOB): one query text serves both backends.
//! Timestamps are stored as microseconds since the epoch, ids as text. Where the backends
//! differ (the event feed's ordering, upserts), code asks [`Db::backend`]. This was chosen over
//! one store implementation per backend because it keeps each query written once; the price
//! is the `Any` type subset, which the portable columns live within.
//!
//! **No nullable floating-point columns.** sqlx 0.9.0's `Any` driver sends a NULL `f64` to
//! PostgreSQL as a float4 parameter (`Null(Double)` and `Null(Real)` are swapped in
//! `AnyArguments::convert_into`); the statement cached on that connection then refuses every
//! later real `f64`. Store coordinates as integer micro-degrees, amounts as integers.
//!
//! SQLite allows one writer at a time, so writes go through a pool of one connection (no
//! `SQLITE_BUSY` between our own writers) and reads through a small pool beside it (WAL mode
//! lets them run during a write). On PostgreSQL both are the same pool.

use std::{
    borrow::Cow,
    path::PathBuf,
    sync::{Arc, Once},
    time::Duration,
};

use sqlx::{
    AnyConnection, Connection, Executor, SqlSafeStr,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{Migration, MigrationType, Migrator},
};
use tokio::sync::watch;

/// A pool of connections through sqlx's `Any` driver.
pub type AnyPool = sqlx::Pool<sqlx::Any>;

use crate::{config::SqliteSync, error::StoreError};

/// Which database is behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store.
    Sqlite,
    /// The production store.
    Postgres,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `postgres://…` for PostgreSQL; `None` for SQLite under `data_dir`.
    pub postgres_url: Option<String>,
    /// Where SQLite files live.
    pub data_dir: PathBuf,
    /// The owning service: its SQLite file name and its PostgreSQL schema.
    pub name: String,
    /// Largest pool (PostgreSQL).
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub acquire_timeout: Duration,
    /// SQLite durability.
    pub sqlite_synchronous: SqliteSync,
}

impl DbOptions {
    /// Options for `name` with the usual defaults.
    pub fn new(name: impl Into<String>, postgres_url: Option<String>, data_dir: PathBuf) -> Self {
        Self {
            postgres_url,
            data_dir,
            name: name.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sqlite_synchronous: SqliteSync::Full,
        }
    }
}

/// A service's database: pools, backend, and the signal that tells feed readers of commits.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.inner.backend)
            .field("name", &self.inner.name)
            .finish()
    }
}

struct Inner {
    backend: Backend,
    name: String,
    read: AnyPool,
    write: AnyPool,
    /// The URL the pool's connections were made with (see [`plain_on_loopback`]).
    connection_url: Option<String>,
    /// SQLite's configured durability.
    sqlite_synchronous: SqliteSync,
    /// Bumped after every local commit that appended events: the PostgreSQL announcer
    /// tells other replicas of these.
    local_commits: watch::Sender<u64>,
    /// Bumped after local commits and when another replica announces one: feed readers wait
    /// on this. Kept apart from `local_commits` so announcements are never echoed back.
    wakes: watch::Sender<u64>,
    /// The feed's shared tail reader, while one runs.
    tail: crate::feed::TailSlot,
    /// Which running transactions the feed's readers know to be other services'.
    xids: crate::feed::Xids,
    /// The connections' `application_name` (PostgreSQL, when the kit names them).
    app: Option<String>,
    /// The lanes of this store's transactions ([`Lane`]), as registered.
    lanes: std::sync::Mutex<Vec<Lane>>,
    /// What the server's settings put at risk ([`maintenance_advisories`]).
    advisories: Vec<String>,
}

static INSTALL_DRIVERS: Once = Once::new();
/// The advisories are logged once a process, not once for each service's store.
static ADVISED: Once = Once::new();

impl Db {
    /// Connects, creating the SQLite file or PostgreSQL schema when missing.
    pub async fn connect(opts: &DbOptions) -> Result<Self, sqlx::Error> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        if !is_identifier(&opts.name) {
            return Err(sqlx::Error::Configuration(
                format!("invalid store name {:?}", opts.name).into(),
            ));
        }
        let (backend, read, write, connection_url, advisories) = match &opts.postgres_url {
            Some(url) => {
                let (pool, connection_url, advisories) =
                    connect_postgres(url, &opts.name, opts).await?;
                (
                    Backend::Postgres,
                    pool.clone(),
                    pool,
                    Some(connection_url),
                    advisories,
                )
            }
            None => {
                let (read, write) = connect_sqlite(opts).await?;
                (Backend::Sqlite, read, write, None, Vec::new())
            }
        };
        if !advisories.is_empty() {
            ADVISED.call_once(|| {
                for advice in &advisories {
                    tracing::warn!("{advice}");
                }
            });
        }
        let app = opts
            .postgres_url
            .as_deref()
            .and_then(|url| application_name(url, &opts.name));
        let (local_commits, _) = watch::channel(0);
        let (wakes, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                name: opts.name.clone(),
                read,
                write,
                connection_url,
                sqlite_synchronous: opts.sqlite_synchronous,
                local_commits,
                wakes,
                tail: Default::default(),
                xids: crate::feed::Xids::new(opts.postgres_url.as_deref(), app.clone()),
                app,
                lanes: Default::default(),
                advisories,
            }),
        })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// What the server's settings put at risk, found when connecting (logged once a process
    /// as warnings): see [`maintenance_advisories`]. Empty on SQLite.
    pub fn server_advisories(&self) -> &[String] {
        &self.inner.advisories
    }

    /// The store's name (service name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The pool for reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.read
    }

    /// What this store's feed readers know of the transactions running on the server
    /// (PostgreSQL; see [`crate::feed::horizon_cte`]).
    pub fn xids(&self) -> &crate::feed::Xids {
        &self.inner.xids
    }

    /// The URL this store's connections are made with, when on PostgreSQL: the configured one,
    /// or on loopback that one without TLS (see `plain_on_loopback`). For a connection of its
    /// own beside the pool, such as a feed's listener.
    pub fn connection_url(&self) -> Option<&str> {
        self.inner.connection_url.as_deref()
    }

    /// Starts a write transaction. Commit it with [`Tx::commit`]; dropping it rolls back.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = self.inner.write.begin().await?;
        Ok(Tx {
            tx,
            events: 0,
            db: self.clone(),
            lane: None,
        })
    }

    /// Starts a write transaction in `lane` (one of this store's, [`Db::lane`]): it can append
    /// only the lane's kinds of event, and readers wanting none of them do not wait for it.
    pub async fn begin_in(&self, lane: &Lane) -> Result<Tx, StoreError> {
        if lane.inner.store != self.name() {
            return Err(StoreError::Other(sqlx::Error::InvalidArgument(format!(
                "lane {:?} is {}'s, not {}'s",
                lane.name(),
                lane.inner.store,
                self.name()
            ))));
        }
        let mut tx = self.begin().await?;
        lane.enter(tx.conn()).await?;
        tx.lane = Some(lane.clone());
        Ok(tx)
    }

    /// The lane `name` of this store's transactions, which may append only events of `kinds`,
    /// registered with the store's feed readers. Asking again for a lane with the same kinds
    /// gives the same lane; with other kinds it is an error (readers may already be passing
    /// the lane on the strength of the kinds first given).
    pub fn lane(&self, name: &str, kinds: &[String]) -> Result<Lane, StoreError> {
        let refuse = |why: String| StoreError::Other(sqlx::Error::InvalidArgument(why));
        if !is_identifier(name) {
            return Err(refuse(format!("invalid lane name {name:?}")));
        }
        if kinds.is_empty() || kinds.iter().any(String::is_empty) {
            return Err(refuse(format!(
                "lane {name:?} needs the kinds it may append"
            )));
        }
        let mut sorted = kinds.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut lanes = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lane) = lanes.iter().find(|l| l.inner.name == name) {
            return if lane.inner.kinds == sorted {
                Ok(lane.clone())
            } else {
                Err(refuse(format!(
                    "lane {name:?} of {} is already registered with other kinds",
                    self.name()
                )))
            };
        }
        let lane = Lane {
            inner: Arc::new(LaneInner {
                name: name.to_owned(),
                store: self.name().to_owned(),
                app: self.inner.app.as_ref().map(|app| format!("{app}/{name}")),
                kinds: sorted,
            }),
        };
        lanes.push(lane.clone());
        Ok(lane)
    }

    /// The lanes a feed reader wanting `kinds` (every kind when empty) may pass: those none of
    /// whose kinds it wants ([`crate::feed::Pass`]).
    pub fn passable(&self, kinds: &[String]) -> crate::feed::Pass {
        if kinds.is_empty() {
            return crate::feed::Pass::default();
        }
        let lanes = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::feed::Pass::new(
            lanes
                .iter()
                .filter(|l| !l.inner.kinds.iter().any(|k| kinds.contains(k)))
                .filter_map(|l| l.inner.app.clone())
                .collect(),
        )
    }

    /// The writer connection, set (on SQLite) so that its commits do not wait to be durable,
    /// until [`RelaxedWriter::restore`]. For bookkeeping whose loss in a crash is harmless (a
    /// consumer's cursor over events that changed nothing: read again, they change nothing
    /// again). A later durable commit makes it durable too, as the WAL is written in order.
    pub(crate) async fn relaxed_writer(&self) -> Result<RelaxedWriter, StoreError> {
        let mut conn = self.inner.write.acquire().await?;
        let restore = match (self.inner.backend, self.inner.sqlite_synchronous) {
            (Backend::Sqlite, SqliteSync::Full) => {
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                Some("PRAGMA synchronous = FULL")
            }
            _ => None,
        };
        Ok(RelaxedWriter {
            conn: Some(conn),
            restore,
        })
    }

    /// A receiver that changes after each commit that appended events, here or (on
    /// PostgreSQL) in another replica.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.wakes.subscribe()
    }

    /// Where the feed's shared tail reader is kept.
    pub(crate) fn tail_slot(&self) -> &crate::feed::TailSlot {
        &self.inner.tail
    }

    /// A receiver that changes after each local commit that appended events.
    pub(crate) fn local_commits(&self) -> watch::Receiver<u64> {
        self.inner.local_commits.subscribe()
    }

    /// Records a local commit that appended events.
    pub(crate) fn signal_commit(&self) {
        self.inner
            .local_commits
            .send_modify(|n| *n = n.wrapping_add(1));
        self.inner.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells feed readers that events were committed outside a [`Tx`] (by a single
    /// statement that wrote a change and its event together).
    pub fn events_committed(&self) {
        self.signal_commit();
    }

    /// Wakes feed readers for a commit made by another replica.
    pub(crate) fn signal_remote_commit(&self) {
        self.inner.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `migrations` (the kit's own first, then the service's), each once, in order.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        let set = match self.backend() {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        let base = match self.backend() {
            Backend::Sqlite => crate::feed::BASE_MIGRATIONS_SQLITE,
            Backend::Postgres => crate::feed::BASE_MIGRATIONS_POSTGRES,
        };
        let list: Vec<Migration> = base
            .iter()
            .chain(set.iter())
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(list);
        let mut conn = self.inner.write.acquire().await?;
        migrator.run(&mut *conn).await
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.inner.write.close().await;
        self.inner.read.close().await;
    }
}

/// A service's migrations for each backend: `(version, description, sql)`, versions 100 and
/// up (the kit's own tables take the versions below).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: &'static [(i64, &'static str, &'static str)],
    /// For PostgreSQL.
    pub postgres: &'static [(i64, &'static str, &'static str)],
}

/// A class of a service's transactions that append only certain kinds of event, such as one
/// consumer's ([`Db::lane`], [`Db::begin_in`]). On PostgreSQL a lane's transactions name their
/// connection `minqing/<schema>/<lane>` while they run, so that the feed's readers wanting
/// none of those kinds need not wait for them (`feed/horizon.rs`): a consumer's long batch
/// then holds back only the readers that want what it writes.
#[derive(Debug, Clone)]
pub struct Lane {
    inner: Arc<LaneInner>,
}

#[derive(Debug)]
struct LaneInner {
    name: String,
    /// The store whose lane it is.
    store: String,
    /// The connection's name while in the lane (PostgreSQL, when the kit names connections).
    app: Option<String>,
    /// Sorted.
    kinds: Vec<String>,
}

impl Lane {
    /// The lane's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the lane's transactions may append events of `kind`.
    pub fn allows(&self, kind: &str) -> bool {
        self.inner.kinds.iter().any(|k| k == kind)
    }

    /// Marks the transaction just begun on `conn` as this lane's: before it writes anything,
    /// so its transaction id is never seen under another name.
    pub(crate) async fn enter(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        if let Some(app) = &self.inner.app {
            sqlx::query("SELECT set_config('application_name', $1, true)")
                .bind(app)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// A write transaction. Storage functions take `&mut Tx`, so a change and the event that
/// tells of it always commit together.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    events: usize,
    db: Db,
    /// The lane it runs in, whose kinds alone it may append.
    lane: Option<Lane>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("events", &self.events).finish()
    }
}

impl Tx {
    /// The connection, to run queries on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The database this transaction belongs to.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub(crate) fn note_event(&mut self) {
        self.events += 1;
    }

    /// Refuses an event of `kind` that this transaction's lane may not append.
    pub(crate) fn check_kind(&self, kind: &str) -> Result<(), StoreError> {
        match &self.lane {
            Some(lane) if !lane.allows(kind) => {
                Err(StoreError::Other(sqlx::Error::InvalidArgument(format!(
                    "a transaction of lane {:?} may not append an event of kind {kind}",
                    lane.name()
                ))))
            }
            _ => Ok(()),
        }
    }

    /// Commits, then wakes the feed's readers if events were appended.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Tx { tx, events, db, .. } = self;
        tx.commit().await?;
        if events > 0 {
            db.signal_commit();
        }
        Ok(())
    }

    /// Rolls back explicitly (dropping does the same).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The writer connection with commits that need not be durable ([`Db::relaxed_writer`]).
/// Dropped without [`RelaxedWriter::restore`] (an error, a cancelled task), the connection is
/// closed rather than returned to the pool, so no later transaction can commit undurably.
pub(crate) struct RelaxedWriter {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    /// The statement that puts the connection's durability back, when it was changed.
    restore: Option<&'static str>,
}

impl RelaxedWriter {
    /// The connection.
    pub(crate) fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        self.conn
            .as_deref_mut()
            .ok_or(StoreError::Unavailable(sqlx::Error::PoolClosed))
    }

    /// Puts the connection's durability back and returns it to the pool.
    pub(crate) async fn restore(mut self) -> Result<(), StoreError> {
        if let Some(sql) = self.restore {
            self.conn()?.execute(sql).await?;
            self.restore = None;
        }
        Ok(())
    }
}

impl Drop for RelaxedWriter {
    fn drop(&mut self) {
        if self.restore.is_some()
            && let Some(mut conn) = self.conn.take()
        {
            conn.close_on_drop();
        }
    }
}

/// A query through the `Any` driver, as [`execute_rows`] builds and binds it.
pub type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// The most bind parameters one statement carries: SQLite's limit (PostgreSQL's is 65,535).
pub const MAX_PARAMETERS: usize = 32_766;

/// The most rows one multi-row statement carries, whatever its width: larger statements
/// gain nothing more and cost PostgreSQL more to plan.
pub const MAX_ROWS_PER_STATEMENT: usize = 1_000;

/// The most bytes of values one multi-row statement carries (the sizes callers give): a bound
/// on what one statement holds in memory. It was 12 KiB while sqlx 0.9.0 left Nagle's
/// algorithm on its PostgreSQL sockets (a message spanning more than one write had its tail
/// held until the server's delayed ACK, 40 ms later); the workspace patches sqlx-core to set
/// `TCP_NODELAY` (vendor/sqlx-core), and at 12 KiB routing's dispatcher wrote a batch of a
/// thousand cases in some six hundred statements, one round trip each, one after another —
/// under load, most of the time the batch took. With 256 KiB the same batch takes a few dozen
/// (BENCHMARKS.md, routing end to end, eighth session).
pub const MAX_STATEMENT_BYTES: usize = 256 * 1024;

/// `$1, $2, …, $n`: the placeholders of an `IN (…)` list of `n` values.
pub fn placeholders(n: usize) -> String {
    values_list(n, 1).replace(['(', ')'], "")
}

/// [`values_list`] for `backend`: on SQLite with anonymous `?` placeholders (bound in order),
/// since SQLite finds each numbered placeholder's name by walking a list of all of them —
/// binding the thousands of a multi-row statement cost time that grows with their square.
/// Only for statements whose every placeholder is in this list, in order.
pub fn values_list_for(backend: Backend, rows: usize, columns: usize) -> String {
    match backend {
        Backend::Postgres => values_list(rows, columns),
        Backend::Sqlite => {
            let row = format!("({})", vec!["?"; columns].join(", "));
            vec![row; rows].join(", ")
        }
    }
}

/// `($1, $2), ($3, $4), …`: the `VALUES` list of `rows` rows of `columns` placeholders each.
pub fn values_list(rows: usize, columns: usize) -> String {
    values_list_after(0, rows, columns)
}

/// `$1, $11, $21, …`: the placeholders of column `column` (from 0) of a [`values_list`] of
/// `rows` rows of `columns` each, for an `IN (…)` on the key a multi-row `UPDATE … FROM v`
/// joins on. Without it PostgreSQL may join the `VALUES` to the whole table by a sequential
/// scan and a hash: with its default page costs that looks cheaper than one index probe a row
/// until the table holds tens of thousands of rows, and a plan kept by a prepared statement
/// stays so as the table grows. With the keys listed, PostgreSQL counts on the rows listed and
/// reads any but a small table by its index.
pub fn column_placeholders(rows: usize, columns: usize, column: usize) -> String {
    let mut out = String::with_capacity(rows * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('$');
        out.push_str(&(r * columns + column + 1).to_string());
    }
    out
}

/// [`values_list`] numbered from `$(before + 1)`: the second of two lists in one statement
/// (PostgreSQL placeholders).
pub fn values_list_after(before: usize, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(before + r * columns + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// Writes many rows with a few multi-row statements instead of one round trip each: `rows`
/// are taken in chunks that stay under every backend's bind-parameter limit and under
/// [`MAX_STATEMENT_BYTES`] by `size` (a row's approximate bytes); for each chunk
/// `sql` is given the chunk's `VALUES` list ([`values_list`] of `columns` placeholders a row)
/// and returns the statement, and `bind` binds one row's `columns` values in order. Returns
/// the rows affected, summed over the statements. Nothing is run for no rows.
///
/// An insert: `|values| format!("INSERT INTO t (a, b) VALUES {values}")`. An update of many
/// rows, portable to both backends:
/// `|values| format!("WITH v (id, a) AS (VALUES {values}) UPDATE t SET a = v.a FROM v WHERE t.id = v.id")`.
pub async fn execute_rows<T>(
    conn: &mut AnyConnection,
    columns: usize,
    rows: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
    sql: impl Fn(&str) -> String,
    bind: impl FnMut(AnyQuery, T) -> AnyQuery,
) -> Result<u64, StoreError> {
    execute_rows_planned(conn, Planning::Kept, columns, rows, size, sql, bind).await
}

/// How PostgreSQL plans a statement run again and again (SQLite plans without regard to its
/// tables' sizes, and keeps every statement prepared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// Prepared once per connection; PostgreSQL may settle on one plan for every run.
    Kept,
    /// Planned at every run, for the tables as they are then. For an update joined to a table
    /// that grows quickly (a multi-row `UPDATE … FROM (VALUES …)`): the plan PostgreSQL keeps
    /// from when the table was small joins by a scan of the whole table and a hash, and it
    /// keeps it until the table is next analysed, on a new database a minute or more away.
    EachRun,
}

impl Planning {
    /// Whether a statement so planned is kept prepared on `backend` (sqlx's `persistent`).
    pub fn keeps(self, backend: Backend) -> bool {
        self == Planning::Kept || backend == Backend::Sqlite
    }
}

/// [`execute_rows`], planned as `planning` says.
pub async fn execute_rows_planned<T>(
    conn: &mut AnyConnection,
    planning: Planning,
    columns: usize,
    rows: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
    sql: impl Fn(&str) -> String,
    mut bind: impl FnMut(AnyQuery, T) -> AnyQuery,
) -> Result<u64, StoreError> {
    let backend = if conn.backend_name() == "SQLite" {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let keep = planning.keeps(backend);
    let per_statement = (MAX_PARAMETERS / columns.max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
    let rows: Vec<T> = rows.into_iter().collect();
    let sizes: Vec<usize> = rows.iter().map(&size).collect();
    let mut rows = rows.into_iter();
    let mut start = 0;
    let mut affected = 0;
    while start < sizes.len() {
        let n = statement_rows(&sizes[start..], per_statement);
        let text = sql(&values_list_for(backend, n, columns));
        let mut query: AnyQuery = sqlx::query(sqlx::AssertSqlSafe(text)).persistent(keep);
        for row in rows.by_ref().take(n) {
            query = bind(query, row);
        }
        affected += query.execute(&mut *conn).await?.rows_affected();
        start += n;
    }
    Ok(affected)
}

/// The number of rows a multi-row statement holds when `n` are to be written: `n` itself up
/// to 8, else the largest power of two not above it. A statement's text depends only on its
/// number of rows, so with counts drawn from these fourteen the same few texts come back
/// again and again: each connection keeps them prepared (sqlx's statement cache holds 100)
/// and PostgreSQL can settle on a generic plan for each. With counts of every size, each
/// batch's statements were new texts, parsed, analysed and planned afresh: intake and routing
/// sent 538 distinct statements for 10,000 cases, 237 with these sizes, with 17 % less planning
/// time and a lower latency (BENCHMARKS.md, Routing). The rest of the rows go in the next
/// statement.
pub fn statement_size(n: usize) -> usize {
    if n <= 8 { n } else { 1 << n.ilog2() }
}

/// `items` in consecutive chunks of at most `limit`, each of a [`statement_size`]: for
/// statements with a placeholder (or a few) per item, such as `IN (…)` lists.
pub fn statement_chunks<T>(items: &[T], limit: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(statement_size(rest.len().min(limit.max(1))));
        rest = tail;
        Some(chunk)
    })
}

/// How many of the rows whose sizes are `sizes` the next statement takes: as many as fit in
/// `limit` rows and [`MAX_STATEMENT_BYTES`] (always at least one), cut to a
/// [`statement_size`].
pub fn statement_rows(sizes: &[usize], limit: usize) -> usize {
    let mut n: usize = 0;
    let mut bytes = 0;
    for &s in sizes.iter().take(limit.max(1)) {
        if n > 0 && bytes + s > MAX_STATEMENT_BYTES {
            break;
        }
        bytes += s;
        n += 1;
    }
    statement_size(n)
}

/// `items` cut into consecutive statements by [`statement_rows`], `sizes[i]` being the bytes
/// `items[i]` adds to one: every item once, in order.
pub fn sized_chunks<'a, T>(items: &'a [T], sizes: &[usize], limit: usize) -> Vec<&'a [T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let n = statement_rows(&sizes[start..], limit);
        out.push(&items[start..start + n]);
        start += n;
    }
    out
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48
}

/// The name each connection of the store `schema` gives itself in `pg_stat_activity`,
/// `minqing/<schema>`, unless the URL names the application itself. The feed's horizon relies
/// on it to tell other services' transactions from this one's (`feed/horizon.rs`).
fn application_name(url: &str, schema: &str) -> Option<String> {
    (!url.contains("application_name")).then(|| format!("minqing/{schema}"))
}

/// The URL to try first without TLS: `url` with `sslmode=disable` when it reaches the server
/// over TCP on this machine's loopback interface and says nothing about TLS itself (no
/// `sslmode` or certificate parameters, no `host` parameter, no `PGSSLMODE` in the
/// environment). Traffic over loopback never leaves the machine, and TLS on every
/// connection cost 10–15 % of the suite's CPU and of PostgreSQL's (BENCHMARKS.md, Routing).
/// `None` when the URL is to be used as it is; `pgsslmode_set` is whether the environment
/// has `PGSSLMODE`, which sqlx honours like libpq.
fn plain_on_loopback(url: &str, pgsslmode_set: bool) -> Option<String> {
    if pgsslmode_set {
        return None;
    }
    let mut parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let loopback = match parsed.host()? {
        // A postgres: URL's host is opaque to the url crate: an address arrives as a name.
        url::Host::Domain(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    let says_tls_or_host = parsed.query_pairs().any(|(k, _)| {
        let k = k.to_ascii_lowercase().replace('-', "");
        k == "host" || k.starts_with("ssl")
    });
    if !loopback || says_tls_or_host {
        return None;
    }
    parsed.query_pairs_mut().append_pair("sslmode", "disable");
    Some(parsed.into())
}

/// The first connection, and the options (and URL) the pool is to use: on loopback without TLS when
/// the server takes that ([`plain_on_loopback`]), otherwise the URL as it is (a server whose
/// `pg_hba.conf` wants TLS even on loopback refuses the plain attempt, and is then reached
/// exactly as before).
async fn first_connection(
    url: &str,
) -> Result<(AnyConnection, AnyConnectOptions, String), sqlx::Error> {
    if let Some(plain) = plain_on_loopback(url, std::env::var_os("PGSSLMODE").is_some()) {
        let connect: AnyConnectOptions = plain.parse()?;
        match AnyConnection::connect_with(&connect).await {
            Ok(conn) => return Ok((conn, connect, plain)),
            Err(error) => {
                tracing::info!(%error, "PostgreSQL refused a connection without TLS on loopback; connecting as the URL says");
            }
        }
    }
    let connect: AnyConnectOptions = url.parse()?;
    let conn = AnyConnection::connect_with(&connect).await?;
    Ok((conn, connect, url.to_owned()))
}

/// What a PostgreSQL server's settings (`autovacuum`, `track_counts`, as `SHOW` gives them)
/// put at risk for the services' tables, one warning each; empty when nothing does.
///
/// The services rewrite rows (a case's row is rewritten as routing and the clusterer move
/// it; deliveries and indicator facts are written twice). Without autovacuum nothing reclaims
/// the old row versions, so tables and indexes only grow, and nothing keeps the planner's
/// statistics in step with tables that grow.
pub fn maintenance_advisories(autovacuum: &str, track_counts: &str) -> Vec<String> {
    let on = |v: &str| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "on" | "true" | "1" | "yes"
        )
    };
    let mut out = Vec::new();
    if !on(track_counts) {
        out.push(
            "PostgreSQL has track_counts off: autovacuum cannot tell which tables need vacuuming \
             or new statistics; turn it on"
                .to_owned(),
        );
    }
    if !on(autovacuum) {
        out.push(
            "PostgreSQL has autovacuum off: the services' tables and indexes will keep every old \
             row version and the planner will lack statistics; turn it on, or run VACUUM \
             ANALYZE on the database regularly"
                .to_owned(),
        );
    }
    out
}

/// The pool, the URL its connections use, and what the server's settings put at risk.
async fn connect_postgres(
    url: &str,
    schema: &str,
    opts: &DbOptions,
) -> Result<(AnyPool, String, Vec<String>), sqlx::Error> {
    // Create the schema once, before any pooled connection points its search_path at it.
    let (mut conn, connect, connection_url) = first_connection(url).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .await?;
    let settings =
        sqlx::query("SELECT current_setting('autovacuum'), current_setting('track_counts')")
            .fetch_one(&mut conn)
            .await?;
    let advisories = maintenance_advisories(
        &sqlx::Row::try_get::<String, _>(&settings, 0)?,
        &sqlx::Row::try_get::<String, _>(&settings, 1)?,
    );
    let lz4 = conn
        .execute("SET default_toast_compression = lz4")
        .await
        .is_ok();
    conn.close().await?;
    let set_path = match application_name(url, schema) {
        Some(app) => format!("SET search_path TO \"{schema}\"; SET application_name TO '{app}'"),
        None => format!("SET search_path TO \"{schema}\""),
    };
    // Large values (event payloads, documents) compressed with lz4 rather than the default
    // pglz, which was ~9 % of PostgreSQL's CPU under the routing benchmark; a server built
    // without lz4 keeps its default.
    let set_path = if lz4 {
        format!("{set_path}; SET default_toast_compression = lz4")
    } else {
        set_path
    };
    let pool = AnyPoolOptions::new()
        .max_connections(opts.max_connections)
        // No ping before every use: it costs a round trip per transaction, and a connection
        // that died meanwhile fails its first query as UNAVAILABLE, which callers retry.
        .test_before_acquire(false)
        .acquire_timeout(opts.acquire_timeout)
        .after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(set_path)).await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await?;
    Ok((pool, connection_url, advisories))
}

async fn connect_sqlite(opts: &DbOptions) -> Result<(AnyPool, AnyPool), sqlx::Error> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let path = opts.data_dir.join(format!("{}.db", opts.name));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let connect: AnyConnectOptions = url.parse()?;
    // WAL is a property of the file; set it once, alone, since it needs an exclusive lock.
    let mut conn = AnyConnection::connect_with(&connect).await?;
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.close().await?;
    let sync = match opts.sqlite_synchronous {
        SqliteSync::Full => "FULL",
        SqliteSync::Normal => "NORMAL",
    };
    // Temporary files in memory: a multi-row statement inside a transaction keeps a statement
    // journal (the pages it changes, to undo it alone), which SQLite otherwise writes to a
    // temporary file with a system call per page (8-9 % of the writer's time under load).
    let pragmas = format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
         PRAGMA temp_store = MEMORY;"
    );
    let make = |max: u32| {
        let pragmas = pragmas.clone();
        AnyPoolOptions::new()
            .max_connections(max)
            .test_before_acquire(false)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    Ok(())
                })
            })
    };
    let write = make(1).connect_with(connect.clone()).await?;
    let read = make(4).connect_with(connect).await?;
    Ok((read, write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn synchronous(db: &Db) -> i64 {
        crate::testing::writer_pragma(db, "synchronous").await
    }

    #[test]
    fn maintenance_settings_switched_off_are_each_advised_on() {
        assert!(maintenance_advisories("on", "on").is_empty());
        assert!(maintenance_advisories("ON", "true").is_empty());
        let off = maintenance_advisories("off", "on");
        assert_eq!(off.len(), 1);
        assert!(off[0].contains("autovacuum off"), "{off:?}");
        let untracked = maintenance_advisories("on", "off");
        assert_eq!(untracked.len(), 1);
        assert!(untracked[0].contains("track_counts off"), "{untracked:?}");
        assert_eq!(maintenance_advisories("off", "off").len(), 2);
    }

    #[test]
    fn only_a_loopback_url_silent_about_tls_is_tried_without_it() {
        let plain = |url: &str| plain_on_loopback(url, false);
        assert_eq!(
            plain("postgres://postgres@127.0.0.1:5432/city").as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/city?sslmode=disable")
        );
        assert_eq!(
            plain("postgresql://u:p@localhost/city?application_name=x").as_deref(),
            Some("postgresql://u:p@localhost/city?application_name=x&sslmode=disable")
        );
        assert!(plain("postgres://[::1]:5432/city").is_some());
        assert!(
            plain("postgres://127.0.0.2/city").is_some(),
            "all of 127/8 is loopback"
        );
        // Another machine, or a URL that says anything about TLS or where to connect: as is.
        for url in [
            "postgres://db.example.org/city",
            "postgres://10.0.0.5/city",
            "postgres://127.0.0.1/city?sslmode=require",
            "postgres://127.0.0.1/city?ssl-mode=prefer",
            "postgres://127.0.0.1/city?sslrootcert=/etc/ca.pem",
            "postgres://localhost/city?host=/var/run/postgresql",
            "sqlite://city.db",
            "not a url",
        ] {
            assert_eq!(plain(url), None, "{url}");
        }
        // PGSSLMODE in the environment is the operator's word too.
        assert_eq!(plain_on_loopback("postgres://127.0.0.1/city", true), None);
    }

    #[tokio::test]
    async fn a_relaxed_writer_never_leaves_the_writer_relaxed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbOptions::new("relaxed", None, dir.path().to_path_buf()))
            .await
            .unwrap();
        assert_eq!(synchronous(&db).await, 2, "FULL as configured");

        // Restored: the same connection goes back to the pool, durable again.
        let mut w = db.relaxed_writer().await.unwrap();
        let level: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(w.conn().unwrap())
            .await
            .unwrap()
            .get(0);
        assert_eq!(level, 1, "NORMAL while relaxed");
        w.restore().await.unwrap();
        assert_eq!(synchronous(&db).await, 2);

        // Dropped without restoring (an error, a cancelled task): the connection is closed,
        // and the next writer is a fresh one with the configured durability.
        let w = db.relaxed_writer().await.unwrap();
        drop(w);
        assert_eq!(synchronous(&db).await, 2);
    }
}
