//! Batches that change nothing: a consumer whose reads show a batch changes nothing moves its
//! cursor past it without applying it, and the writer's durability is as configured after.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use minqing_kit::{
    backend_tests,
    config::ServerConfig,
    db::{Backend, Db, Migrations, Tx},
    feed::{self, Apply, Consumer, ConsumerOptions, EventMeta, FeedSource, Prepared},
    testing::{eventually, writer_pragma},
};
use minqing_proto::minqing::events::v1 as pb;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::harness::Harness;

const MIGRATIONS: Migrations = Migrations {
    sqlite: &[(
        100,
        "applied",
        "CREATE TABLE applied (subject TEXT NOT NULL)",
    )],
    postgres: &[(
        100,
        "applied",
        "CREATE TABLE applied (subject TEXT NOT NULL)",
    )],
};

/// Applies only batches holding a "loud/" event; counts the batches it was asked to apply.
struct Loud {
    applied_batches: Arc<AtomicUsize>,
}

impl Apply for Loud {
    async fn prepare(&self, events: &[pb::Event]) -> anyhow::Result<Prepared> {
        Ok(if events.iter().any(|e| e.subject.starts_with("loud/")) {
            Prepared::default()
        } else {
            Prepared::nothing_to_apply()
        })
    }

    async fn apply(&self, tx: &mut Tx, events: &[pb::Event]) -> anyhow::Result<()> {
        self.applied_batches.fetch_add(1, Ordering::SeqCst);
        for event in events.iter().filter(|e| e.subject.starts_with("loud/")) {
            sqlx::query("INSERT INTO applied (subject) VALUES ($1)")
                .bind(&event.subject)
                .execute(tx.conn())
                .await?;
        }
        Ok(())
    }
}

