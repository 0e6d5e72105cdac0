//! The timer worker: fires each due warning and escalation once.
//!
//! The due-time index is the `timers` table; this queue is its in-memory copy (a binary heap
//! of `(fire_time, id)`, 16 bytes a timer), rebuilt from the table at start, so nothing is
//! lost across restarts. Writers push a timer as they schedule it, before their transaction
//! commits: a timer popped before its row is visible is tried again a little later, and a
//! sweep of the table every few seconds catches anything the queue missed. Firing marks the
//! row fired in the transaction that writes the clock's change and its event, so a timer
//! fires exactly once however many copies of it the queue held.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use prost::Name;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    app::Ctx,
    clock::{State, TimerKind},
    error::Error,
    flow::{self, Pending},
    store,
};
use minqing_kit::{feed::EventMeta, time::Micros};
use minqing_proto::minqing::supervision::v1 as pb;

const ACTOR: &str = "system:supervision-timers";
/// Timers fired in one transaction at most. A batch costs a few multi-row statements (about
/// 50 µs a timer) and one commit, whose sync to disk (~100 ms on a busy disk) dominates small
/// batches: a burst of 5,000 due at one instant is fired in one or two commits, not twenty.
const BATCH: usize = 5_000;
/// How often the table is swept for timers the queue missed.
const SWEEP: Duration = Duration::from_secs(5);
/// How many times a timer whose row is not visible yet is tried again (every tick).
const INVISIBLE_RETRIES: u32 = 40;

/// The in-memory due-time queue.
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: Mutex<BinaryHeap<Reverse<(Micros, i64)>>>,
    wake: Notify,
}

impl TimerQueue {
    /// Adds timers; wakes the worker.
    pub fn push(&self, timers: impl IntoIterator<Item = (Micros, i64)>) {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        heap.extend(timers.into_iter().map(Reverse));
        drop(heap);
        self.wake.notify_one();
    }

