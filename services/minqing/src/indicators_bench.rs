//! `minqing bench indicators`: a year of rollups as 10 million cases would leave them, loaded
//! into supervision's real store, and the district/year indicators query timed through the
//! same code `GetIndicators` runs (`query::counts` and the figures).
//!
//! The synthetic city: `districts` × 5 streets × 6 communities × 4 grids, 30 categories,
//! 12 channels, 13 units per grid. Month rows are loaded for every place and dimension; day
//! rows for districts and streets only (a district/year query never reads day rows, and
//! community and grid day rows would only make the load take longer — the index is on
//! (place, dim, grain, period, value), so they do not change how many rows a query touches).

use std::{path::PathBuf, time::Instant};

use clap::Args;
use rand::{Rng, SeedableRng, rngs::StdRng};

use minqing_kit::{
    config::SqliteSync,
    db::{Db, DbOptions},
};
use minqing_proto::minqing::supervision::v1::{Period, PeriodKind};
use minqing_supervision::indicators::{
    period,
    query::{self, Slice},
    rollup::{self, Counts, Key, NBUCKETS},
};

/// `minqing bench indicators`.
#[derive(Debug, Args)]
pub struct IndicatorsBench {
    /// Cases the year's rollups stand for.
    #[arg(long, default_value_t = 10_000_000)]
    cases: u64,
    /// Districts in the synthetic city.
    #[arg(long, default_value_t = 8)]
    districts: usize,
    /// A PostgreSQL URL (a fresh database is best); SQLite under --data-dir otherwise.
    #[arg(long)]
    database_url: Option<String>,
    /// Where the SQLite file goes.
    #[arg(long, default_value = "./minqing-bench-indicators")]
    data_dir: PathBuf,
    /// Timed queries of each kind.
    #[arg(long, default_value_t = 50)]
    queries: usize,
}

const CATEGORIES: usize = 30;
const CHANNELS: usize = 12;
const UNITS: usize = 13;

fn counts(rng: &mut StdRng, cases: u64) -> Counts {
    let mut c = Counts {
        received: cases as i64,
        ..Counts::default()
    };
    if cases == 0 {
        return c;
    }
    let part =
        |rng: &mut StdRng, n: i64, lo: f64, hi: f64| (n as f64 * rng.random_range(lo..hi)) as i64;
    c.withdrawn = part(rng, c.received, 0.0, 0.03);
    c.answered = part(rng, c.received - c.withdrawn, 0.85, 0.99);
    c.answered_on_time = part(rng, c.answered, 0.8, 0.98);
    c.resolved = part(rng, c.answered, 0.9, 1.0);
    c.overdue = part(rng, c.received - c.answered, 0.0, 0.5);
    c.rated = part(rng, c.answered, 0.3, 0.7);
    c.satisfied = part(rng, c.rated, 0.7, 0.95);
    c.rating_sum = c.satisfied * 5 + (c.rated - c.satisfied) * 3;
    let mut left = c.answered;
    for i in 0..NBUCKETS {
        let h = if i + 1 == NBUCKETS {
            left
        } else {
            part(rng, left, 0.1, 0.4)
        };
        c.hist[i] = h;
        left -= h;
    }
    c.handling_sum = c.answered * 2 * 86_400;
    c
}

/// Splits `total` cases over `n` values, unevenly.
fn split(rng: &mut StdRng, total: u64, n: usize) -> Vec<u64> {
    let weights: Vec<f64> = (0..n)
        .map(|i| rng.random_range(0.5..1.5) / (1.0 + i as f64 * 0.1))
        .collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| (total as f64 * w / sum) as u64)
        .collect()
}

impl IndicatorsBench {
    fn places(&self) -> Vec<(String, u8)> {
        let mut out = Vec::new();
        for d in 0..self.districts {
            let district = format!("6201{:02}", d + 1);
            out.push((district.clone(), 1));
            for s in 0..5 {
                let street = format!("{district}{:03}", s + 1);
                out.push((street.clone(), 2));
                for c in 0..6 {
                    let community = format!("{street}{:03}", c + 1);
                    out.push((community.clone(), 3));
                    for g in 0..4 {
                        out.push((format!("{community}-g{:02}", g + 1), 4));
                    }
                }
            }
        }
        out
    }

