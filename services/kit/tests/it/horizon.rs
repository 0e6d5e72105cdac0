//! The feed's horizon on PostgreSQL: a transaction still running holds back the events
//! committed after it only when it could write this feed — this service's own, or one that
//! cannot be told apart — and not when it is another service's.

use minqing_kit::{
    db::{Backend, Db, Tx},
    feed::{self, Cursor},
    testing::{TestDatabase, eventually},
};
use sqlx::{Connection, Executor, postgres::PgConnection};
use std::time::Duration;

use crate::harness::{NO_MIGRATIONS, append_empty};

/// Appends one event in `tx` (which then holds a transaction id until it ends).
async fn append(tx: &mut Tx, subject: &str) {
    append_empty::<prost_types::Duration>(tx, "test:horizon", subject)
        .await
        .unwrap();
}

/// Commits one event in its own transaction.
async fn commit_one(db: &Db, subject: &str) {
    let mut tx = db.begin().await.unwrap();
    append(&mut tx, subject).await;
    tx.commit().await.unwrap();
}

/// The subjects of the events readable after `after`, and whether any were held back.
async fn readable(db: &Db, after: Cursor) -> (Vec<String>, bool) {
    let batch = feed::read_after(db, after, 100).await.unwrap();
    (
        batch.events.iter().map(|e| e.subject.clone()).collect(),
        batch.held_back,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_transaction_that_could_write_the_feed_holds_it_back() {
    let Some(t) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    // Two services in one database, as `minqing up --database-url` runs them.
    let ours = t.db("ours", &NO_MIGRATIONS).await;
    let theirs = t.db("theirs", &NO_MIGRATIONS).await;
    commit_one(&ours, "first").await;
    let (seen, held) = readable(&ours, Cursor::START).await;
    assert_eq!(seen, ["first"]);
    assert!(!held);
    let start = feed::latest_cursor(&ours).await.unwrap();

    // Another service's long transaction (it has written its own feed, so it has an id older
    // than what we commit next) does not hold our feed back: the second time a read is held
    // by it, it is looked up, and passed over while it still runs. (Other tests' transactions,
    // in other databases, may be looked up first; hence the few reads.)
    let mut long = theirs.begin().await.unwrap();
    append(&mut long, "theirs").await;
    commit_one(&ours, "second").await;
    eventually(
        Duration::from_secs(5),
        "another service's transaction passed",
        || async { readable(&ours, start).await == (vec!["second".to_owned()], false) },
    )
    .await;
    // Learnt once, passed to every later read.
    assert_ne!(ours.xids().param(&feed::Pass::default()), "{}");
    assert_eq!(
        readable(&ours, start).await,
        (vec!["second".to_owned()], false)
    );
    long.commit().await.unwrap();
    let start = feed::latest_cursor(&ours).await.unwrap();

    // Our own: what commits after it waits until it ends, then comes in transaction order.
    let mut long = ours.begin().await.unwrap();
    append(&mut long, "ours, slow").await;
    commit_one(&ours, "third").await;
    for _ in 0..5 {
        assert_eq!(readable(&ours, start).await, (vec![], true));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    long.commit().await.unwrap();
    assert_eq!(
        readable(&ours, start).await,
        (vec!["ours, slow".to_owned(), "third".to_owned()], false)
    );
    let start = feed::latest_cursor(&ours).await.unwrap();

    // A connection that is not a Minqing service's (a person at psql, a migration) might write
    // anything: it holds the feed back too.
    let url = t.postgres_url.clone().unwrap();
    let mut stranger = PgConnection::connect(&url).await.unwrap();
    stranger.execute("BEGIN").await.unwrap();
    stranger
        .execute("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    commit_one(&ours, "fourth").await;
    for _ in 0..5 {
        assert_eq!(readable(&ours, start).await, (vec![], true));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stranger.execute("COMMIT").await.unwrap();
    assert_eq!(
        readable(&ours, start).await,
        (vec!["fourth".to_owned()], false)
    );
    stranger.close().await.unwrap();
}