    /// Timers queued (copies included).
    pub fn len(&self) -> usize {
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` timers due at `now`, soonest first.
    fn pop_due(&self, now: Micros, max: usize) -> Vec<(Micros, i64)> {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        while out.len() < max {
            match heap.peek() {
                Some(Reverse((t, _))) if *t <= now => {
                    if let Some(Reverse(x)) = heap.pop() {
                        out.push(x);
                    }
                }
                _ => break,
            }
        }
        out
    }

    fn next(&self) -> Option<Micros> {
        let heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        heap.peek().map(|Reverse((t, _))| *t)
    }
}

/// Loads every unfired timer into the queue.
pub async fn load(ctx: &Ctx) -> Result<usize, Error> {
    let all = store::clocks::all_unfired(&ctx.db).await?;
    let n = all.len();
    ctx.timers.push(all);
    Ok(n)
}

/// Runs until `shutdown`: fires what is due, sleeps until the next timer or a tick.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let tick = Duration::from_millis(ctx.config.timer_tick_ms);
    let mut invisible: HashMap<i64, u32> = HashMap::new();
    // Timers whose rows were not visible yet, to try again a tick later (in real time: the
    // writer's transaction commits in real time, whatever the service's clock says).
    let mut deferred: Vec<(tokio::time::Instant, (Micros, i64))> = Vec::new();
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let instant = tokio::time::Instant::now();
        let (ready, later): (Vec<_>, Vec<_>) =
            deferred.drain(..).partition(|(at, _)| *at <= instant);
        deferred = later;
        if !ready.is_empty() {
            ctx.timers.push(ready.into_iter().map(|(_, t)| t));
        }
        let now = ctx.clock.now_micros();
        let due = ctx.timers.pop_due(now, BATCH);
        if !due.is_empty() {
            match fire_batch(&ctx, &due).await {
                Ok(missing) => {
                    if !invisible.is_empty() {
                        for (_, id) in &due {
                            if !missing.iter().any(|(_, m)| m == id) {
                                invisible.remove(id);
                            }
                        }
                    }
                    for (fire, id) in missing {
                        let tries = invisible.entry(id).or_insert(0);
                        *tries += 1;
                        if *tries <= INVISIBLE_RETRIES {
                            deferred.push((tokio::time::Instant::now() + tick, (fire, id)));
                        } else {
                            invisible.remove(&id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "firing timers failed; trying again");
                    ctx.timers.push(due);
                    tokio::select! {
                        () = tokio::time::sleep(tick) => {},
                        () = shutdown.cancelled() => return,
                    }
                }
            }
            continue;
        }
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = tokio::time::Instant::now();
            match store::clocks::due_timers(ctx.db.pool(), now, 10_000).await {
                Ok(missed) if !missed.is_empty() => {
                    ctx.timers.push(missed);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping the timers failed"),
            }
        }
        // A system clock can be slept on; a manual one is only seen at each tick.
        let wait = match (ctx.timers.next(), &ctx.clock) {
            (Some(t), minqing_kit::time::Clock::System) => {
                Duration::from_micros(u64::try_from(t - now).unwrap_or(0)).min(tick)
            }
            _ => tick,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            () = ctx.timers.wake.notified() => {},
            () = shutdown.cancelled() => return,
        }
    }
}

/// Fires `due` in one transaction; returns the timers whose rows were not found unfired (not
/// committed yet, replaced, moved later, or fired already). A few multi-row statements for the
/// whole batch, whatever its size: the timers marked (`UPDATE … RETURNING`), the clocks read,
/// the changed clocks written, the timers they no longer need deleted and their next ones
/// inserted, the events appended. Each phase's time is logged (debug) to see where a burst's
/// time goes.
async fn fire_batch(ctx: &Ctx, due: &[(Micros, i64)]) -> Result<Vec<(Micros, i64)>, Error> {
    let started = std::time::Instant::now();
    let now = ctx.clock.now_micros();
    let meta = EventMeta::current(ACTOR);
    let mut tx = ctx.db.begin().await?;
    let mut out = Pending::default();
    let ids: Vec<i64> = due.iter().map(|(_, id)| *id).collect();
    // On PostgreSQL the clocks are locked first, in case order, as the feed consumers lock
    // them before touching their timers: marking the timers first (locking their rows) and
    // then waiting for a clock a consumer holds while it waits to replace those timers would
    // be a deadlock.
    let mut locked: HashMap<String, crate::clock::Clock> = HashMap::new();
    if tx.backend() == minqing_kit::db::Backend::Postgres {
        let cases = store::clocks::cases_of_unfired(&mut tx, &ids).await?;
        for c in store::clocks::lock_many(&mut tx, &cases).await? {
            locked.insert(c.case_id.clone(), c);
        }
    }
    let fired = store::clocks::fire_timers(&mut tx, &ids, now).await?;
    let marked = started.elapsed();
    let found: std::collections::HashSet<i64> = fired.iter().map(|t| t.id).collect();
    let missing: Vec<(Micros, i64)> = due
        .iter()
        .filter(|(_, id)| !found.contains(id))
        .copied()
        .collect();
    let mut cases: Vec<String> = fired.iter().map(|t| t.case_id.clone()).collect();
    cases.sort_unstable();
    cases.dedup();
    // Clocks of timers that became visible after the lock was taken are read unlocked (their
    // write still checks the version).
    cases.retain(|c| !locked.contains_key(c));
    let mut clocks: HashMap<String, (crate::clock::Clock, crate::clock::Clock)> =
        store::clocks::get_many(&mut tx, &cases)
            .await?
            .into_iter()
            .chain(locked.into_values())
            .map(|c| (c.case_id.clone(), (c.clone(), c)))
            .collect();
    let read = started.elapsed();
    let mut fired = fired;
    fired.sort_by_key(|t| (t.fire, t.step));
    for timer in &fired {
        let Some((_, clock)) = clocks.get_mut(&timer.case_id) else {
            continue;
        };
        fire_one(ctx, clock, timer, now, &meta, &mut out);
    }
    let mut changed = Vec::new();
    let mut dropped = Vec::new();
    let mut added = Vec::new();
    for (before, mut clock) in clocks.into_values() {
        if clock == before {
            continue;
        }
        clock.update_time = now;
        let cal = ctx
            .calendars
            .for_district(&clock.place.district, &ctx.config.default_city);
        let old = crate::clock::timers(&before, &cal.calendar, &ctx.policy);
        let new = crate::clock::timers(&clock, &cal.calendar, &ctx.policy);
        dropped.extend(
            old.iter()
                .filter(|t| !new.iter().any(|n| n.id == t.id))
                .map(|t| t.id),
        );
        added.extend(
            new.into_iter()
                .filter(|t| !old.iter().any(|o| o.id == t.id)),
        );
        changed.push(clock);
    }
    let applied = started.elapsed();
    if store::clocks::save_fired(&mut tx, &mut changed).await? != changed.len() as u64 {
        return Err(Error::Conflict);
    }
    store::clocks::delete_unfired(&mut tx, &dropped).await?;
    store::clocks::insert_timers(&mut tx, &added).await?;
    out.hints.extend(added.iter().map(|t| (t.fire, t.id)));
    let events = out.rows.len();
    flow::finish(&mut tx, &mut out).await?;
    let written = started.elapsed();
    tx.commit().await?;
    ctx.timers.push(out.hints);
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    tracing::debug!(
        due = due.len(),
        fired = fired.len(),
        clocks = changed.len(),
        events,
        mark_ms = ms(marked),
        read_ms = ms(read - marked),
        apply_ms = ms(applied - read),
        write_ms = ms(written - applied),
        commit_ms = ms(started.elapsed() - written),
        "fired a batch of timers"
    );
    Ok(missing)
}

/// What one timer does to its clock, with its event; nothing when the clock moved on since
/// the timer was set.
fn fire_one(
    ctx: &Ctx,
    clock: &mut crate::clock::Clock,
    timer: &crate::clock::Timer,
    now: Micros,
    meta: &EventMeta,
    out: &mut Pending,
) {
    let snapshot = |c: &crate::clock::Clock| Some(crate::grpc::convert::clock(c, false));
    match timer.kind {
        TimerKind::Warning if clock.state == State::Running && !clock.warned => {
            let Some(due_time) = clock.due else { return };
            clock.warned = true;
            let left = if clock.limit_minutes > 0 {
                (due_time - now).max(0) / 60_000_000
            } else {
                let cal = ctx
                    .calendars
                    .for_district(&clock.place.district, &ctx.config.default_city);
                cal.calendar.working_minutes(now, due_time)
            };
            clock.note(
                now,
                &pb::DeadlineWarning::full_name(),
                format!("deadline near: {left} minutes left; the unit is warned"),
            );
            let e = pb::DeadlineWarning {
                clock: snapshot(clock),
                due_time: Some(minqing_kit::time::to_timestamp(due_time)),
                minutes_left: left,
            };
            flow::event(out, meta, clock, &e, now);
        }
        TimerKind::Escalation
            if matches!(clock.state, State::Running | State::Overdue)
                && clock.escalations == timer.step - 1 =>
        {
            clock.state = State::Overdue;
            clock.escalations = timer.step;
            let level = clock.escalation_level(timer.step);
            let to_place = clock.place.at(level);
            clock.note(
                now,
                &pb::OverdueEscalated::full_name(),
                format!(
                    "overdue: escalation {} to the {} {to_place}",
                    timer.step,
                    flow::level_name(level)
                ),
            );
            let e = pb::OverdueEscalated {
                clock: snapshot(clock),
                escalation: timer.step,
                to_level: level,
                to_place,
                due_time: clock.due.map(minqing_kit::time::to_timestamp),
            };
            flow::event(out, meta, clock, &e, now);
        }
        TimerKind::AcceptanceWarning if clock.acceptance_pending() => {
            let Some(a) = clock.acceptance.as_mut() else {
                return;
            };
            a.warned = true;
            let window = crate::grpc::convert::acceptance(a);
            clock.note(
                now,
                &pb::AcceptanceWarning::full_name(),
                format!("{} has not accepted yet; its window is ending", window.unit),
            );
            let e = pb::AcceptanceWarning {
                clock: snapshot(clock),
                acceptance: Some(window),
            };
            flow::event(out, meta, clock, &e, now);
        }
        TimerKind::AcceptanceOverdue if clock.acceptance_pending() => {
            flow::acceptance_overdue(clock, meta, out, now);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use chrono::TimeZone;
    use prost::Name;
    use tokio_util::sync::CancellationToken;

    use crate::{
        clock::Clock,
        config::SupervisionConfig,
        flow::{self, Pending},
        outlets::{LogOutlet, Outlets},
    };
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        testing::{TestDatabase, eventually},
        time,
    };
    use minqing_proto::minqing::supervision::v1 as pb;

    async fn ctx(db: &Db, clock: &time::Clock) -> Arc<crate::app::Ctx> {
        let config = SupervisionConfig {
            timer_tick_ms: 10,
            ..Default::default()
        };
        crate::context(
            db.clone(),
            config,
            clock.clone(),
            Outlets::all(Arc::new(LogOutlet)),
        )
        .await
        .unwrap()
    }

    async fn count<M: Name>(db: &Db) -> i64 {
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE kind = $1")
            .bind(M::full_name())
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    /// Runs the worker until `n` events of kind `M` exist.
    async fn fire_until<M: Name>(ctx: &Arc<crate::app::Ctx>, n: i64) {
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(super::run(ctx.clone(), shutdown.clone()));
        eventually(Duration::from_secs(10), "the timer to fire", || async {
            count::<M>(&ctx.db).await >= n
        })
        .await;
        // A few more ticks: nothing else may fire.
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        worker.await.unwrap();
    }

    async fn timers_survive_restarts_and_fire_exactly_once(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let start = chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&chrono::Utc);
        let clock = time::Clock::manual(start);
        let first = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let cal = first.calendars.for_district("620102", "6201");
        let mut c = Clock::new("case-1", now);
        c.place.district = "620102".into();
        c.place.street = "620102001".into();
        c.place.community = "620102001001".into();
        c.place.grid = "620102001001-g01".into();
        c.unit_level = 4;
        c.run_days(&cal.calendar, now, 3);
        let mut tx = db.begin().await.unwrap();
        flow::save(&first, &mut tx, &mut c, &mut Pending::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(first);

        // A restart: the queue is rebuilt from the table (the warning and the escalation).
        let second = ctx(&db, &clock).await;
        assert_eq!(super::load(&second).await.unwrap(), 2);
        clock.set(start + chrono::Duration::days(3) + chrono::Duration::hours(4));
        fire_until::<pb::DeadlineWarning>(&second, 1).await;
        // The worker's queue still held both copies' worth of loads: push the warning again.
        second
            .timers
            .push(super::store::clocks::all_unfired(&db).await.unwrap());
        drop(second);

        // Another restart: the fired warning is not loaded again; the escalation is, and fires.
        let third = ctx(&db, &clock).await;
        assert_eq!(super::load(&third).await.unwrap(), 1);
        clock.advance(chrono::Duration::hours(4));
        fire_until::<pb::OverdueEscalated>(&third, 1).await;
        assert_eq!(count::<pb::DeadlineWarning>(&db).await, 1);
        assert_eq!(count::<pb::OverdueEscalated>(&db).await, 1);
        let fired = super::store::clocks::get(db.pool(), "case-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fired.escalations, 1);
        db.close().await;
    }

    async fn bulk_loaded_clocks_are_queued(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(chrono::Utc::now());
        let ctx = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let cal = ctx.calendars.for_district("620102", "6201");
        let clocks: Vec<Clock> = (0..3)
            .map(|i| {
                let mut c = Clock::new(&format!("bulk-{i}"), now);
                c.place.district = "620102".into();
                c.run_days(&cal.calendar, now, 3);
                c
            })
            .collect();
        let timers: Vec<crate::clock::Timer> = clocks
            .iter()
            .flat_map(|c| crate::clock::timers(c, &cal.calendar, &ctx.policy))
            .collect();
        let mut tx = db.begin().await.unwrap();
        super::store::clocks::insert_clocks(&mut tx, &clocks)
            .await
            .unwrap();
        super::store::clocks::insert_timers(&mut tx, &timers)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(super::load(&ctx).await.unwrap(), 6);
        let stored = super::store::clocks::get(db.pool(), "bulk-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.due, clocks[1].due);
        assert_eq!(stored.version, 1);
        db.close().await;
    }

    async fn a_timer_moved_later_does_not_fire_from_an_old_copy_in_the_queue(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let start = chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&chrono::Utc);
        let clock = time::Clock::manual(start);
        let ctx = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let cal = ctx.calendars.for_district("620102", "6201");
        let mut c = Clock::new("case-1", now);
        c.place.district = "620102".into();
        c.run_days(&cal.calendar, now, 3);
        let mut tx = db.begin().await.unwrap();
        let mut out = Pending::default();
        flow::save(&ctx, &mut tx, &mut c, &mut out).await.unwrap();
        tx.commit().await.unwrap();
        // The warning's row (Thursday 13:30) moves an hour later under the same id; the queue
        // keeps the old copy.
        let hour = 3_600_000_000_i64;
        sqlx::query("UPDATE timers SET fire_time = fire_time + $1 WHERE kind = 1")
            .bind(hour)
            .execute(db.pool())
            .await
            .unwrap();
        ctx.timers.push(out.hints.clone());
        clock.set(start + chrono::Duration::days(3) + chrono::Duration::hours(4));
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(super::run(ctx.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(count::<pb::DeadlineWarning>(&db).await, 0);
        // At its new time it fires, once.
        ctx.timers
            .push(out.hints.iter().map(|(fire, id)| (fire + hour, *id)));
        clock.advance(chrono::Duration::hours(1));
        fire_until::<pb::DeadlineWarning>(&ctx, 1).await;
        assert_eq!(count::<pb::DeadlineWarning>(&db).await, 1);
        db.close().await;
    }

    backend_tests!(
        timers_survive_restarts_and_fire_exactly_once,
        bulk_loaded_clocks_are_queued,
        a_timer_moved_later_does_not_fire_from_an_old_copy_in_the_queue
    );
}