/// Appends one event of `event`'s kind.
async fn write_as<M: prost::Message + prost::Name>(db: &Db, subject: &str, event: &M) {
    let mut tx = db.begin().await.unwrap();
    feed::append(
        &mut tx,
        &EventMeta::current("test:writer"),
        subject,
        event,
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Appends one `Duration` event (the kind the consumers here want).
async fn write(db: &Db, subject: &str) {
    write_as(db, subject, &prost_types::Duration::default()).await;
}

async fn stored_cursor(db: &Db) -> String {
    sqlx::query("SELECT cursor FROM consumer_cursors WHERE name = 'quiet'")
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|r| r.get::<String, _>(0))
        .unwrap_or_default()
}

async fn batches_that_change_nothing_only_move_the_cursor(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let db = h.test_db.db("quietconsumer", &MIGRATIONS).await;
    let applied_batches = Arc::new(AtomicUsize::new(0));
    let mut opts = ConsumerOptions::new("quiet");
    opts.linger = Duration::ZERO;
    let consumer = Consumer::new(
        db.clone(),
        FeedSource::Local(h.producer.clone()),
        Loud {
            applied_batches: applied_batches.clone(),
        },
        opts,
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));

    // Quiet events only: the cursor moves to the last of them, nothing is applied.
    for i in 0..40 {
        write(&h.producer, &format!("quiet/{i}")).await;
    }
    // (On PostgreSQL the feed shows events once no older transaction can still commit.)
    let mut last_quiet = String::new();
    for _ in 0..300 {
        let events = feed::read_after(&h.producer, feed::Cursor::START, 1_000)
            .await
            .unwrap()
            .events;
        if events.len() == 40 {
            last_quiet = events[39].cursor.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!last_quiet.is_empty(), "the 40 events readable");
    eventually(
        Duration::from_secs(30),
        "the cursor past the quiet events",
        || {
            let db = db.clone();
            let want = last_quiet.clone();
            async move { stored_cursor(&db).await == want }
        },
    )
    .await;
    assert_eq!(applied_batches.load(Ordering::SeqCst), 0, "nothing applied");

    // A loud event is applied as usual, once.
    write(&h.producer, "loud/1").await;
    eventually(Duration::from_secs(30), "the loud event applied", || {
        let db = db.clone();
        async move {
            sqlx::query("SELECT COUNT(*) FROM applied")
                .fetch_one(db.pool())
                .await
                .unwrap()
                .get::<i64, _>(0)
                == 1
        }
    })
    .await;
    assert_eq!(applied_batches.load(Ordering::SeqCst), 1);

    // The writer's durability is back to the configured FULL after the relaxed commits.
    if backend == Backend::Sqlite {
        assert_eq!(
            writer_pragma(&db, "synchronous").await,
            2,
            "synchronous = FULL"
        );
    }
    shutdown.cancel();
    task.await.unwrap();
    h.stop().await;
}

/// Counts the events it applies (it asks only for `Duration` events).
struct Wanted {
    applied: Arc<AtomicUsize>,
}

impl Apply for Wanted {
    async fn apply(&self, _tx: &mut Tx, events: &[pb::Event]) -> anyhow::Result<()> {
        self.applied.fetch_add(events.len(), Ordering::SeqCst);
        Ok(())
    }
}

/// Batches holding none of the kinds a consumer wants are not a commit each: their cursor is
/// stored with the next applied batch, or on the way out.
async fn batches_of_unwanted_kinds_are_stored_lazily(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let db = h.test_db.db("lazycursor", &MIGRATIONS).await;
    let applied = Arc::new(AtomicUsize::new(0));
    let start = |applied: Arc<AtomicUsize>| {
        let mut opts = ConsumerOptions::new("quiet");
        opts.linger = Duration::ZERO;
        // No lease renewal (which also stores the cursor) within the test.
        opts.lease_ttl = Duration::from_secs(300);
        opts.kinds = vec!["google.protobuf.Duration".into()];
        let consumer = Consumer::new(
            db.clone(),
            FeedSource::Local(h.producer.clone()),
            Wanted { applied },
            opts,
        );
        let shutdown = CancellationToken::new();
        (tokio::spawn(consumer.run(shutdown.clone())), shutdown)
    };
    let (task, shutdown) = start(applied.clone());

    // One wanted event, applied: its cursor is stored with it.
    write(&h.producer, "wanted/1").await;
    eventually(Duration::from_secs(30), "the wanted event applied", || {
        let applied = applied.clone();
        async move { applied.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let all = |n: usize| {
        let producer = h.producer.clone();
        async move {
            for _ in 0..300 {
                let events = feed::read_after(&producer, feed::Cursor::START, 1_000)
                    .await
                    .unwrap()
                    .events;
                if events.len() == n {
                    return events
                        .iter()
                        .map(|e| e.cursor.to_string())
                        .collect::<Vec<_>>();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{n} events never readable");
        }
    };
    let cursors = all(1).await;
    eventually(
        Duration::from_secs(30),
        "the wanted event's cursor stored",
        || {
            let (db, want) = (db.clone(), cursors[0].clone());
            async move { stored_cursor(&db).await == want }
        },
    )
    .await;

    // Unwanted events: the consumer moves past them, but stores nothing meanwhile.
    for i in 0..30 {
        write_as(
            &h.producer,
            &format!("unwanted/{i}"),
            &prost_types::Timestamp::default(),
        )
        .await;
    }
    let cursors = all(31).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stored_cursor(&db).await,
        cursors[0],
        "no commit per empty batch"
    );

    // On the way out the cursor past them is stored, and nothing was applied for them.
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        stored_cursor(&db).await,
        cursors[30],
        "stored on the way out"
    );
    assert_eq!(applied.load(Ordering::SeqCst), 1);

    // A consumer started again begins past them and applies only what is new.
    let (task, shutdown) = start(applied.clone());
    write(&h.producer, "wanted/2").await;
    eventually(
        Duration::from_secs(30),
        "the second wanted event applied",
        || {
            let applied = applied.clone();
            async move { applied.load(Ordering::SeqCst) == 2 }
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();
    h.stop().await;
}

backend_tests!(
    batches_that_change_nothing_only_move_the_cursor,
    batches_of_unwanted_kinds_are_stored_lazily
);
