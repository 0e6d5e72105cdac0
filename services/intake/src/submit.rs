//! Group commit for `SubmitCase`.
//!
//! Every accepted case costs one durable commit if it is written alone; under load that commit
//! (an fsync, a round trip, a transaction's bookkeeping in the database) is most of a
//! submission's cost. Handlers therefore hand their validated case to the [`Submitter`], which
//! writes whatever has queued up meanwhile in one transaction ([`store::submit_cases`]) and
//! answers each handler once it is durable. Nothing waits on a timer: a lone request is written
//! at once, and while one batch commits the next one gathers, so batches grow with the load.
//!
//! Written here rather than taken from a crate: the batching is a dozen lines on tokio's
//! channels, and the part that matters — per-case idempotency and errors inside one batch —
//! is the store's.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::{self, Inserted, NewCase};
use minqing_kit::{
    db::{Backend, Db},
    error::StoreError,
};

/// Cases written in one transaction at most.
const MAX_BATCH: usize = 256;

/// Submissions waiting for a writer, at most (handlers wait for room beyond that).
const QUEUE: usize = 4096;

#[derive(Debug)]
struct Job {
    item: NewCase,
    reply: oneshot::Sender<Result<(NewCase, Inserted), StoreError>>,
}

/// Writes submitted cases in batches; cheap to clone.
#[derive(Debug, Clone)]
pub struct Submitter {
    queue: mpsc::Sender<Job>,
}

impl Submitter {
    /// Starts the writer task. On PostgreSQL several batches may commit at once (while one
    /// waits for its fsync the next is sent); SQLite has one writer, so one batch at a time.
    pub fn start(db: Db) -> Self {
        let writers = match db.backend() {
            Backend::Postgres => 4,
            Backend::Sqlite => 1,
        };
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(writers));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = jobs.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let db = db.clone();
                tokio::spawn(async move {
                    write(&db, batch).await;
                    drop(permit);
                });
            }
        });
        Self { queue }
    }

    /// Writes one case and its event durably, or finds the earlier case of its request id.
    /// Hands the case back with the answer.
    pub async fn submit(&self, item: NewCase) -> Result<(NewCase, Inserted), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { item, reply })
            .await
            .map_err(|_| stopped())?;
        // The writer drops a job unanswered only when the runtime is going away.
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer task has ended: the service is shutting down.
fn stopped() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// Writes a batch and answers every job. If the batch as a whole fails, each case is tried on
/// its own, so one case's problem is never another's.
async fn write(db: &Db, batch: Vec<Job>) {
    let (items, replies): (Vec<NewCase>, Vec<_>) =
        batch.into_iter().map(|j| (j.item, j.reply)).unzip();
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one");
        let answer =
            store::submit_case(db, &item.case, &item.request_hash, item.event.clone()).await;
        let _ = replies
            .into_iter()
            .next()
            .expect("one")
            .send(answer.map(|a| (item, a)));
        return;
    }
    match store::submit_cases(db, &items).await {
        Ok(answers) => {
            for ((reply, answer), item) in replies.into_iter().zip(answers).zip(items) {
                let _ = reply.send(Ok((item, answer)));
            }
        }
        Err(error) => {
            tracing::warn!(%error, cases = items.len(), "a batch of new cases failed; writing them one by one");
            for (reply, item) in replies.into_iter().zip(items) {
                let answer =
                    store::submit_case(db, &item.case, &item.request_hash, item.event.clone())
                        .await;
                let _ = reply.send(answer.map(|a| (item, a)));
            }
        }
    }
}
