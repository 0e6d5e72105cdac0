//! Calendar edits move running deadlines. When a city declares a holiday, adds a make-up
//! working day or changes its working hours, every running or overdue clock of the city is
//! re-planned on the edited calendar ([`Clock::replan`]): its deadline counted again from its
//! own start and limit, its warning and next escalation timed again — the timers they replace
//! deleted in the same transaction, so they never fire — a step in its history, and a
//! `ClockRescheduled` event (with the calendar) for each clock whose deadline moved.
//!
//! Resumable: each clock records the calendar version it was planned with (the
//! `calendar_version` column); this worker looks for running and overdue clocks planned with an
//! older version than their calendar's, a batch at a time, each batch in its own transaction,
//! until none is left — at start, after every edit, and every few seconds (a clock whose
//! deadline a consumer counted on the calendar before an edit, and saved after the re-plan
//! passed, is found then). A crash midway leaves the clocks not yet re-planned marked with the
//! older version, so they are found again after the restart; none is re-planned twice.
//!
//! No race with the consumers and the timer worker: on PostgreSQL the batch's rows are locked
//! (`FOR UPDATE SKIP LOCKED`: a clock another transaction is changing is left for the next
//! pass), and every write checks the clock's row version; SQLite has one writer.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prost::Name;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{Ctx, calendar_name},
    clock::{Clock, Replanned, Timer, TimerKind},
    error::Error,
    flow::{self, Pending},
    grpc::convert,
    store::{self, calendars::Stored},
};
use minqing_kit::{
    db::{Backend, Tx, execute_rows},
    error::StoreError,
    feed::EventMeta,
    time::{from_micros, to_timestamp},
};
use minqing_proto::minqing::supervision::v1 as pb;

const ACTOR: &str = "system:supervision-replan";
/// Clocks re-planned in one transaction at most.
pub const BATCH: i64 = 500;
/// How often the clocks are looked at again without an edit.
const SWEEP: Duration = Duration::from_secs(5);
/// How long to wait before trying again after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Clocks looked at (0: none was left).
    pub looked: usize,
    /// Clocks whose deadline moved.
    pub moved: usize,
    /// Clocks whose deadline stood but whose warning or next escalation moved.
    pub retimed: usize,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Outcome) {
        self.looked += o.looked;
        self.moved += o.moved;
        self.retimed += o.retimed;
    }
}

/// Runs until `shutdown`: catches up at start, after each edit and every few seconds.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let wait = match catch_up(&ctx).await {
            Ok(done) => {
                if done.looked > 0 {
                    tracing::info!(
                        looked = done.looked,
                        moved = done.moved,
                        retimed = done.retimed,
                        "clocks re-planned on edited calendars"
                    );
                }
                SWEEP
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-planning clocks failed; trying again");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            () = ctx.replan_wake.notified() => {},
            () = shutdown.cancelled() => return,
        }
    }
}

