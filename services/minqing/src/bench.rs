//! Load tools: drive SubmitCase over gRPC with N requests in flight and report throughput and
//! latency percentiles; and the SQLite floor (one row per transaction) to compare against.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::transport::Channel;

use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::{
    intake::v1::{self as pb, catalogue_client::CatalogueClient, intake_client::IntakeClient},
    r#type::v1 as tpb,
};

/// `minqing bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Submit cases as fast as N calls in flight allow.
    Submit(SubmitBench),
    /// The SQLite floor: insert case-sized rows one per transaction (WAL), as fast as it goes.
    SqliteFloor(SqliteFloor),
    /// End to end through routing: submit cases and time each from SubmitCase returning to
    /// its assignment appearing on a partner unit's PullAssignments stream.
    Route(crate::route_bench::RouteBench),
    /// Indicators: a year of rollups for 10 million cases in the real store, and the
    /// district/year query timed.
    Indicators(crate::indicators_bench::IndicatorsBench),
}

/// `minqing bench submit`.
#[derive(Debug, Args)]
pub struct SubmitBench {
    /// Intake's address.
    #[arg(
        long,
        env = "MINQING_ENDPOINT",
        default_value = "http://127.0.0.1:7401"
    )]
    endpoint: String,
    /// A token that may submit cases [default: the admin token in --data-dir].
    #[arg(long, env = "MINQING_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to find the admin token.
    #[arg(long, default_value = "./minqing-data")]
    data_dir: PathBuf,
    /// Requests to send (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Calls in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections to spread them over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests sent first and not counted.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Report this process's peak resident memory (the server's pid).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// `minqing bench sqlite-floor`.
#[derive(Debug, Args)]
pub struct SqliteFloor {
    /// Where to put the scratch database (removed afterwards).
    #[arg(long, default_value = "./minqing-bench")]
    dir: PathBuf,
    /// Rows to insert.
    #[arg(long, default_value_t = 3_000)]
    rows: usize,
    /// SQLite durability, as the server is configured.
    #[arg(long, value_enum, default_value = "full")]
    synchronous: SyncArg,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// SQLite `synchronous`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncArg {
    /// fsync every commit.
    Full,
    /// fsync at checkpoints.
    Normal,
}

impl BenchCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            BenchCommand::Submit(b) => b.run().await,
            BenchCommand::SqliteFloor(f) => f.run().await,
            BenchCommand::Route(r) => r.run().await,
            BenchCommand::Indicators(b) => b.run().await,
        }
    }
}

/// What each request varies over: real catalogue items and buildings.
pub(crate) struct Corpus {
    pub(crate) categories: Vec<String>,
    pub(crate) buildings: Vec<String>,
}

/// What residents say, in parts: where, what, since when. Composed at random, so most
/// reports differ and duplicates (same item, same building, similar words) are occasional, as
/// they are in a real hotline's traffic.
const WHERE: &[&str] = &[
    "楼道",
    "单元门口",
    "小区北门",
    "地下车库",
    "院子里",
    "楼顶",
    "电梯间",
    "垃圾站旁",
    "健身区",
    "自行车棚",
    "三楼走廊",
    "楼下商铺前",
    "后院",
    "门卫室旁",
    "停车场",
];
const WHAT: &[&str] = &[
    "路灯不亮了",
    "下水道堵了，有积水",
    "有人乱堆杂物",
    "墙皮脱落",
    "水管漏水",
    "噪音很大影响休息",
    "电梯经常停",
    "消防通道被占用",
    "垃圾没人清运",
    "井盖松动",
    "树枝快断了",
    "有流浪狗",
    "门禁坏了",
    "监控不亮",
    "窗户玻璃碎了",
    "暖气不热",
    "漏雨",
    "台阶破损",
    "有人占道经营",
    "线路老化冒火花",
];
const SINCE: &[&str] = &[
    "已经好几天了",
    "昨天晚上开始的",
    "一个多星期了",
    "反映过一次还没解决",
    "老人孩子出入很不方便",
    "晚上特别危险",
    "希望尽快处理",
    "邻居们都很着急",
    "怕出事故",
    "请派人来看看",
];