    /// The rows of one place for one period.
    fn rows(
        rng: &mut StdRng,
        place: &str,
        level: u8,
        grain: &'static str,
        period: i64,
        cases: u64,
        out: &mut Vec<(Key, Counts)>,
    ) {
        let key = |dim: &'static str, value: String| Key {
            grain,
            period,
            place: place.to_string(),
            dim,
            value,
        };
        out.push((key("", String::new()), counts(rng, cases)));
        for (i, n) in split(rng, cases, CATEGORIES).into_iter().enumerate() {
            out.push((key("category", format!("category-{i:02}")), counts(rng, n)));
        }
        let units = UNITS + usize::from(4 - level.min(4)) * 3;
        for (i, n) in split(rng, cases, units).into_iter().enumerate() {
            out.push((key("unit", format!("units/unit-{i:02}")), counts(rng, n)));
        }
        for (i, n) in split(rng, cases, CHANNELS).into_iter().enumerate() {
            out.push((
                key("channel", rollup::channel_name(i as i32 + 1)),
                counts(rng, n),
            ));
        }
    }

    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let mut opts = DbOptions::new(
            "supervision",
            self.database_url.clone(),
            self.data_dir.clone(),
        );
        opts.sqlite_synchronous = SqliteSync::Normal;
        let db = Db::connect(&opts).await?;
        minqing_supervision::indicators::migrate(&db).await?;
        let mut tx = db.begin().await?;
        sqlx::query("DELETE FROM ind_rollup")
            .execute(tx.conn())
            .await?;
        tx.commit().await?;

        let places = self.places();
        let per_place_level = |level: u8| -> u64 {
            let n = places.iter().filter(|p| p.1 == level).count() as u64;
            self.cases / n
        };
        let mut rng = StdRng::seed_from_u64(2026);
        let started = Instant::now();
        let mut loaded = 0usize;
        let first = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
        for (place, level) in &places {
            let yearly = per_place_level(*level);
            let mut rows = Vec::new();
            for (m, cases) in split(&mut rng, yearly, 12).into_iter().enumerate() {
                Self::rows(
                    &mut rng,
                    place,
                    *level,
                    "M",
                    202601 + m as i64,
                    cases,
                    &mut rows,
                );
            }
            if *level <= 2 {
                for (d, cases) in split(&mut rng, yearly, 365).into_iter().enumerate() {
                    let day = period::ymd(first + chrono::Duration::days(d as i64));
                    Self::rows(&mut rng, place, *level, "D", day, cases, &mut rows);
                }
            }
            let mut tx = db.begin().await?;
            rollup::insert_many(&mut tx, &rows).await?;
            tx.commit().await?;
            loaded += rows.len();
        }
        let load = started.elapsed();
        say!(
            "loaded {loaded} rollup rows for {} cases in {:.1} s",
            self.cases,
            load.as_secs_f64()
        );

        let year = period::parse(Some(&Period {
            kind: PeriodKind::Year as i32,
            date: "2026-06-15".into(),
        }))
        .map_err(|e| anyhow::anyhow!("period: {e:?}"))?;
        let week = period::parse(Some(&Period {
            kind: PeriodKind::Week as i32,
            date: "2026-06-15".into(),
        }))
        .map_err(|e| anyhow::anyhow!("period: {e:?}"))?;
        let district = places.first().map(|p| p.0.clone()).unwrap_or_default();
        for (label, span, slice) in [
            (
                "district/year total",
                year,
                Slice {
                    dim: "",
                    value: None,
                },
            ),
            (
                "district/year by category",
                year,
                Slice {
                    dim: "category",
                    value: None,
                },
            ),
            (
                "district/year one channel",
                year,
                Slice {
                    dim: "channel",
                    value: Some("CHANNEL_HOTLINE".into()),
                },
            ),
            (
                "district/week by unit",
                week,
                Slice {
                    dim: "unit",
                    value: None,
                },
            ),
        ] {
            let mut times = Vec::with_capacity(self.queries);
            let mut received = 0;
            for _ in 0..self.queries {
                let t = Instant::now();
                let groups = query::counts(&db, &district, &span, &slice).await?;
                let figures = query::total(&groups).figures();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                received = figures.received;
            }
            times.sort_by(f64::total_cmp);
            let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
            say!(
                "{label:<28} received {received:>9}  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                p(0.5),
                p(0.99),
                times.last().copied().unwrap_or_default()
            );
        }
        if let Some(kib) = crate::bench::peak_rss_kib(std::process::id()) {
            say!("peak resident memory of this process: {} MiB", kib / 1024);
        }
        Ok(())
    }
}