/// Re-plans every clock planned on an older version of its calendar, batch by batch, until
/// none is left.
pub async fn catch_up(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut total = Outcome::default();
    for stored in ctx.calendars.all() {
        let mut conflicts = 0;
        loop {
            match batch(ctx, &stored, BATCH).await {
                Ok(done) if done.looked == 0 => break,
                Ok(done) => total += done,
                Err(Error::Conflict) if conflicts < 5 => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// Re-plans, in one transaction, up to `limit` running or overdue clocks of `stored`'s city
/// planned on an older version of it.
pub async fn batch(ctx: &Ctx, stored: &Stored, limit: i64) -> Result<Outcome, Error> {
    let cal = &stored.calendar;
    let now = ctx.clock.now_micros();
    let mut tx = ctx.db.begin().await?;
    let clocks = stale(&mut tx, &cal.city, stored.version, limit).await?;
    if clocks.is_empty() {
        tx.rollback().await?;
        return Ok(Outcome::default());
    }
    let ids: Vec<String> = clocks.iter().map(|c| c.case_id.clone()).collect();
    let mut scheduled: HashMap<String, Vec<Timer>> = HashMap::new();
    for t in deadline_timers(&mut tx, &ids).await? {
        scheduled.entry(t.case_id.clone()).or_default().push(t);
    }
    let meta = EventMeta::current(ACTOR);
    let mut out = Pending::default();
    let mut done = Outcome {
        looked: clocks.len(),
        ..Outcome::default()
    };
    let (mut unchanged, mut changed) = (Vec::new(), Vec::new());
    let mut new_timers = Vec::new();
    let name = calendar_name(&cal.city);
    let etag = convert::etag(stored.version);
    for mut clock in clocks {
        let had = scheduled.remove(&clock.case_id).unwrap_or_default();
        let replanned = clock.replan(cal, &ctx.policy, &had);
        clock.calendar_version = stored.version;
        match replanned {
            Replanned::Unchanged => {
                unchanged.push(clock);
                continue;
            }
            Replanned::Retimed => {
                done.retimed += 1;
                clock.note(
                    now,
                    &pb::CalendarChanged::full_name(),
                    format!(
                        "{name} edited ({etag}): the deadline stands; its warning and \
                         escalations are timed again"
                    ),
                );
            }
            Replanned::Moved(previous) => {
                done.moved += 1;
                let when = |t: Option<i64>| {
                    t.map_or_else(|| "none".to_string(), |t| from_micros(t).to_rfc3339())
                };
                clock.note(
                    now,
                    &pb::ClockRescheduled::full_name(),
                    format!(
                        "{name} edited ({etag}): due {} (was {})",
                        when(clock.due),
                        when(previous)
                    ),
                );
                let e = pb::ClockRescheduled {
                    clock: Some(convert::clock(&clock, false)),
                    previous_due_time: previous.map(to_timestamp),
                    calendar: name.clone(),
                    calendar_etag: etag.clone(),
                };
                flow::event(&mut out, &meta, &clock, &e, now);
            }
        }
        new_timers.extend(
            crate::clock::timers(&clock, cal, &ctx.policy)
                .into_iter()
                .filter(|t| matches!(t.kind, TimerKind::Warning | TimerKind::Escalation)),
        );
        changed.push(clock);
    }
    stamp(&mut tx, &unchanged).await?;
    if !changed.is_empty() {
        if store::clocks::save_many(&mut tx, &mut changed).await? != changed.len() as u64 {
            // Changed underneath since read (only without row locks): the batch again.
            return Err(Error::Conflict);
        }
        let ids: Vec<String> = changed.iter().map(|c| c.case_id.clone()).collect();
        drop_deadline_timers(&mut tx, &ids).await?;
        store::clocks::insert_timers(&mut tx, &new_timers).await?;
        out.hints.extend(new_timers.iter().map(|t| (t.fire, t.id)));
    }
    flow::finish(&mut tx, &mut out).await?;
    tx.commit().await?;
    ctx.timers.push(out.hints);
    Ok(done)
}

/// Running (1) and overdue (3) clocks of `city` planned on a version older than `version`
/// (two range seeks on the `clocks_replan` index).
async fn stale(
    tx: &mut Tx,
    city: &str,
    version: i64,
    limit: i64,
) -> Result<Vec<Clock>, StoreError> {
    let lock = match tx.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT version, calendar_version, doc FROM clocks \
         WHERE city = $1 AND state IN (1, 3) AND calendar_version < $2 LIMIT $3{lock}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(city)
        .bind(version)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
    rows.iter()
        .map(|r| {
            let doc: String = r.try_get("doc")?;
            let mut c: Clock = store::from_doc(&doc)?;
            c.version = r.try_get("version")?;
            c.calendar_version = r.try_get("calendar_version")?;
            Ok(c)
        })
        .collect()
}

fn in_list(from: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", from + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The unfired warnings and escalations of these cases.
async fn deadline_timers(tx: &mut Tx, case_ids: &[String]) -> Result<Vec<Timer>, StoreError> {
    let mut out = Vec::new();
    for chunk in case_ids.chunks(500) {
        let sql = format!(
            "SELECT id, case_id, kind, step, fire_time FROM timers \
             WHERE fired = 0 AND kind IN (1, 2) AND case_id IN ({})",
            in_list(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(tx.conn()).await? {
            let kind: i64 = row.try_get("kind")?;
            let step: i64 = row.try_get("step")?;
            if let Some(kind) = TimerKind::from_wire(kind) {
                out.push(Timer {
                    id: row.try_get("id")?,
                    case_id: row.try_get("case_id")?,
                    kind,
                    step: i32::try_from(step).unwrap_or(0),
                    fire: row.try_get("fire_time")?,
                });
            }
        }
    }
    Ok(out)
}

/// Deletes the unfired warnings and escalations of these cases.
async fn drop_deadline_timers(tx: &mut Tx, case_ids: &[String]) -> Result<(), StoreError> {
    for chunk in case_ids.chunks(500) {
        let sql = format!(
            "DELETE FROM timers WHERE fired = 0 AND kind IN (1, 2) AND case_id IN ({})",
            in_list(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.clone());
        }
        q.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Marks clocks whose schedule the edit left alone planned with the new version, if they are
/// still at the row version read (the mark is not a change: the row version stays).
async fn stamp(tx: &mut Tx, clocks: &[Clock]) -> Result<u64, StoreError> {
    execute_rows(
        tx.conn(),
        3,
        clocks,
        |c| c.case_id.len() + 24,
        |values| {
            format!(
                "WITH v (case_id, version, calendar_version) AS (VALUES {values}) \
                 UPDATE clocks SET calendar_version = v.calendar_version FROM v \
                 WHERE clocks.case_id = v.case_id AND clocks.version = v.version"
            )
        },
        |q, c| {
            q.bind(c.case_id.clone())
                .bind(c.version)
                .bind(c.calendar_version)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use chrono::{NaiveDate, TimeZone};
    use prost::Name;
    use tokio_util::sync::CancellationToken;

    use crate::{
        calendar::{DayKind, Special},
        clock::{Clock, Pause, TimerKind},
        config::SupervisionConfig,
        flow::{self, Pending},
        outlets::{LogOutlet, Outlets},
        store::{self, calendars::Stored},
    };
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        testing::{TestDatabase, eventually},
        time::{self, Micros},
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

    /// 2026-11-`d` at `h`:`m` in Lanzhou.
    fn cst(d: u32, h: u32, m: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .with_ymd_and_hms(2026, 11, d, h, m, 0)
            .single()
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn micros(t: chrono::DateTime<chrono::Utc>) -> Micros {
        t.timestamp_micros()
    }

    async fn count<M: Name>(db: &Db) -> i64 {
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE kind = $1")
            .bind(M::full_name())
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    async fn unfired_at(db: &Db, kind: TimerKind, fire: Micros) -> i64 {
        sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM timers \
             WHERE fired = 0 AND kind = $1 AND fire_time = $2",
        )
        .bind(kind.wire())
        .bind(fire)
        .fetch_one(db.pool())
        .await
        .unwrap()
    }

    /// Declares a day of Lanzhou's calendar, as `UpdateCalendar` does, and returns it stored.
    async fn declare(ctx: &crate::app::Ctx, date: u32, kind: DayKind) -> Stored {
        let current = ctx.calendars.get("6201").unwrap();
        let mut cal = current.calendar.clone();
        let day = NaiveDate::from_ymd_opt(2026, 11, date).unwrap();
        let special = Special {
            kind,
            description: "declared".into(),
        };
        cal.edit(None, [(day, special)], []);
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await.unwrap();
        assert!(
            store::calendars::update(&mut tx, &cal, current.version, now)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let stored = Stored {
            calendar: cal,
            version: current.version + 1,
            update_time: now,
        };
        ctx.calendars.put(stored.clone());
        stored
    }

    fn grid_clock(id: String, now: Micros) -> Clock {
        let mut c = Clock::new(&id, now);
        c.place.district = "620102".into();
        c.place.grid = "620102001001-g01".into();
        c.unit_level = 4;
        c.city = "6201".into();
        c
    }

    /// Runs the timer worker until `n` warnings went out, and a while longer: no more may.
    async fn warnings_fire(ctx: &Arc<crate::app::Ctx>, n: i64) {
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(crate::timers::run(ctx.clone(), shutdown.clone()));
        eventually(Duration::from_secs(30), "the warnings", || async {
            count::<pb::DeadlineWarning>(&ctx.db).await >= n
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(count::<pb::DeadlineWarning>(&ctx.db).await, n);
    }

    async fn a_holiday_replans_many_clocks_once_across_a_restart(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(cst(23, 10, 0));
        let first = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let stored = first.calendars.get("6201").unwrap();
        let cal = &stored.calendar;
        // 1,000 clocks due Thursday 26 Nov (3 working days), 100 due Tuesday (1 day), 50
        // emergencies and 50 paused: all planned on the calendar as it is.
        let mut clocks = Vec::new();
        for i in 0..1_200 {
            let mut c = grid_clock(format!("c-{i:04}"), now);
            match i {
                0..1_000 => c.run_days(cal, now, 3),
                1_000..1_100 => c.run_days(cal, now, 1),
                1_100..1_150 => c.run_minutes(now, 60),
                _ => {
                    c.run_days(cal, now, 3);
                    c.pause(Pause::Papers, now);
                }
            }
            c.calendar_version = stored.version;
            clocks.push(c);
        }
        let timers: Vec<_> = clocks
            .iter()
            .flat_map(|c| crate::clock::timers(c, cal, &first.policy))
            .collect();
        let old_warning = micros(cst(26, 13, 30));
        assert_eq!(
            timers.iter().filter(|t| t.fire == old_warning).count(),
            1_000
        );
        let mut tx = db.begin().await.unwrap();
        store::clocks::insert_clocks(&mut tx, &clocks)
            .await
            .unwrap();
        store::clocks::insert_timers(&mut tx, &timers)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // Wednesday 25 Nov declared a holiday; the process dies after one batch.
        let edited = declare(&first, 25, DayKind::Holiday).await;
        let done = super::batch(&first, &edited, 400).await.unwrap();
        assert_eq!(done.looked, 400);
        drop(first);

        // After the restart the rest is found and re-planned; nothing twice.
        let second = ctx(&db, &clock).await;
        let rest = super::catch_up(&second).await.unwrap();
        assert_eq!(done.looked + rest.looked, 1_150);
        assert_eq!(done.moved + rest.moved, 1_000);
        assert_eq!(done.retimed + rest.retimed, 0);
        assert_eq!(super::catch_up(&second).await.unwrap().looked, 0);
        assert_eq!(count::<pb::ClockRescheduled>(&db).await, 1_000);

        let moved = store::clocks::get(db.pool(), "c-0007")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(moved.due, Some(micros(cst(27, 17, 30))));
        assert_eq!(moved.calendar_version, edited.version);
        assert_eq!(moved.version, 2);
        assert!(
            moved
                .history
                .iter()
                .any(|h| h.kind == pb::ClockRescheduled::full_name()
                    && h.summary.contains("calendars/6201"))
        );
        let untouched = store::clocks::get(db.pool(), "c-1050")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.due, Some(micros(cst(24, 17, 30))));
        assert_eq!(
            (untouched.version, untouched.calendar_version),
            (1, edited.version)
        );
        let paused = store::clocks::get(db.pool(), "c-1199")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(paused.calendar_version, stored.version);

        // The old warnings and escalations are gone; the new ones are a working day later.
        let new_warning = micros(cst(27, 13, 30));
        assert_eq!(unfired_at(&db, TimerKind::Warning, old_warning).await, 0);
        assert_eq!(
            unfired_at(&db, TimerKind::Escalation, micros(cst(26, 17, 30))).await,
            0
        );
        assert_eq!(
            unfired_at(&db, TimerKind::Warning, new_warning).await,
            1_000
        );
        assert_eq!(
            unfired_at(&db, TimerKind::Escalation, micros(cst(27, 17, 30))).await,
            1_000
        );

        // Even with the superseded timers still queued, none fires at the old time (only the
        // emergencies' and Tuesday's warnings, due before it)…
        assert_eq!(crate::timers::load(&second).await.unwrap(), 2_300);
        second.timers.push(timers.iter().map(|t| (t.fire, t.id)));
        clock.set(cst(26, 13, 31));
        warnings_fire(&second, 150).await;
        // …and each moved warning fires once at the new time.
        clock.set(cst(27, 13, 31));
        warnings_fire(&second, 1_150).await;
        db.close().await;
    }

    async fn a_deadline_counted_before_an_edit_and_saved_after_it_is_found(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(cst(26, 10, 0));
        let ctx = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let old = ctx.calendars.get("6201").unwrap();
        // A consumer counts a deadline on the calendar before the edit: Thursday + 3 working
        // days is Tuesday 1 Dec…
        let mut late = grid_clock("late".into(), now);
        late.run_days(&old.calendar, now, 3);
        // …Saturday 28 Nov is declared a make-up working day meanwhile…
        let edited = declare(&ctx, 28, DayKind::Workday).await;
        // …and the consumer saves after the edit: the clock keeps the older mark.
        let mut fresh = grid_clock("fresh".into(), now);
        fresh.run_days(&edited.calendar, now, 3);
        let mut tx = db.begin().await.unwrap();
        let mut out = Pending::default();
        flow::save(&ctx, &mut tx, &mut late, &mut out)
            .await
            .unwrap();
        flow::save(&ctx, &mut tx, &mut fresh, &mut out)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(late.calendar_version, 0);
        assert_eq!(fresh.calendar_version, edited.version);

        // Only the late one is re-planned: a working day earlier, Monday 30 Nov.
        let done = super::catch_up(&ctx).await.unwrap();
        assert_eq!((done.looked, done.moved), (1, 1));
        let late = store::clocks::get(db.pool(), "late")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.due, Some(micros(cst(30, 17, 30))));
        assert_eq!(late.due, fresh.due);
        assert_eq!(count::<pb::ClockRescheduled>(&db).await, 1);
        // The worker does the same by itself after an edit.
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(super::run(ctx.clone(), shutdown.clone()));
        declare(&ctx, 28, DayKind::Holiday).await;
        ctx.replan_wake.notify_one();
        eventually(
            Duration::from_secs(10),
            "both clocks moved back",
            || async { count::<pb::ClockRescheduled>(&db).await == 3 },
        )
        .await;
        shutdown.cancel();
        worker.await.unwrap();
        let back = store::clocks::get(db.pool(), "fresh")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.due, Some(micros(cst(30, 17, 30)) + 86_400_000_000));
        db.close().await;
    }

    async fn a_replan_racing_the_timer_worker_ends_consistent(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(cst(23, 10, 0));
        let ctx = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let stored = ctx.calendars.get("6201").unwrap();
        // 600 clocks due Thursday 26 Nov at 17:30, warned at 13:30.
        let clocks: Vec<Clock> = (0..600)
            .map(|i| {
                let mut c = grid_clock(format!("r-{i:03}"), now);
                c.run_days(&stored.calendar, now, 3);
                c.calendar_version = stored.version;
                c
            })
            .collect();
        let timers: Vec<_> = clocks
            .iter()
            .flat_map(|c| crate::clock::timers(c, &stored.calendar, &ctx.policy))
            .collect();
        let mut tx = db.begin().await.unwrap();
        store::clocks::insert_clocks(&mut tx, &clocks)
            .await
            .unwrap();
        store::clocks::insert_timers(&mut tx, &timers)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        crate::timers::load(&ctx).await.unwrap();
        let shutdown = CancellationToken::new();
        let firing = tokio::spawn(crate::timers::run(ctx.clone(), shutdown.clone()));
        let replanning = tokio::spawn(super::run(ctx.clone(), shutdown.clone()));
        // The warnings fall due while Thursday is declared a holiday: each clock is warned
        // before its re-plan or not at all, and moves to Friday either way.
        clock.set(cst(26, 13, 31));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let edited = declare(&ctx, 26, DayKind::Holiday).await;
        ctx.replan_wake.notify_one();
        eventually(
            Duration::from_secs(30),
            "every clock re-planned",
            || async {
                let stale: i64 = sqlx::query_scalar(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM clocks WHERE calendar_version < $1",
                )
                .bind(edited.version)
                .fetch_one(db.pool())
                .await
                .unwrap();
                stale == 0
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.cancel();
        firing.await.unwrap();
        replanning.await.unwrap();

        let friday = micros(cst(27, 17, 30));
        let ids: Vec<String> = clocks.iter().map(|c| c.case_id.clone()).collect();
        let mut tx = db.begin().await.unwrap();
        let stored_timers = super::deadline_timers(&mut tx, &ids).await.unwrap();
        let now_clocks = store::clocks::get_many(&mut tx, &ids).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(now_clocks.len(), 600);
        for c in &now_clocks {
            assert_eq!(c.due, Some(friday), "{}", c.case_id);
            // Warned for Thursday or not, the moved-later deadline gets its own warning.
            assert!(!c.warned, "{}", c.case_id);
            let mut want: Vec<(i64, Micros)> =
                crate::clock::timers(c, &edited.calendar, &ctx.policy)
                    .iter()
                    .map(|t| (t.id, t.fire))
                    .collect();
            let mut have: Vec<(i64, Micros)> = stored_timers
                .iter()
                .filter(|t| t.case_id == c.case_id)
                .map(|t| (t.id, t.fire))
                .collect();
            want.sort_unstable();
            have.sort_unstable();
            assert_eq!(have, want, "{}", c.case_id);
        }
        // At most one warning per clock went out (for Thursday, before its re-plan).
        let most: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM \
             (SELECT COUNT(*) AS n FROM events WHERE kind = $1 GROUP BY subject) AS w",
        )
        .bind(pb::DeadlineWarning::full_name())
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(most <= 1, "{most}");
        assert_eq!(count::<pb::ClockRescheduled>(&db).await, 600);
        db.close().await;
    }

    backend_tests!(
        a_holiday_replans_many_clocks_once_across_a_restart,
        a_deadline_counted_before_an_edit_and_saved_after_it_is_found,
        a_replan_racing_the_timer_worker_ends_consistent
    );
}
