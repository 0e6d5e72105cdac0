//! One million open clocks: how much memory the service holds for them, and how late each due
//! warning fires. Run: `cargo bench -p minqing-supervision --bench clocks` (BENCH_CLOCKS sets
//! the number of clocks; default 1,000,000).
//!
//! The database (SQLite, synchronous FULL as in production) gets N running clocks, each with
//! its warning and escalation timers (2N timers). Nearly all are due days ahead; 20,000
//! warnings fall due spread over 30 seconds, and 5,000 more at one instant (deadlines share
//! the close of a working day, so warnings bunch). The due-time queue is then loaded as at a
//! restart and the real timer worker runs on the system clock: every warning fires through
//! the full path (clock read, changed and saved, timers re-derived, event appended, timer
//! marked fired in one transaction). Lateness is the time from a warning's due time until its
//! event is committed and read back (a watcher polls the feed every 5 ms), reported for the
//! spread and the burst apart; memory is the process's resident set (VmRSS, VmHWM).
//! `RUST_LOG=minqing_supervision::timers=debug` logs each batch's phases.

use std::{sync::Arc, time::Instant};

use minqing_kit::{
    db::{Db, DbOptions},
    time::Clock as SysClock,
};
use minqing_supervision::{
    SupervisionConfig,
    clock::{Clock, State, Timer, TimerKind, timer_id},
    outlets::{LogOutlet, Outlets},
    store, timers,
};
use tokio_util::sync::CancellationToken;

const SPREAD: usize = 20_000;
const BURST: usize = 5_000;
const CHUNK: usize = 10_000;

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn clock(i: usize, due: i64, now: i64) -> Clock {
    let mut c = Clock::new(&format!("bench-{i:07}"), now);
    let community = format!("620102001{:03}", 1 + i % 2);
    c.place.district = "620102".into();
    c.place.street = "620102001".into();
    c.place.grid = format!("{community}-g0{}", 1 + i % 3);
    c.place.community = community;
    c.unit = format!("units/grid-{}", c.place.grid);
    c.unit_level = 4;
    c.disposition = 2;
    c.city = "6201".into();
    c.state = State::Running;
    c.start = Some(now);
    c.due = Some(due);
    c.limit_days = 5;
    c.generation = 1;
    c
}

fn timer(c: &Clock, kind: TimerKind, step: i32, fire: i64) -> Timer {
    Timer {
        id: timer_id(&c.case_id, kind, "1", step),
        case_id: c.case_id.clone(),
        kind,
        step,
        fire,
    }
}

async fn insert(db: &Db, clocks: &[Clock], timers: &[Timer]) {
    let mut tx = db.begin().await.expect("begin");
    store::clocks::insert_clocks(&mut tx, clocks)
        .await
        .expect("clocks");
    store::clocks::insert_timers(&mut tx, timers)
        .await
        .expect("timers");
    tx.commit().await.expect("commit");
}

