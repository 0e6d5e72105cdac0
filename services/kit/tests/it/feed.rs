//! The event feed: no event ever skipped under concurrent writers; consumers apply each
//! event exactly once even when killed mid-stream and when several replicas compete.

use std::{collections::HashSet, time::Duration};

use minqing_kit::{
    backend_tests,
    config::ServerConfig,
    db::{Backend, Db, Migrations, Tx},
    feed::{self, Apply, Consumer, ConsumerOptions, Cursor, EventMeta, FeedSource, Prepared},
    testing::eventually,
};
use minqing_proto::minqing::events::v1::{self as pb, event_feed_client::EventFeedClient};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::harness::{Harness, authed};

/// Writes one event in its own transaction, holding the transaction open a random moment
/// after the insert so that commits land out of sequence order.
async fn write_event(db: &Db, writer: usize, i: usize, jitter_ms: u64) -> String {
    let mut tx = db.begin().await.unwrap();
    let payload = prost_types::Duration {
        seconds: writer as i64,
        nanos: i as i32,
    };
    let id = feed::append(
        &mut tx,
        &EventMeta::current("test:writer"),
        &format!("things/{writer}-{i}"),
        &payload,
        0,
    )
    .await
    .unwrap();
    if jitter_ms > 0 {
        let ms = rand::rng().random_range(0..=jitter_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    tx.commit().await.unwrap();
    id
}

async fn feed_never_skips_an_event_under_concurrent_writers(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    let mut client = EventFeedClient::new(h.channel().await);
    // Subscribe before anything is written: the subscriber follows live as writers commit.
    let mut stream = client
        .subscribe(authed(
            pb::SubscribeRequest {
                after: String::new(),
                kinds: vec![],
                max_batch: 50,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();

    const WRITERS: usize = 16;
    const EACH: usize = 40;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = h.producer.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                ids.push(write_event(&db, w, i, 4).await);
            }
            ids
        }));
    }

    let mut received = Vec::new();
    let mut last = Cursor::START;
    let collect = async {
        while received.len() < WRITERS * EACH {
            let batch = stream.message().await.unwrap().expect("stream stays open");
            for event in batch.events {
                let cursor = Cursor::parse(&event.cursor).unwrap();
                assert!(cursor > last, "cursors only move forward");
                last = cursor;
                received.push(event.id);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("every event arrives");
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let got: HashSet<_> = received.iter().cloned().collect();
    assert_eq!(got.len(), received.len(), "no event delivered twice");
    assert_eq!(got, written, "every written event delivered, none skipped");

    // Replaying from the start gives the same sequence.
    let replay = feed::read_after(&h.producer, Cursor::START, 10_000)
        .await
        .unwrap()
        .events;
    let replayed: Vec<_> = replay.into_iter().map(|e| e.id).collect();
    assert_eq!(replayed, received);
    h.stop().await;
}

async fn subscribe_filters_kinds_but_advances_the_cursor(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    let mut tx = h.producer.begin().await.unwrap();
    let meta = EventMeta::current("test:writer");
    feed::append(&mut tx, &meta, "a/1", &prost_types::Duration::default(), 1)
        .await
        .unwrap();
    feed::append(&mut tx, &meta, "a/2", &prost_types::Timestamp::default(), 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut client = EventFeedClient::new(h.channel().await);
    let mut stream = client
        .subscribe(authed(
            pb::SubscribeRequest {
                after: String::new(),
                kinds: vec!["google.protobuf.Timestamp".into()],
                max_batch: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let batch = stream.message().await.unwrap().unwrap();
    assert_eq!(batch.events.len(), 1);
    let event = &batch.events[0];
    assert_eq!(event.kind, "google.protobuf.Timestamp");
    assert_eq!(event.subject, "a/2");
    assert_eq!(event.source, "producer");
    assert_eq!(
        event.payload.as_ref().unwrap().type_url,
        "type.googleapis.com/google.protobuf.Timestamp"
    );
    assert_eq!(batch.cursor, event.cursor);

    // A cursor that is not one of ours is refused with a field violation.
    let err = client
        .subscribe(authed(
            pb::SubscribeRequest {
                after: "garbage".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    h.stop().await;
}

const CONSUMER_MIGRATIONS: Migrations = Migrations {
    sqlite: &[(
        100,
        "applied",
        "CREATE TABLE applied (event_id TEXT NOT NULL, holder TEXT NOT NULL)",
    )],
    postgres: &[(
        100,
        "applied",
        "CREATE TABLE applied (event_id TEXT NOT NULL, holder TEXT NOT NULL)",
    )],
};

/// Records each event it is given: duplicates would show as repeated rows.
struct Record {
    holder: String,
}

impl Apply for Record {
    /// The batch's event ids, read before its transaction, as a consumer's reads would be.
    async fn prepare(&self, events: &[pb::Event]) -> anyhow::Result<Prepared> {
        Ok(Prepared::new(
            events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ))
    }

    async fn apply_prepared(
        &self,
        tx: &mut Tx,
        events: &[pb::Event],
        prepared: Prepared,
    ) -> anyhow::Result<()> {
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        anyhow::ensure!(
            prepared.take::<Vec<String>>() == Some(ids),
            "prepare saw another batch"
        );
        self.apply(tx, events).await
    }

    async fn apply(&self, tx: &mut Tx, events: &[pb::Event]) -> anyhow::Result<()> {
        for event in events {
            sqlx::query("INSERT INTO applied (event_id, holder) VALUES ($1, $2)")
                .bind(&event.id)
                .bind(&self.holder)
                .execute(tx.conn())
                .await?;
        }
        Ok(())
    }
}

fn spawn_consumer(
    db: &Db,
    source: &FeedSource,
    holder: &str,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut opts = ConsumerOptions::new("test-consumer");
    opts.holder = holder.to_string();
    opts.lease_ttl = Duration::from_millis(600);
    opts.max_batch = 37;
    let consumer = Consumer::new(
        db.clone(),
        source.clone(),
        Record {
            holder: holder.to_string(),
        },
        opts,
    );
    tokio::spawn(consumer.run(shutdown))
}

async fn counts(db: &Db) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM applied")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn consumer_applies_each_event_once_despite_kills_and_rivals(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let (_, token) = h.tokens.issue_service_token("consumer").await.unwrap();
    let consumer_db = h.test_db.db("consumer", &CONSUMER_MIGRATIONS).await;
    let source = FeedSource::Grpc {
        channel: h.channel().await,
        token,
    };

    const TOTAL: usize = 1500;
    let producer = h.producer.clone();
    let writer = tokio::spawn(async move {
        for i in 0..TOTAL {
            write_event(&producer, 0, i, 0).await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // Two rival replicas run side by side the whole time...
    let rivals = CancellationToken::new();
    let rival = spawn_consumer(&consumer_db, &source, "rival", rivals.clone());
    // ...while a third is killed mid-stream again and again, each restart a new process
    // (a new holder id) that must wait for the dead one's lease to run out.
    for round in 0..6 {
        let victim = spawn_consumer(
            &consumer_db,
            &source,
            &format!("victim-{round}"),
            CancellationToken::new(),
        );
        let ms = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        victim.abort();
        let _ = victim.await;
    }
    writer.await.unwrap();
    let last = spawn_consumer(&consumer_db, &source, "last", rivals.clone());

    eventually(Duration::from_secs(60), "every event applied", || {
        let db = consumer_db.clone();
        async move { counts(&db).await.1 == TOTAL as i64 }
    })
    .await;
    // Give any duplicate a chance to appear before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rows, distinct) = counts(&consumer_db).await;
    assert_eq!(distinct, TOTAL as i64, "every event applied");
    assert_eq!(rows, TOTAL as i64, "no event applied twice");

    rivals.cancel();
    let _ = rival.await;
    let _ = last.await;
    h.stop().await;
}

async fn events_carry_the_trace_context_of_their_request(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    use tracing::Instrument;
    let span = tracing::info_span!("request");
    minqing_kit::telemetry::set_parent_from_traceparent(
        &span,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
    );
    let db = h.producer.clone();
    async move {
        let mut tx = db.begin().await.unwrap();
        feed::append(
            &mut tx,
            &EventMeta::current("test:a"),
            "x/1",
            &prost_types::Duration::default(),
            0,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(span)
    .await;
    // On PostgreSQL the feed shows an event once no older transaction (in any database of
    // the server: other tests run beside this one) can still commit before it.
    let mut events = Vec::new();
    for _ in 0..300 {
        events = feed::read_after(&h.producer, Cursor::START, 10)
            .await
            .unwrap()
            .events;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "the event readable");
    assert!(
        events[0]
            .traceparent
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{}",
        events[0].traceparent
    );
    assert_eq!(events[0].actor, "test:a");
    h.stop().await;
}

async fn many_events_append_in_order_with_multi_row_statements(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let meta = EventMeta::current("test:batch");
    let rows: Vec<_> = (0..1_234)
        .map(|i| {
            feed::EventRow::new(
                &meta,
                &format!("things/{i}"),
                &prost_types::Duration {
                    seconds: i,
                    nanos: 0,
                },
                i,
            )
        })
        .collect();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut tx = h.producer.begin().await.unwrap();
    feed::append_rows(&mut tx, rows).await.unwrap();
    feed::append_rows(&mut tx, Vec::new()).await.unwrap();
    tx.commit().await.unwrap();
    // On PostgreSQL the feed shows the events once no older transaction (in any database of
    // the server: other tests run beside this one) can still commit before them.
    let mut read = Vec::new();
    for _ in 0..300 {
        read = feed::read_after(&h.producer, Cursor::START, 5_000)
            .await
            .unwrap()
            .events;
        if !read.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ids,
        "all, in order"
    );
    assert_eq!(read[1_233].subject, "things/1233");
    h.stop().await;
}

backend_tests!(
    many_events_append_in_order_with_multi_row_statements,
    feed_never_skips_an_event_under_concurrent_writers,
    subscribe_filters_kinds_but_advances_the_cursor,
    consumer_applies_each_event_once_despite_kills_and_rivals,
    events_carry_the_trace_context_of_their_request,
);
