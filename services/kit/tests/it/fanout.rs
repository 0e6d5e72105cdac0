//! The feed's shared tail: one reader per database hands each new batch to every live
//! subscriber; subscribers that are behind read the database themselves (kinds filtered
//! there) and join again. No event skipped or repeated, whatever each subscriber asks for.

use std::time::Duration;

use minqing_kit::{
    backend_tests,
    config::ServerConfig,
    db::{Backend, Db},
    feed::{self, Cursor, EventMeta},
};
use minqing_proto::minqing::events::v1 as pb;
use prost::Name;
use rand::Rng;
use tonic::Streaming;

use crate::harness::Harness;

const DURATION: &str = "google.protobuf.Duration";
const TIMESTAMP: &str = "google.protobuf.Timestamp";
const EMPTY: &str = "google.protobuf.Empty";

/// Writes one event of kind `k % 3` in its own transaction, held open a random moment so
/// that commits land out of sequence order.
async fn write(db: &Db, k: usize, jitter_ms: u64) {
    write_padded(db, k, jitter_ms, 0).await
}

/// [`write`], with `pad` more bytes in the subject.
async fn write_padded(db: &Db, k: usize, jitter_ms: u64, pad: usize) {
    let mut tx = db.begin().await.unwrap();
    let meta = EventMeta::current("test:writer");
    let subject = format!("things/{k}/{}", "x".repeat(pad));
    match k % 3 {
        0 => {
            feed::append(
                &mut tx,
                &meta,
                &subject,
                &prost_types::Duration::default(),
                0,
            )
            .await
        }
        1 => {
            feed::append(
                &mut tx,
                &meta,
                &subject,
                &prost_types::Timestamp::default(),
                0,
            )
            .await
        }
        _ => feed::append(&mut tx, &meta, &subject, &(), 0).await,
    }
    .unwrap();
    if jitter_ms > 0 {
        let ms = rand::rng().random_range(0..=jitter_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    tx.commit().await.unwrap();
}

/// Reads `stream` until its cursor reaches `end`, checking that cursors only move forward
/// and that every event is of `kinds`; the events' ids, in order.
async fn collect_until(
    stream: &mut Streaming<pb::SubscribeResponse>,
    kinds: &[&str],
    max_batch: usize,
    end: Cursor,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = Cursor::START;
    let read = async {
        while cursor < end {
            let batch = stream.message().await.unwrap().expect("stream stays open");
            assert!(
                batch.events.len() <= max_batch,
                "at most max_batch a response"
            );
            for e in &batch.events {
                assert!(
                    kinds.is_empty() || kinds.contains(&e.kind.as_str()),
                    "{}",
                    e.kind
                );
                let at = Cursor::parse(&e.cursor).unwrap();
                assert!(at > cursor, "cursors only move forward");
                cursor = at;
                ids.push(e.id.clone());
            }
            let next = Cursor::parse(&batch.cursor).unwrap();
            assert!(
                next >= cursor,
                "the batch's cursor is at or after its events"
            );
            cursor = next;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("every event arrives");
    ids
}

/// Every event, once none is held back (on a shared PostgreSQL another test's transaction may
/// hold the horizon for a moment).
async fn settled(db: &Db) -> Vec<feed::StoredEvent> {
    let read = async {
        loop {
            let batch = feed::read_after(db, Cursor::START, 100_000).await.unwrap();
            if !batch.held_back {
                return batch.events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the horizon moves on")
}

/// The cursor after the last event, once none is held back.
async fn settled_end(db: &Db) -> Cursor {
    settled(db).await.last().map_or(Cursor::START, |e| e.cursor)
}

/// [`feed::read_kinds_after`], again until nothing is held back.
async fn read_kinds_settled(
    db: &Db,
    after: Cursor,
    kinds: &[String],
    limit: i64,
) -> (feed::Batch, Cursor) {
    loop {
        let (batch, next) = feed::read_kinds_after(db, after, kinds, limit)
            .await
            .unwrap();
        if !batch.held_back {
            return (batch, next);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn expected(db: &Db, kinds: &[&str]) -> Vec<String> {
    settled(db)
        .await
        .into_iter()
        .filter(|e| kinds.is_empty() || kinds.contains(&e.kind.as_str()))
        .map(|e| e.id)
        .collect()
}

async fn many_subscribers_get_exactly_their_kinds_in_order(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    assert_eq!(<() as Name>::full_name(), EMPTY);
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    let wants: [&[&str]; 5] = [
        &[],
        &[DURATION],
        &[TIMESTAMP],
        &[DURATION, EMPTY],
        &["nothing.at.All"],
    ];
    // Some follow from the start before anything is written…
    let mut early = Vec::new();
    for (i, kinds) in wants.iter().enumerate() {
        early.push((kinds, h.subscribe(&token, "", kinds, 7 + i as i32).await));
    }
    const WRITERS: usize = 8;
    const EACH: usize = 30;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = h.producer.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                write(&db, w * EACH + i, 4).await;
            }
        }));
    }
    // …others join from the start while the writers are busy: they replay, then follow.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut late = Vec::new();
    for kinds in wants {
        late.push((kinds, h.subscribe(&token, "", kinds, 1000).await));
    }
    for w in writers {
        w.await.unwrap();
    }
    let end = settled_end(&h.producer).await;
    assert_eq!(expected(&h.producer, &[]).await.len(), WRITERS * EACH);
    for (i, (kinds, mut stream)) in early.into_iter().enumerate() {
        let got = collect_until(&mut stream, kinds, 7 + i, end).await;
        assert_eq!(got, expected(&h.producer, kinds).await, "early {kinds:?}");
    }
    for (kinds, mut stream) in late {
        let got = collect_until(&mut stream, kinds, 1000, end).await;
        assert_eq!(got, expected(&h.producer, kinds).await, "late {kinds:?}");
    }
    h.stop().await;
}

async fn a_lagged_subscriber_still_gets_every_event_once(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    write(&h.producer, 0, 0).await;
    // A subscriber that reads one response, then nothing while hundreds of commits go by:
    // its stream's buffers fill (the events are large) and far more batches go by than the
    // shared tail keeps for it.
    let mut slow = h.subscribe(&token, "", &[], 3).await;
    let first = slow.message().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 1);
    // One that keeps up all along (batches of 100 stay under the message size limit).
    let mut quick = h.subscribe(&token, "", &[], 100).await;
    let db = h.producer.clone();
    let writing = tokio::spawn(async move {
        for k in 1..400 {
            write_padded(&db, k, 0, 16 * 1024).await;
        }
    });
    let all = expected_after_writes(&h, writing).await;
    let end = settled_end(&h.producer).await;
    let quick_got = collect_until(&mut quick, &[], 100, end).await;
    assert_eq!(quick_got, all);
    let mut slow_got = vec![first.events[0].id.clone()];
    slow_got.extend(collect_until(&mut slow, &[], 3, end).await);
    assert_eq!(slow_got, all, "every event once, in order");
    h.stop().await;
}

async fn expected_after_writes(h: &Harness, writing: tokio::task::JoinHandle<()>) -> Vec<String> {
    writing.await.unwrap();
    expected(&h.producer, &[]).await
}

async fn kinds_filtered_in_sql_still_advance_the_cursor(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let (_, token) = h.tokens.issue_service_token("test").await.unwrap();
    write(&h.producer, 1, 0).await; // a Timestamp
    for k in 0..50 {
        write(&h.producer, k * 3, 0).await; // Durations
    }
    let end = settled_end(&h.producer).await;
    let wanted = [TIMESTAMP.to_string()];

    // Read directly: the one wanted event, and a cursor past the unwanted ones after it.
    let (batch, next) = read_kinds_settled(&h.producer, Cursor::START, &wanted, 10).await;
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kind, TIMESTAMP);
    assert_eq!(next, end, "moved past the Durations");
    // A full batch stops at its last event: what follows is not known to be unwanted.
    let (batch, next) = read_kinds_settled(&h.producer, Cursor::START, &wanted, 1).await;
    assert_eq!(next, batch.events[0].cursor);
    // Nothing wanted at all: no events, and the cursor at the end.
    let (batch, next) =
        read_kinds_settled(&h.producer, Cursor::START, &["none".to_string()], 10).await;
    assert!(batch.events.is_empty());
    assert_eq!(next, end);
    // Every kind: the same as read_after.
    let (batch, next) = read_kinds_settled(&h.producer, Cursor::START, &[], 20).await;
    assert_eq!(batch.events.len(), 20);
    assert_eq!(next, batch.events[19].cursor);

    // Over the wire: replayed to the end with the one wanted event, then live batches of
    // nothing wanted still move the cursor.
    let mut stream = h.subscribe(&token, "", &[TIMESTAMP], 0).await;
    let got = collect_until(&mut stream, &[TIMESTAMP], 256, end).await;
    assert_eq!(got.len(), 1);
    write(&h.producer, 3, 0).await; // a Duration
    let end = settled_end(&h.producer).await;
    let got = collect_until(&mut stream, &[TIMESTAMP], 256, end).await;
    assert!(got.is_empty(), "{got:?}");
    h.stop().await;
}

backend_tests!(
    many_subscribers_get_exactly_their_kinds_in_order,
    a_lagged_subscriber_still_gets_every_event_once,
    kinds_filtered_in_sql_still_advance_the_cursor,
);
