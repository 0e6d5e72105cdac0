//! What every pooled connection is set up with: on PostgreSQL its service's schema, its
//! service's name for `pg_stat_activity`, and lz4 for large values; on SQLite temporary files
//! (statement journals) in memory.

use minqing_kit::{
    backend_tests,
    db::{Backend, Migrations},
    testing::{TestDatabase, writer_pragma},
};
use sqlx::Row;

const NONE: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};

async fn every_connection_is_set_up_for_its_service(backend: Backend) {
    let Some(t) = TestDatabase::new(backend).await else {
        return;
    };
    let db = t.db("sessions", &NONE).await;
    match backend {
        Backend::Postgres => {
            let mut tx = db.begin().await.unwrap();
            let row = sqlx::query(
                "SELECT current_setting('search_path'), current_setting('application_name'), \
                 current_setting('default_toast_compression')",
            )
            .fetch_one(tx.conn())
            .await
            .unwrap();
            let (path, app, compression): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            assert_eq!(path, "sessions");
            assert_eq!(app, "minqing/sessions");
            // This machine's PostgreSQL is built with lz4 (Debian's is); one without keeps pglz.
            assert_eq!(compression, "lz4");
            tx.rollback().await.unwrap();
        }
        Backend::Sqlite => {
            assert_eq!(writer_pragma(&db, "temp_store").await, 2, "MEMORY");
            let reader: i64 = sqlx::query("PRAGMA temp_store")
                .fetch_one(db.pool())
                .await
                .unwrap()
                .get(0);
            assert_eq!(reader, 2, "MEMORY on the read pool too");
        }
    }
}

backend_tests!(every_connection_is_set_up_for_its_service);
