//! Group commit for `SubmitCase`.
//!
//! Every accepted case costs one durable commit if it is written alone; under load that commit
//! (an fsync, a round trip, a transaction's bookkeeping in the database) is most of a
//! submission's cost. Handlers therefore hand their validated case to the [`Submitter`], which
//! writes whatever has queued up meanwhile in one transaction ([`store::submit_cases`]) and
//! answers each handler once it is durable. A request after a quiet spell is written at once;
//! while one batch commits the next one gathers, so batches grow with the load.
//!
//! Small batches are also paced: a batch that would hold fewer than [`PACED_BATCH`] cases
//! starts no sooner than [`PACE`] after the previous one began, gathering what arrives until
//! then. A commit on PostgreSQL here takes a fraction of a millisecond, so without pacing
//! batches of one case each were the rule up to well over a thousand cases a second, and each
//! paid the whole fixed cost of a statement, a commit and a connection's round trips; paced,
//! the same load is written in a few hundred batches a second. A request waits at most
//! [`PACE`] for it, and only when few others are queued with it (BENCHMARKS.md, routing end
//! to end and intake's SubmitCase).
//!
//! On PostgreSQL a batch holds a [`statement_size`] of cases (any number up to 8, else a
//! power of two), the rest of what was gathered going first in the next batch: each size is
//! then one statement text that every connection prepares once and reuses, where batches of
//! every size were each parsed and planned anew.
//!
//! Written here rather than taken from a crate: the batching is a dozen lines on tokio's
//! channels, and the part that matters — per-case idempotency and errors inside one batch —
//! is the store's.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};

use crate::store::{self, Inserted, NewCase};
use minqing_kit::{
    db::{Backend, Db, statement_size},
    error::StoreError,
};

/// Cases written in one transaction at most.
const MAX_BATCH: usize = 256;

/// The least time from the start of one batch to the start of the next, for a batch that
/// would otherwise hold fewer than [`PACED_BATCH`] cases.
const PACE: Duration = Duration::from_millis(2);

/// Batches this large go at once: the fixed cost of a batch is then small beside its cases',
/// and when requests queue up this fast the load is high enough that waiting would only add
/// latency (a client with many requests in flight waits for its answers to send more).
const PACED_BATCH: usize = 4;

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
    /// Starts the writer task. On PostgreSQL two batches may commit at once (while one waits
    /// for its fsync the next is sent; with four, batches under load were smaller and routing
    /// end to end slower, BENCHMARKS.md); SQLite has one writer, so one batch at a time.
    pub fn start(db: Db) -> Self {
        let writers = match db.backend() {
            Backend::Postgres => 2,
            Backend::Sqlite => 1,
        };
        // On PostgreSQL a batch is one statement with no transaction around it, so it is cut
        // to a statement size; on SQLite a batch is one transaction (one commit, the cost that
        // matters there) of as many statements as it needs, so it is not.
        let max_cut = match db.backend() {
            Backend::Postgres => MAX_BATCH,
            Backend::Sqlite => 0,
        };
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(writers));
            let mut last: Option<Instant> = None;
            // Cases held back from the last batch, which go first in the next.
            let mut carry: Vec<Job> = Vec::new();
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let Some(batch) = next_batch(&mut carry, &mut jobs, last, MAX_BATCH, max_cut).await
                else {
                    return;
                };
                last = Some(Instant::now());
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

