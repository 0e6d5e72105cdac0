//! `minqing bench route`: the suite end to end. Cases are submitted to intake (closed loop at
//! N in flight, or open loop at a fixed rate) and each is timed from SubmitCase returning to
//! its assignment arriving on a partner unit's `PullAssignments` stream; the fully-routed
//! rate is the cases that arrived over the time from the first submission to the last
//! arrival.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::bench::SubmitBench;
use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::{
    intake::v1::{self as ipb, intake_client::IntakeClient},
    routing::v1::{self as pb, unit_desk_client::UnitDeskClient},
    r#type::v1 as tpb,
};

/// `minqing bench route`.
#[derive(Debug, Args)]
pub struct RouteBench {
    /// Intake's address.
    #[arg(long, default_value = "http://127.0.0.1:7401")]
    intake: String,
    /// Routing's address.
    #[arg(long, default_value = "http://127.0.0.1:7402")]
    routing: String,
    /// The admin token [default: the one in --data-dir].
    #[arg(long, env = "MINQING_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to find the admin token.
    #[arg(long, default_value = "./minqing-data")]
    data_dir: PathBuf,
    /// Cases to submit.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
    /// Cases per second, open loop; 0 for as fast as --concurrency allows (closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Calls in flight (closed loop), or at most in flight (open loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The partner unit whose stream is watched; every case is routed to it.
    #[arg(long, default_value = "lanzhou-utilities")]
    unit: String,
    /// The catalogue item submitted (the sample rules refer it to --unit, city-wide).
    #[arg(long, default_value = "onsite-environment-11")]
    category: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Timing {
    submitted: HashMap<String, Instant>,
    arrived: HashMap<String, Instant>,
    latency: Vec<u64>,
    first_submit: Option<Instant>,
    last_arrival: Option<Instant>,
}

impl Timing {
    fn pair(&mut self, case: &str) {
        if let (Some(s), Some(a)) = (self.submitted.get(case), self.arrived.get(case)) {
            // An arrival before the response was seen counts as no delay.
            self.latency
                .push(a.saturating_duration_since(*s).as_micros() as u64);
        }
    }
}

impl RouteBench {
    fn request(
        &self,
        corpus: &crate::bench::Corpus,
        run: &str,
        i: usize,
    ) -> ipb::SubmitCaseRequest {
        ipb::SubmitCaseRequest {
            request_id: format!("route-bench-{run}-{i}"),
            channel: tpb::Channel::Hotline as i32,
            channel_details: None,
            reporter: Some(ipb::Reporter {
                anonymous: false,
                contact: Some(tpb::Contact {
                    name: format!("居民{}", i % 997),
                    phone: format!("1390931{:04}", i % 10_000),
                    preferred_method: tpb::ContactMethod::Phone as i32,
                    ..Default::default()
                }),
            }),
            place: Some(tpb::Place {
                building: corpus.buildings[i % corpus.buildings.len()].clone(),
                ..Default::default()
            }),
            category: self.category.clone(),
            title: format!("停水 {run} #{i}"),
            description: format!(
                "楼里停水了，编号 {i}，请尽快处理。Water has been off since morning."
            ),
            attachments: vec![],
            urgency: tpb::Urgency::Normal as i32,
            occur_time: None,
        }
    }

    /// The desk's cursor now: read the backlog until it is quiet.
    async fn end_cursor(
        desk: &mut UnitDeskClient<tonic::codegen::InterceptedService<Channel, BearerToken>>,
        unit: &str,
    ) -> anyhow::Result<String> {
        let mut s = desk
            .pull_assignments(pb::PullAssignmentsRequest {
                unit: unit.into(),
                after: String::new(),
                max_batch: 500,
            })
            .await?
            .into_inner();
        let mut cursor = String::new();
        while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(500), s.next()).await
        {
            cursor = batch?.cursor;
        }
        Ok(cursor)
    }

    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
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
        let intake = Channel::from_shared(self.intake.clone())?.connect().await?;
        let routing = Channel::from_shared(self.routing.clone())?
            .connect()
            .await?;
        let corpus = SubmitBench::corpus(intake.clone()).await?;
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let unit = format!("units/{}", self.unit.trim_start_matches("units/"));
        let mut desk = UnitDeskClient::with_interceptor(routing, BearerToken::new(&token))
            .max_decoding_message_size(64 << 20);
        let after = Self::end_cursor(&mut desk, &unit).await?;
        let mut stream = desk
            .pull_assignments(pb::PullAssignmentsRequest {
                unit: unit.clone(),
                after,
                max_batch: 500,
            })
            .await?
            .into_inner();