impl SubmitBench {
    pub(crate) async fn corpus(channel: Channel) -> anyhow::Result<Corpus> {
        let mut api = CatalogueClient::new(channel);
        let items = api
            .list_catalogue_items(pb::ListCatalogueItemsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await?
            .into_inner()
            .items;
        let places = api
            .list_places(pb::ListPlacesRequest {
                level: tpb::PlaceLevel::Building as i32,
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .places;
        anyhow::ensure!(
            !items.is_empty() && !places.is_empty(),
            "the catalogue or gazetteer is empty"
        );
        Ok(Corpus {
            categories: items.into_iter().map(|i| i.id).collect(),
            buildings: places.into_iter().map(|p| p.code).collect(),
        })
    }

    fn request(corpus: &Corpus, run: &str, i: usize, rng: &mut StdRng) -> pb::SubmitCaseRequest {
        let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
        let (place, what, since) = (pick(rng, WHERE), pick(rng, WHAT), pick(rng, SINCE));
        let unit = rng.random_range(1..=6);
        pb::SubmitCaseRequest {
            request_id: format!("bench-{run}-{i}"),
            channel: [
                tpb::Channel::Hotline,
                tpb::Channel::App,
                tpb::Channel::ServiceHall,
                tpb::Channel::Web,
            ][i % 4] as i32,
            channel_details: None,
            reporter: Some(pb::Reporter {
                anonymous: false,
                contact: Some(tpb::Contact {
                    name: format!("居民{}", i % 997),
                    phone: format!("1390931{:04}", i % 10_000),
                    preferred_method: tpb::ContactMethod::Phone as i32,
                    needs_appointed_visit: i.is_multiple_of(17),
                    ..Default::default()
                }),
            }),
            place: Some(tpb::Place {
                building: corpus.buildings[rng.random_range(0..corpus.buildings.len())].clone(),
                address: format!("{unit}单元{place}"),
                ..Default::default()
            }),
            category: corpus.categories[rng.random_range(0..corpus.categories.len())].clone(),
            title: format!("{place}{what}"),
            description: format!("{unit}单元{place}{what}，{since}。"),
            attachments: vec![],
            urgency: tpb::Urgency::Normal as i32,
            occur_time: None,
        }
    }

    async fn run(self) -> anyhow::Result<()> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(self.data_dir.join(crate::run::ADMIN_TOKEN_FILE))
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "no --token and no admin token in {}: {e}",
                        self.data_dir.display()
                    )
                })?,
        };
        let mut channels = Vec::new();
        for _ in 0..self.connections.max(1) {
            channels.push(
                Channel::from_shared(self.endpoint.clone())?
                    .connect()
                    .await?,
            );
        }
        let corpus = Arc::new(Self::corpus(channels[0].clone()).await?);
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

        // Warm-up, not counted.
        let warm = self
            .drive(&channels, &token, &corpus, &run, 0, self.warmup)
            .await;
        anyhow::ensure!(
            warm.errors == 0 || self.warmup == 0,
            "warm-up failed: {:?}",
            warm.first_error
        );
        let result = self
            .drive(&channels, &token, &corpus, &run, self.warmup, self.requests)
            .await;
        let elapsed = result.elapsed;
        let rss = self.server_pid.and_then(peak_rss_kib);

        let h = &result.latency;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let rate = result.ok as f64 / elapsed.as_secs_f64();
        if self.json {
            say!(
                "{}",
                serde_json::json!({
                    "requests": self.requests, "concurrency": self.concurrency, "connections": self.connections,
                    "ok": result.ok, "errors": result.errors, "seconds": elapsed.as_secs_f64(),
                    "rate": rate, "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
                    "max_ms": h.max() as f64 / 1000.0, "server_peak_rss_kib": rss,
                })
            );
        } else {
            say!(
                "SubmitCase: {} requests, {} in flight over {} connection(s)",
                self.requests,
                self.concurrency,
                self.connections
            );
            say!("  ok {}   errors {}", result.ok, result.errors);
            if let Some(e) = &result.first_error {
                say!("  first error: {e}");
            }
            say!(
                "  throughput  {rate:.0} cases/s over {:.2} s",
                elapsed.as_secs_f64()
            );
            say!(
                "  latency     p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
                ms(0.5),
                ms(0.9),
                ms(0.99),
                h.max() as f64 / 1000.0
            );
            if let Some(kib) = rss {
                say!(
                    "  server peak resident memory {:.1} MiB",
                    kib as f64 / 1024.0
                );
            }
        }
        anyhow::ensure!(result.errors == 0, "{} requests failed", result.errors);
        Ok(())
    }

    async fn drive(
        &self,
        channels: &[Channel],
        token: &str,
        corpus: &Arc<Corpus>,
        run: &str,
        offset: usize,
        count: usize,
    ) -> Outcome {
        // Every request is built before the clock starts, so the load tool's own work does not
        // compete with the server for the machine's cores while it is measured.
        let mut rng = StdRng::seed_from_u64(offset as u64);
        let requests: Arc<Vec<pb::SubmitCaseRequest>> = Arc::new(
            (0..count)
                .map(|i| Self::request(corpus, run, offset + i, &mut rng))
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for w in 0..self.concurrency.max(1) {
            let mut client = IntakeClient::with_interceptor(
                channels[w % channels.len()].clone(),
                BearerToken::new(token),
            );
            let next = next.clone();
            let requests = requests.clone();
            workers.push(tokio::spawn(async move {
                let mut out = Outcome::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let req = requests[i].clone();
                    let t = Instant::now();
                    match client.submit_case(req).await {
                        Ok(_) => {
                            out.ok += 1;
                            let _ = out.latency.record(t.elapsed().as_micros() as u64);
                        }
                        Err(status) => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| {
                                format!("{:?}: {}", status.code(), status.message())
                            });
                        }
                    }
                }
                out
            }));
        }
        let mut total = Outcome::new();
        for w in workers {
            if let Ok(o) = w.await {
                total.ok += o.ok;
                total.errors += o.errors;
                let _ = total.latency.add(&o.latency);
                if total.first_error.is_none() {
                    total.first_error = o.first_error;
                }
            }
        }
        total.elapsed = start.elapsed();
        total
    }
}

