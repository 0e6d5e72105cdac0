//! Lanes: a class of a service's transactions that may append only certain kinds of event. A
//! lane's running transaction holds back the feed's readers that want any of its kinds, or
//! every kind, and not those that want none of them.

use std::time::Duration;

use minqing_kit::{
    backend_tests,
    config::ServerConfig,
    db::{Backend, Db, Tx},
    error::StoreError,
    feed::{self, Cursor, EventMeta},
    testing::{TestDatabase, eventually},
};
use minqing_proto::minqing::events::v1 as pb;
use prost::Name;
use tonic::Streaming;

use crate::harness::{Harness, NO_MIGRATIONS, append_empty};

/// The kind a lane may append in these tests.
fn lane_kind() -> String {
    prost_types::Duration::full_name()
}

/// A kind of the service's other transactions.
fn other_kind() -> String {
    prost_types::Timestamp::full_name()
}

async fn append_duration(tx: &mut Tx, subject: &str) -> Result<String, StoreError> {
    append_empty::<prost_types::Duration>(tx, "test:lanes", subject).await
}

async fn append_timestamp(tx: &mut Tx, subject: &str) -> Result<String, StoreError> {
    append_empty::<prost_types::Timestamp>(tx, "test:lanes", subject).await
}

/// Commits one event of the other kind in a transaction of no lane.
async fn commit_timestamp(db: &Db, subject: &str) {
    let mut tx = db.begin().await.unwrap();
    append_timestamp(&mut tx, subject).await.unwrap();
    tx.commit().await.unwrap();
}