fn main() {
    // RUST_LOG=minqing_supervision::timers=debug shows where each batch's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("BENCH_CLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&DbOptions::new(
        "supervision",
        None,
        dir.path().to_path_buf(),
    ))
    .await
    .expect("db");
    let config = SupervisionConfig {
        timer_tick_ms: 250,
        ..Default::default()
    };
    let ctx = minqing_supervision::context(
        db.clone(),
        config,
        SysClock::System,
        Outlets::all(Arc::new(LogOutlet)),
    )
    .await
    .expect("context");

    // The far future: days ahead, spread over a month.
    let started = Instant::now();
    let now = SysClock::System.now_micros();
    let day = 86_400_000_000_i64;
    let cold = n.saturating_sub(SPREAD + BURST);
    let mut i = 0;
    while i < cold {
        let end = (i + CHUNK).min(cold);
        let clocks: Vec<Clock> = (i..end)
            .map(|k| clock(k, now + day + (k as i64 % 30) * day, now))
            .collect();
        let timers: Vec<Timer> = clocks
            .iter()
            .flat_map(|c| {
                let due = c.due.unwrap_or(now);
                [
                    timer(c, TimerKind::Warning, 0, due - 4 * 3_600_000_000),
                    timer(c, TimerKind::Escalation, 1, due),
                ]
            })
            .collect();
        insert(&db, &clocks, &timers).await;
        i = end;
    }
    let loaded_in = started.elapsed();

    // The hot ones, due from 10 s after they are written: 20,000 over 30 s, then 5,000 at once.
    let t0 = SysClock::System.now_micros() + 10_000_000;
    let hot: Vec<(Clock, i64)> = (0..SPREAD + BURST)
        .map(|k| {
            let fire = if k < SPREAD {
                t0 + (k as i64 * 30_000_000) / SPREAD as i64
            } else {
                t0 + 15_000_000
            };
            (clock(cold + k, fire + 4 * 3_600_000_000, now), fire)
        })
        .collect();
    for chunk in hot.chunks(CHUNK) {
        let clocks: Vec<Clock> = chunk.iter().map(|(c, _)| c.clone()).collect();
        let timers: Vec<Timer> = chunk
            .iter()
            .flat_map(|(c, fire)| {
                [
                    timer(c, TimerKind::Warning, 0, *fire),
                    timer(c, TimerKind::Escalation, 1, c.due.unwrap_or(now)),
                ]
            })
            .collect();
        insert(&db, &clocks, &timers).await;
    }

    // A restart: the queue is rebuilt from the due-time index.
    let before = status("VmRSS:");
    let load_start = Instant::now();
    let queued = timers::load(&ctx).await.expect("load");
    let load_time = load_start.elapsed();
    let after = status("VmRSS:");
    println!(
        "{n} open clocks, {queued} timers: written in {:.1} s, queue loaded in {:.2} s",
        loaded_in.as_secs_f64(),
        load_time.as_secs_f64()
    );
    println!(
        "resident memory: {:.0} MB before loading the queue, {:.0} MB after",
        mb(before),
        mb(after)
    );

    // When each warning became visible: its event committed and read back by a watcher
    // polling the feed every 5 ms. (A timer's `fired_time` is its batch's start, so it would
    // hide the time the batch takes to write and commit.)
    let due_at: std::collections::HashMap<String, (i64, bool)> = hot
        .iter()
        .enumerate()
        .map(|(k, (c, fire))| (format!("cases/{}", c.case_id), (*fire, k >= SPREAD)))
        .collect();
    let watch_db = db.clone();
    let watcher = tokio::spawn(async move {
        let (mut spread, mut burst) = (Vec::new(), Vec::new());
        let mut after = 0_i64;
        let until = Instant::now() + std::time::Duration::from_secs(120);
        while spread.len() + burst.len() < SPREAD + BURST && Instant::now() < until {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, subject FROM events WHERE seq > $1 AND kind = $2 ORDER BY seq",
            )
            .bind(after)
            .bind("minqing.supervision.v1.DeadlineWarning")
            .fetch_all(watch_db.pool())
            .await
            .expect("events");
            let seen = SysClock::System.now_micros();
            for (seq, subject) in rows {
                after = seq;
                if let Some((fire, in_burst)) = due_at.get(&subject) {
                    if *in_burst {
                        burst.push(seen - fire);
                    } else {
                        spread.push(seen - fire);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (spread, burst)
    });
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(timers::run(ctx.clone(), shutdown.clone()));
    let wait_until = Instant::now() + std::time::Duration::from_secs(120);
    let want = (SPREAD + BURST) as i64;
    loop {
        let fired: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM timers WHERE fired = 1")
                .fetch_one(db.pool())
                .await
                .expect("count");
        if fired >= want || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    let _ = worker.await;
    let (spread, burst) = watcher.await.expect("watcher");
    let all: Vec<i64> = burst.iter().chain(spread.iter()).copied().collect();
    println!(
        "fired {} of {want} due warnings; lateness = event visible (committed) - due time:",
        all.len()
    );
    for (group, mut late) in [
        ("spread (20,000 over 30 s)", spread),
        ("burst (5,000 at one instant)", burst),
        ("all", all),
    ] {
        late.sort_unstable();
        let pct = |p: f64| {
            late.get(((late.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let over = late.iter().filter(|l| **l > 1_000_000).count();
        println!(
            "  {group}: {} fired, lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {over} later than 1 s",
            late.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    println!(
        "resident memory at the end: {:.0} MB (peak {:.0} MB)",
        mb(status("VmRSS:")),
        mb(status("VmHWM:"))
    );
    db.close().await;
}