pub(crate) struct Outcome {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    latency: Histogram<u64>,
    elapsed: std::time::Duration,
}

impl Outcome {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            elapsed: std::time::Duration::ZERO,
        }
    }
}

/// A process's peak resident set (VmHWM), in KiB, from /proc.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl SqliteFloor {
    async fn run(self) -> anyhow::Result<()> {
        use sqlx::{ConnectOptions, Connection, Executor, sqlite::SqliteConnectOptions};
        std::fs::create_dir_all(&self.dir)?;
        let path = self
            .dir
            .join(format!("floor-{}.db", uuid::Uuid::new_v4().simple()));
        let sync = match self.synchronous {
            SyncArg::Full => sqlx::sqlite::SqliteSynchronous::Full,
            SyncArg::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        };
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sync)
            .connect()
            .await?;
        conn.execute("CREATE TABLE rows (id TEXT PRIMARY KEY, create_time INTEGER NOT NULL, body TEXT NOT NULL)")
            .await?;
        let body = "x".repeat(900);
        let start = Instant::now();
        for i in 0..self.rows {
            let mut tx = conn.begin().await?;
            sqlx::query("INSERT INTO rows (id, create_time, body) VALUES ($1, $2, $3)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(i as i64)
                .bind(&body)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        let elapsed = start.elapsed();
        conn.close().await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let rate = self.rows as f64 / elapsed.as_secs_f64();
        if self.json {
            say!(
                "{}",
                serde_json::json!({"rows": self.rows, "seconds": elapsed.as_secs_f64(), "rate": rate})
            );
        } else {
            say!(
                "SQLite floor: {} rows, one per transaction: {rate:.0} rows/s over {:.2} s",
                self.rows,
                elapsed.as_secs_f64()
            );
        }
        Ok(())
    }
}
