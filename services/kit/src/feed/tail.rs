//! The shared tail of a feed: one reader per [`Db`] in a process follows the feed's end and
//! hands each new batch to every live subscriber, instead of each subscriber reading the
//! database on every commit. A subscriber that is behind (replaying, slow, lagged) reads the
//! database itself ([`super::read_kinds_after`]) until it has caught up, then takes the
//! shared batches again.
//!
//! A batch carries the cursor it was read after (`from`) and the cursor after its last event
//! (`to`); consecutive batches join up (`to` of one is `from` of the next). Every event up to
//! `to` was below the horizon when it was read, so the events between `from` and `to` are
//! all there ever will be: a subscriber at a cursor `c` with `from <= c` may take the
//! batch's events after `c` and move to `to` without skipping anything; with `c < from` it
//! reads the database instead.
//!
//! Subscribers that pass the same lanes ([`Pass`]: the lanes none of whose kinds they want)
//! share one reader; there is one for each such set in use (most often two: the readers of
//! every kind, which pass none, and those of a few kinds, which pass the lanes of the others).
//! A batch read passing a lane may leave events of that lane's behind it, so a subscriber only
//! ever takes the batches of the reader of its own set.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{sync::broadcast, task::JoinHandle};

use super::{
    horizon::Pass,
    store::{Cursor, StoredEvent, latest_cursor, read_after_passing},
};
use crate::db::Db;

/// Batches kept for subscribers that have not taken them yet; one further behind is lagged
/// and reads the database to catch up.
const CAPACITY: usize = 64;
/// The most events the tail reads at once.
const TAIL_BATCH: i64 = 1000;
/// When no commit signal arrives, look anyway this often (covers a lost notification).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// When committed events wait behind an older, still-running transaction, look again after
/// this at the latest.
const HELD_BACK_RETRY: Duration = Duration::from_millis(5);
/// After a failed read, wait this long before the next.
const ERROR_RETRY: Duration = Duration::from_secs(1);

/// Events read from the feed's end, in feed order.
#[derive(Debug)]
pub(crate) struct TailBatch {
    /// The cursor they were read after.
    pub from: Cursor,
    /// The cursor after the last of them.
    pub to: Cursor,
    /// The events (at least one).
    pub events: Vec<StoredEvent>,
}

/// Where a [`Db`] keeps its running tail readers, one for each set of lanes passed.
#[derive(Debug, Default)]
pub(crate) struct TailSlot(Mutex<HashMap<Pass, Running>>);

#[derive(Debug)]
struct Running {
    generation: u64,
    sender: broadcast::Sender<Arc<TailBatch>>,
    task: JoinHandle<()>,
}

/// A receiver of the tail batches of `db` read passing the lanes of `pass`, from now on,
/// starting that reader if none runs.
pub(crate) fn subscribe(db: &Db, pass: &Pass) -> broadcast::Receiver<Arc<TailBatch>> {
    let mut slot = db
        .tail_slot()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let running = slot.get(pass);
    if let Some(running) = running
        && !running.task.is_finished()
    {
        return running.sender.subscribe();
    }
    let generation = running.map_or(0, |r| r.generation.wrapping_add(1));
    let (sender, receiver) = broadcast::channel(CAPACITY);
    let task = tokio::spawn(run(db.clone(), sender.clone(), generation, pass.clone()));
    slot.insert(
        pass.clone(),
        Running {
            generation,
            sender,
            task,
        },
    );
    receiver
}

/// Whether the reader of `generation` should stop: no subscriber is left. Decided under the
/// slot's lock, so a subscriber either joins before (and the reader goes on) or finds the
/// slot empty (and starts another).
fn retire(
    db: &Db,
    sender: &broadcast::Sender<Arc<TailBatch>>,
    generation: u64,
    pass: &Pass,
) -> bool {
    let mut slot = db
        .tail_slot()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if sender.receiver_count() > 0 {
        return false;
    }
    if slot.get(pass).is_some_and(|r| r.generation == generation) {
        slot.remove(pass);
    }
    true
}

async fn run(db: Db, sender: broadcast::Sender<Arc<TailBatch>>, generation: u64, pass: Pass) {
    let mut commits = db.commits();
    let mut cursor = loop {
        match latest_cursor(&db).await {
            Ok(cursor) => break cursor,
            Err(err) => {
                tracing::warn!(error = %err, feed = %db.name(), "the feed's tail cannot find the feed's end; retrying");
                if retire(&db, &sender, generation, &pass) {
                    return;
                }
                tokio::time::sleep(ERROR_RETRY).await;
            }
        }
    };
    // Since when committed events have waited behind a transaction still running (logged at
    // debug when they come through: how long a writer of this feed held its readers back).
    let mut held_since: Option<Instant> = None;
    loop {
        if retire(&db, &sender, generation, &pass) {
            return;
        }
        // Mark the signal seen *before* reading, so a commit during the read is not missed.
        commits.borrow_and_update();
        let batch = match read_after_passing(&db, cursor, TAIL_BATCH, &pass).await {
            Ok(batch) => batch,
            Err(err) => {
                // Subscribers read for themselves meanwhile (they look now and then).
                tracing::warn!(error = %err, feed = %db.name(), "the feed's tail cannot be read; retrying");
                tokio::time::sleep(ERROR_RETRY).await;
                continue;
            }
        };
        let held_back = batch.held_back;
        match (held_back, held_since) {
            (true, None) => held_since = Some(Instant::now()),
            (false, Some(since)) => {
                tracing::debug!(
                    feed = %db.name(),
                    lanes_passed = !pass.is_empty(),
                    held_us = since.elapsed().as_micros() as u64,
                    "committed events came through after waiting behind a running transaction"
                );
                held_since = None;
            }
            _ => {}
        }
        if let Some(last) = batch.events.last() {
            let full = batch.events.len() as i64 >= TAIL_BATCH;
            let to = last.cursor;
            // No receiver now is not an error: the next turn retires the reader.
            let _ = sender.send(Arc::new(TailBatch {
                from: cursor,
                to,
                events: batch.events,
            }));
            cursor = to;
            if full {
                continue;
            }
        }
        let wait = if held_back {
            HELD_BACK_RETRY
        } else {
            FALLBACK_POLL
        };
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {},
        }
    }
}
