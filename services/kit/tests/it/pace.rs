//! A paced consumer: while events keep coming, a batch starts no sooner than the pace after
//! the previous one, so a trickle of events is applied in a few large batches; a consumer
//! that is behind is not slowed (its batches fill up and go at once).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use minqing_kit::{
    backend_tests,
    config::ServerConfig,
    db::{Backend, Db, Migrations, Tx},
    feed::{self, Apply, Consumer, ConsumerOptions, EventMeta, EventRow, FeedSource},
    testing::eventually,
};
use minqing_proto::minqing::events::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::harness::Harness;

const MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};

const PACE: Duration = Duration::from_secs(3);

/// Keeps the subjects of each batch it applies.
#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Vec<Vec<String>>>>);

impl Batches {
    fn all(&self) -> Vec<Vec<String>> {
        self.0.lock().unwrap().clone()
    }

    fn events(&self) -> usize {
        self.all().iter().map(Vec::len).sum()
    }
}

impl Apply for Batches {
    async fn apply(&self, _tx: &mut Tx, events: &[pb::Event]) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(events.iter().map(|e| e.subject.clone()).collect());
        Ok(())
    }
}

/// Appends one event for each of `subjects`, in one transaction.
async fn write(db: &Db, subjects: &[String]) {
    let meta = EventMeta::current("test:writer");
    let rows = subjects
        .iter()
        .map(|s| EventRow::new(&meta, s, &prost_types::Duration::default(), 0))
        .collect();
    let mut tx = db.begin().await.unwrap();
    feed::append_rows(&mut tx, rows).await.unwrap();
    tx.commit().await.unwrap();
}

fn start(
    db: &Db,
    producer: &Db,
    batches: &Batches,
    linger: Duration,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let mut opts = ConsumerOptions::new("paced");
    opts.pace = PACE;
    opts.max_batch = 100;
    opts.linger = linger;
    let consumer = Consumer::new(
        db.clone(),
        FeedSource::Local(producer.clone()),
        batches.clone(),
        opts,
    );
    let shutdown = CancellationToken::new();
    (tokio::spawn(consumer.run(shutdown.clone())), shutdown)
}

async fn a_paced_consumer_gathers_a_trickle_and_keeps_up_when_behind(backend: Backend) {
    let Some(h) = Harness::start(backend, ServerConfig::default()).await else {
        return;
    };
    let db = h.test_db.db("pacedconsumer", &MIGRATIONS).await;
    let batches = Batches::default();
    let (task, shutdown) = start(&db, &h.producer, &batches, Duration::from_millis(10));

    // The first event after a quiet spell is a batch of its own, at once.
    write(&h.producer, &["p/1".into()]).await;
    eventually(Duration::from_secs(30), "the first event applied", || {
        let b = batches.clone();
        async move { b.events() == 1 }
    })
    .await;
    // Three more, a tenth of a second apart and well within the pace: one batch, when the
    // pace allows it (the default linger alone would make three).
    for i in 2..=4 {
        write(&h.producer, &[format!("p/{i}")]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(Duration::from_secs(30), "the next three applied", || {
        let b = batches.clone();
        async move { b.events() == 4 }
    })
    .await;
    assert_eq!(
        batches.all(),
        vec![
            vec!["p/1".to_string()],
            vec!["p/2".into(), "p/3".into(), "p/4".into()]
        ]
    );
    shutdown.cancel();
    task.await.unwrap();

    // Behind by 1,200 events: batches of four responses (400 events) fill at once and go
    // without waiting for the pace, which would hold the last of three batches back by two
    // paces (6 s).
    let behind: Vec<String> = (0..1_200).map(|i| format!("q/{i}")).collect();
    for chunk in behind.chunks(100) {
        write(&h.producer, chunk).await;
    }
    let batches = Batches::default();
    let started = tokio::time::Instant::now();
    // A linger long enough that the first batch fills up (four reads of 100) however slow
    // the machine, so the batches are the same every run.
    let (task, shutdown) = start(&db, &h.producer, &batches, Duration::from_secs(1));
    eventually(Duration::from_secs(30), "the 1,200 applied", || {
        let b = batches.clone();
        async move { b.events() == 1_200 }
    })
    .await;
    let took = started.elapsed();
    let sizes: Vec<usize> = batches.all().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![400, 400, 400]);
    assert_eq!(batches.all().concat(), behind, "in feed order");
    assert!(
        took < PACE + PACE / 2,
        "caught up in {took:?}: a consumer that is behind is not paced"
    );
    shutdown.cancel();
    task.await.unwrap();
    h.stop().await;
}

backend_tests!(a_paced_consumer_gathers_a_trickle_and_keeps_up_when_behind);