/// The subjects of every event committed to the feed, in the order written (read from the
/// table: a reader of the feed may yet be held back by another test's transaction).
async fn subjects(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT subject FROM events ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// The name of the connection `tx` runs on.
async fn name(tx: &mut Tx) -> String {
    sqlx::query_scalar::<_, String>("SELECT current_setting('application_name')")
        .fetch_one(tx.conn())
        .await
        .unwrap()
}

async fn a_lane_appends_only_its_kinds(backend: Backend) {
    let Some(t) = TestDatabase::new(backend).await else {
        return;
    };
    let db = t.db("ours", &NO_MIGRATIONS).await;
    let other = t.db("theirs", &NO_MIGRATIONS).await;
    let lane = db.lane("background", &[lane_kind()]).unwrap();
    assert_eq!(lane.name(), "background");
    assert!(lane.allows(&lane_kind()));
    assert!(!lane.allows(&other_kind()));
    // Asked again with the same kinds, the same lane; with other kinds, or badly named, or
    // with no kinds, refused.
    assert!(db.lane("background", &[lane_kind()]).is_ok());
    assert!(db.lane("background", &[lane_kind(), other_kind()]).is_err());
    assert!(db.lane("Not A Name", &[lane_kind()]).is_err());
    assert!(db.lane("empty", &[]).is_err());

    // Its kinds are appended and committed.
    let mut tx = db.begin_in(&lane).await.unwrap();
    append_duration(&mut tx, "in the lane").await.unwrap();
    tx.commit().await.unwrap();

    // Any other kind is refused, one at a time or among many, before anything is written;
    // the transaction it was refused in is not committed, so what it wrote is gone too.
    let mut tx = db.begin_in(&lane).await.unwrap();
    append_duration(&mut tx, "written, then rolled back")
        .await
        .unwrap();
    let err = append_timestamp(&mut tx, "refused").await.unwrap_err();
    assert!(
        format!("{:?}", err).contains("may not append an event of kind google.protobuf.Timestamp"),
        "{err:?}"
    );
    let meta = EventMeta::current("test:lanes");
    let rows = vec![
        feed::EventRow::new(&meta, "row 1", &prost_types::Duration::default(), 0),
        feed::EventRow::new(&meta, "row 2", &prost_types::Timestamp::default(), 0),
    ];
    assert!(feed::append_rows(&mut tx, rows).await.is_err());
    drop(tx);

    // A transaction of no lane appends any kind.
    commit_timestamp(&db, "no lane").await;
    assert_eq!(subjects(&db).await, ["in the lane", "no lane"]);

    // A lane is its own store's: another store refuses to begin a transaction in it.
    assert!(other.begin_in(&lane).await.is_err());

    // On PostgreSQL the lane names the transaction's connection while it runs, and no longer.
    if backend == Backend::Postgres {
        let mut tx = db.begin_in(&lane).await.unwrap();
        assert_eq!(name(&mut tx).await, "minqing/ours/background");
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert_eq!(name(&mut tx).await, "minqing/ours");
        tx.rollback().await.unwrap();
    }
}

backend_tests!(a_lane_appends_only_its_kinds);

/// The subjects of the events `stream` delivers within `within` (empty responses, which only
/// move the cursor, are skipped), until `count` have come.
async fn receive(
    stream: &mut Streaming<pb::SubscribeResponse>,
    count: usize,
    within: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < count {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(message) => out.extend(
                message
                    .unwrap()
                    .expect("the stream stays open")
                    .events
                    .into_iter()
                    .map(|e| e.subject),
            ),
            Err(_) => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_lane_transaction_holds_back_only_the_readers_of_its_kinds() {
    let Some(h) = Harness::start(Backend::Postgres, ServerConfig::default()).await else {
        return;
    };
    let db = h.producer.clone();
    let lane = db.lane("slow", &[lane_kind()]).unwrap();
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    commit_timestamp(&db, "first").await;
    // The cursor after it (the auth store's transactions, in the same database, may hold a
    // first read back until they are looked up).
    let start = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let batch = feed::read_after(&db, Cursor::START, 100).await.unwrap();
            if let [first] = batch.events.as_slice()
                && !batch.held_back
            {
                return first.cursor;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first event is readable");
    let mut every_kind = h.subscribe(&token, "", &[], 0).await;
    let mut lane_kinds = h.subscribe(&token, "", &[&lane_kind()], 0).await;
    let mut other_kinds = h.subscribe(&token, "", &[&other_kind()], 0).await;
    for stream in [&mut every_kind, &mut other_kinds] {
        assert_eq!(receive(stream, 1, Duration::from_secs(5)).await, ["first"]);
    }

    // A lane's transaction has appended and still runs; another commits after it.
    let mut long = db.begin_in(&lane).await.unwrap();
    append_duration(&mut long, "lane, slow").await.unwrap();
    commit_timestamp(&db, "second").await;

    // The readers wanting none of the lane's kinds pass it: read directly (after it was seen
    // holding the feed twice and looked up), and over gRPC from the feed's shared tail.
    eventually(
        Duration::from_secs(5),
        "a reader of other kinds passes the lane",
        || async {
            let (batch, _) = feed::read_kinds_after(&db, start, &[other_kind()], 100)
                .await
                .unwrap();
            batch
                .events
                .iter()
                .map(|e| e.subject.as_str())
                .collect::<Vec<_>>()
                == ["second"]
        },
    )
    .await;
    assert_eq!(
        receive(&mut other_kinds, 1, Duration::from_secs(5)).await,
        ["second"]
    );

    // Those wanting its kinds, or every kind, wait for it: it is this service's own.
    for _ in 0..5 {
        let batch = feed::read_after(&db, start, 100).await.unwrap();
        assert!(batch.events.is_empty() && batch.held_back);
        for kinds in [vec![lane_kind()], vec![lane_kind(), other_kind()]] {
            let (batch, next) = feed::read_kinds_after(&db, start, &kinds, 100)
                .await
                .unwrap();
            assert!(batch.events.is_empty() && batch.held_back);
            assert_eq!(next, start);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        receive(&mut every_kind, 1, Duration::from_millis(300))
            .await
            .is_empty()
    );

    // When it commits, they have its event and the later one, in transaction order; the reader
    // of other kinds never sees the lane's.
    long.commit().await.unwrap();
    assert_eq!(
        receive(&mut every_kind, 2, Duration::from_secs(5)).await,
        ["lane, slow", "second"]
    );
    assert_eq!(
        receive(&mut lane_kinds, 1, Duration::from_secs(5)).await,
        ["lane, slow"]
    );
    commit_timestamp(&db, "third").await;
    assert_eq!(
        receive(&mut other_kinds, 1, Duration::from_secs(5)).await,
        ["third"]
    );
    h.stop().await;
}
