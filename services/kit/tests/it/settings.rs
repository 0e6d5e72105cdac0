//! What a PostgreSQL server's settings put at risk is found when a service connects: the
//! advisories follow the server's own `autovacuum` and `track_counts`, whichever way they are
//! set (this machine's server runs with autovacuum off; another may not).

use minqing_kit::{
    db::{Backend, maintenance_advisories},
    testing::TestDatabase,
};
use sqlx::{Connection, Row, postgres::PgConnection};

use crate::harness::NO_MIGRATIONS;

#[tokio::test]
async fn a_postgres_store_reports_what_the_servers_maintenance_settings_put_at_risk() {
    let Some(t) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let db = t.db("ours", &NO_MIGRATIONS).await;
    let mut conn = PgConnection::connect(t.postgres_url.as_deref().unwrap())
        .await
        .unwrap();
    let row = sqlx::query("SELECT current_setting('autovacuum'), current_setting('track_counts')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (autovacuum, track_counts): (String, String) = (row.get(0), row.get(1));
    let _ = conn.close().await;

    let advisories = db.server_advisories();
    assert_eq!(
        advisories,
        maintenance_advisories(&autovacuum, &track_counts).as_slice()
    );
    assert_eq!(
        advisories.iter().any(|a| a.contains("autovacuum off")),
        autovacuum == "off",
        "autovacuum is {autovacuum}: {advisories:?}"
    );
    assert_eq!(
        advisories.iter().any(|a| a.contains("track_counts off")),
        track_counts == "off",
        "track_counts is {track_counts}: {advisories:?}"
    );
}

#[tokio::test]
async fn a_sqlite_store_has_no_server_to_advise_on() {
    let t = TestDatabase::new(Backend::Sqlite).await.unwrap();
    let db = t.db("ours", &NO_MIGRATIONS).await;
    assert!(db.server_advisories().is_empty());
}