/// `first` and what else is queued, up to `max`; while that is fewer than `enough`, also what
/// arrives until `until` (if it is still to come).
async fn gather<T>(
    first: T,
    jobs: &mut mpsc::Receiver<T>,
    until: Option<Instant>,
    enough: usize,
    max: usize,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        let next = match until {
            Some(until) if batch.len() < enough => {
                tokio::time::timeout_at(until, jobs.recv()).await
            }
            _ => Ok(jobs.try_recv().ok()),
        };
        match next {
            Ok(Some(job)) => batch.push(job),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// The next batch of at most `max`: the cases held back from the last one (`carry`) with
/// whatever has queued since, or else a fresh [`gather`] paced after the batch that began at
/// `last`. A batch of up to `max_cut` cases is cut to a [`statement_size`], so that it is
/// written with one statement the connection has prepared before, the rest held back in
/// `carry` to go first next time. `None` once the queue has closed and nothing is held back.
async fn next_batch<T>(
    carry: &mut Vec<T>,
    jobs: &mut mpsc::Receiver<T>,
    last: Option<Instant>,
    max: usize,
    max_cut: usize,
) -> Option<Vec<T>> {
    let mut batch = if carry.is_empty() {
        let first = jobs.recv().await?;
        gather(first, jobs, last.map(|l| l + PACE), PACED_BATCH, max).await
    } else {
        let mut batch = std::mem::take(carry);
        while batch.len() < max
            && let Ok(job) = jobs.try_recv()
        {
            batch.push(job);
        }
        batch
    };
    if batch.len() <= max_cut {
        *carry = batch.split_off(statement_size(batch.len()));
    }
    Some(batch)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{sync::mpsc, time::Instant};

    use super::{gather, next_batch};

    /// After a quiet spell a request goes at once with whatever is queued; within the pace, a
    /// small batch gathers what arrives until the pace allows the next batch; a batch that is
    /// large enough goes at once; a batch is never larger than its limit.
    #[tokio::test(start_paused = true)]
    async fn small_batches_gather_until_the_pace_allows_the_next() {
        let (send, mut jobs) = mpsc::channel(16);
        send.send(2).await.unwrap();
        assert_eq!(gather(1, &mut jobs, None, 4, 8).await, vec![1, 2]);

        let late = send.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(4).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            late.send(5).await.unwrap();
        });
        let started = Instant::now();
        let until = started + Duration::from_millis(2);
        assert_eq!(gather(3, &mut jobs, Some(until), 4, 8).await, vec![3, 4]);
        assert_eq!(Instant::now(), until, "waited for the pace, no longer");
        assert_eq!(jobs.recv().await, Some(5), "the next batch's");

        // A pace already past waits for nothing.
        send.send(7).await.unwrap();
        let past = Instant::now() - Duration::from_millis(5);
        let before = Instant::now();
        assert_eq!(gather(6, &mut jobs, Some(past), 4, 8).await, vec![6, 7]);
        assert_eq!(Instant::now(), before);

        // Enough queued: at once, with all that is queued, up to the limit.
        for i in 0..5 {
            send.send(10 + i).await.unwrap();
        }
        let until = Instant::now() + Duration::from_millis(2);
        let before = Instant::now();
        assert_eq!(
            gather(9, &mut jobs, Some(until), 4, 5).await,
            vec![9, 10, 11, 12, 13]
        );
        assert_eq!(Instant::now(), before, "a large enough batch does not wait");
        assert_eq!(jobs.recv().await, Some(14));
    }

    async fn queue(send: &mpsc::Sender<i32>, items: std::ops::Range<i32>) {
        for i in items {
            send.send(i).await.unwrap();
        }
    }

    /// A batch holds up to 8 cases as they come, else a power of two of them; the rest go
    /// first in the next batch, with what queued meanwhile; nothing held back is lost when
    /// the queue closes.
    #[tokio::test(start_paused = true)]
    async fn batches_are_cut_to_statement_sizes_and_the_rest_goes_next() {
        let (send, mut jobs) = mpsc::channel(64);
        let mut carry = Vec::new();
        queue(&send, 0..13).await;
        let first = next_batch(&mut carry, &mut jobs, None, 256, 256)
            .await
            .unwrap();
        assert_eq!(first, (0..8).collect::<Vec<_>>(), "13 gathered, 8 written");
        assert_eq!(carry, (8..13).collect::<Vec<_>>());

        queue(&send, 13..15).await;
        // Held back first, then what queued since; 7 is a statement size of its own.
        let before = Instant::now();
        let second = next_batch(&mut carry, &mut jobs, Some(before), 256, 256)
            .await
            .unwrap();
        assert_eq!(second, (8..15).collect::<Vec<_>>());
        assert!(carry.is_empty());
        assert_eq!(
            Instant::now(),
            before,
            "held-back cases do not wait for the pace"
        );

        // 40 queued with a limit of 32: 32 written, none held back beyond the queue's own.
        queue(&send, 100..140).await;
        let third = next_batch(&mut carry, &mut jobs, None, 32, 32)
            .await
            .unwrap();
        assert_eq!(third.len(), 32);
        assert!(carry.is_empty());
        // 8 left queued, then 3 more: 11 gathered, 8 written, 3 held back.
        queue(&send, 140..143).await;
        let fourth = next_batch(&mut carry, &mut jobs, None, 32, 32)
            .await
            .unwrap();
        assert_eq!(fourth, (132..140).collect::<Vec<_>>());
        assert_eq!(carry, vec![140, 141, 142]);

        // The queue closes: what is held back is still written, then the writer stops.
        drop(send);
        let last = next_batch(&mut carry, &mut jobs, None, 32, 32)
            .await
            .unwrap();
        assert_eq!(last, vec![140, 141, 142]);
        assert!(
            next_batch(&mut carry, &mut jobs, None, 32, 32)
                .await
                .is_none()
        );

        // Not cut (SQLite: a batch is one transaction of as many statements as it needs).
        let (send, mut jobs) = mpsc::channel(64);
        queue(&send, 0..13).await;
        let whole = next_batch(&mut carry, &mut jobs, None, 256, 0)
            .await
            .unwrap();
        assert_eq!(whole, (0..13).collect::<Vec<_>>());
        assert!(carry.is_empty());
    }
}
