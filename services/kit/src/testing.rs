//! Test support: a fresh database per test on either backend.
//!
//! PostgreSQL tests connect to `MINQING_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create a throwaway database for each test
//! and drop it afterwards. When PostgreSQL cannot be reached they are skipped with a message —
//! unless `MINQING_REQUIRE_POSTGRES=1` (as in CI), which makes them fail instead.

use std::{path::PathBuf, time::Duration};

use sqlx::{Connection, Executor, postgres::PgConnection};

use crate::db::{Backend, Db, DbOptions, Migrations};

/// The administrative URL PostgreSQL tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("MINQING_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn postgres_required() -> bool {
    std::env::var("MINQING_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A throwaway place for one test's data: a temporary directory (SQLite), plus a fresh
/// database (PostgreSQL), removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The backend.
    pub backend: Backend,
    /// The fresh database's URL (PostgreSQL).
    pub postgres_url: Option<String>,
    /// A temporary data directory (always made; SQLite files live here).
    pub data_dir: tempfile::TempDir,
    database: Option<String>,
}

impl TestDatabase {
    /// A fresh database; `None` when PostgreSQL was asked for, cannot be reached, and is not
    /// required (the test should then return early; a message says it was skipped).
    pub async fn new(backend: Backend) -> Option<Self> {
        crate::telemetry::init_for_tests();
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => Some(Self {
                backend,
                postgres_url: None,
                data_dir,
                database: None,
            }),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = match tokio::time::timeout(
                    Duration::from_secs(5),
                    PgConnection::connect(&admin),
                )
                .await
                {
                    Ok(Ok(conn)) => conn,
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        if postgres_required() {
                            panic!(
                                "PostgreSQL is required (MINQING_REQUIRE_POSTGRES=1) but {admin} cannot be reached: {why}"
                            );
                        }
                        eprintln!("SKIPPED: PostgreSQL test: {admin} cannot be reached ({why})");
                        return None;
                    }
                };
                let name = format!("mq_test_{}", uuid::Uuid::new_v4().simple());
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create a test database");
                let _ = conn.close().await;
                let url = replace_database(&admin, &name);
                Some(Self {
                    backend,
                    postgres_url: Some(url),
                    data_dir,
                    database: Some(name),
                })
            }
        }
    }

    /// Connection options for the store `name` in this database.
    pub fn options(&self, name: &str) -> DbOptions {
        let mut opts = DbOptions::new(
            name,
            self.postgres_url.clone(),
            self.data_dir.path().to_path_buf(),
        );
        opts.max_connections = 8;
        opts
    }

    /// Connects to the store `name` and runs `migrations`.
    pub async fn db(&self, name: &str, migrations: &Migrations) -> Db {
        let db = Db::connect(&self.options(name)).await.expect("connect");
        db.migrate(migrations).await.expect("migrate");
        db
    }

    /// The data directory.
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_path_buf()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.database.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop runs inside the test's runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn replace_database(url: &str, database: &str) -> String {
    // postgres://user@host:port/db?params → same URL with another db.
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs an async test body once per backend: `backend_tests!(my_test, other_test);` makes
/// `sqlite::my_test` and `postgres::my_test`, each calling `my_test(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A SQLite `PRAGMA`'s value on the writer connection (read inside a write transaction,
/// rolled back), e.g. `writer_pragma(&db, "synchronous")`: 2 is FULL.
pub async fn writer_pragma(db: &Db, pragma: &str) -> i64 {
    use sqlx::Row;
    let mut tx = db.begin().await.expect("a write transaction");
    let value: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
        .fetch_one(tx.conn())
        .await
        .expect("the pragma reads")
        .get(0);
    tx.rollback().await.expect("rollback");
    value
}

/// How many sequential scans of `table` the transaction `tx` has made so far (PostgreSQL):
/// for tests that a statement reads a grown table by its key.
pub async fn seq_scans(tx: &mut crate::db::Tx, table: &str) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = $1")
        .bind(table.to_owned())
        .fetch_one(tx.conn())
        .await
        .expect("the table's scans read")
        .get(0)
}

/// Waits until `check` holds, polling every few milliseconds, or panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event of `db`'s feed, in feed order, waiting while committed events are held back
/// behind a transaction still running (on PostgreSQL one not yet known to be another service's
/// or another database's holds it back too, until it is looked up).
pub async fn whole_feed(db: &Db) -> Vec<crate::feed::StoredEvent> {
    const PAGE: i64 = 1_000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut after = crate::feed::Cursor::START;
    loop {
        let batch = crate::feed::read_after(db, after, PAGE)
            .await
            .expect("read the feed");
        let n = batch.events.len() as i64;
        if let Some(last) = batch.events.last() {
            after = last.cursor;
        }
        out.extend(batch.events);
        if n == PAGE {
            continue;
        }
        if !batch.held_back {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed stayed held back for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_in_a_url() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h", "z"), "postgres://h/z");
    }
}