        let timing = Arc::new(Mutex::new(Timing::default()));
        let received = Arc::new(AtomicUsize::new(0));
        let marker = format!("停水 {run} #");
        let watcher = {
            let timing = timing.clone();
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(Ok(batch)) = stream.next().await {
                    let now = Instant::now();
                    for item in batch.items {
                        let Some(a) = item.assignment else { continue };
                        let ours = item.kind == pb::DeskItemKind::Assigned as i32
                            && a.facts
                                .as_ref()
                                .is_some_and(|f| f.title.starts_with(&marker));
                        if !ours {
                            continue;
                        }
                        let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
                        t.arrived.insert(a.case.clone(), now);
                        t.last_arrival = Some(now);
                        t.pair(&a.case);
                        drop(t);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };

        let errors = Arc::new(AtomicUsize::new(0));
        let client = IntakeClient::with_interceptor(intake, BearerToken::new(&token));
        let this = Arc::new(self);
        let corpus = Arc::new(corpus);
        let limit = Arc::new(Semaphore::new(this.concurrency.max(1)));
        let start = Instant::now();
        timing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_submit = Some(start);
        let mut tasks = Vec::new();
        let open_loop = this.rate > 0.0;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / this.rate.max(1e-3)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..this.requests {
            if open_loop {
                tick.tick().await;
            }
            let permit = limit.clone().acquire_owned().await?;
            let (mut client, this, corpus, timing, errors, run) = (
                client.clone(),
                this.clone(),
                corpus.clone(),
                timing.clone(),
                errors.clone(),
                run.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let req = this.request(&corpus, &run, i);
                match client.submit_case(req).await {
                    Ok(case) => {
                        let now = Instant::now();
                        let name = case.into_inner().name;
                        let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
                        t.submitted.insert(name.clone(), now);
                        t.pair(&name);
                    }
                    Err(status) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first error: {:?}: {}", status.code(), status.message());
                        }
                    }
                }
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let submit_elapsed = start.elapsed();
        let ok = this.requests - errors.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < ok && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
        let t = timing.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for v in &t.latency {
            let _ = h.record((*v).max(1));
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let routed = received.load(Ordering::Relaxed);
        let span = t
            .last_arrival
            .map_or(submit_elapsed, |l| l.duration_since(start));
        let routed_rate = routed as f64 / span.as_secs_f64();
        let submit_rate = ok as f64 / submit_elapsed.as_secs_f64();
        if this.json {
            say!(
                "{}",
                serde_json::json!({
                    "requests": this.requests, "rate_target": this.rate, "concurrency": this.concurrency,
                    "submitted": ok, "errors": errors.load(Ordering::Relaxed), "routed": routed,
                    "submit_rate": submit_rate, "routed_rate": routed_rate,
                    "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
                })
            );
        } else {
            say!(
                "SubmitCase → {} PullAssignments: {} cases, {}",
                unit,
                this.requests,
                if open_loop {
                    format!("open loop at {:.0}/s", this.rate)
                } else {
                    format!("{} in flight", this.concurrency)
                }
            );
            say!(
                "  submitted {ok} ({submit_rate:.0}/s)   errors {}   routed and on the stream {routed}",
                errors.load(Ordering::Relaxed)
            );
            say!(
                "  fully routed {routed_rate:.0} cases/s over {:.2} s",
                span.as_secs_f64()
            );
            say!(
                "  submit-return → stream   p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
                ms(0.5),
                ms(0.9),
                ms(0.99),
                h.max() as f64 / 1000.0
            );
        }
        anyhow::ensure!(
            routed == ok,
            "{} of {ok} cases did not reach the stream within 60 s",
            ok - routed
        );
        Ok(())
    }
}
