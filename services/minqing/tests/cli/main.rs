//! The real `minqing` binary, as a user runs it: `up` prints where everything listens and a
//! fresh admin token, the CLI talks to it, Ctrl-C stops it cleanly, a restart keeps every
//! case, and an unusable configuration exits with code 64.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use minqing_kit::{db::Backend, testing::TestDatabase};

const BIN: &str = env!("CARGO_BIN_EXE_minqing");

/// A running `minqing up` (or `serve`), killed if a test fails half way.
struct Running {
    child: Child,
    intake: String,
    ops: String,
    banner: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], data_dir: &Path, extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("MINQING_INTAKE__LISTEN", "127.0.0.1:0")
        .env("MINQING_ROUTING__LISTEN", "127.0.0.1:0")
        .env("MINQING_MATCHING__LISTEN", "127.0.0.1:0")
        .env("MINQING_SUPERVISION__LISTEN", "127.0.0.1:0")
        .env("MINQING_HTTP_LISTEN", "127.0.0.1:0")
        .env("MINQING_LOG__FILTER", "warn")
        .env_remove("MINQING_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    if !banner.contains("Press Ctrl-C") {
        let _ = child.kill();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!(
            "`minqing {}` did not start:\n{banner}\n{stderr}",
            args.join(" ")
        );
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let find = |prefix: &str| {
        banner
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix(prefix)
                    .map(|rest| rest.trim_end_matches("/metrics").to_string())
            })
            .unwrap_or_else(|| panic!("no {prefix} address in the banner:\n{banner}"))
    };
    let intake = format!("http://{}", find("grpc://"));
    let ops = find("http://");
    Running {
        child,
        intake,
        ops,
        banner,
    }
}

fn cli(running: &Running, data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--endpoint", &running.intake])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("MINQING_TOKEN")
        .output()
        .expect("the CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("ops endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Ctrl-C, as a terminal sends it; returns the exit success and stderr.
fn interrupt(mut running: Running) -> (bool, String) {
    let pid = running.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let mut stderr = String::new();
    if let Some(mut e) = running.child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = running.child.wait().unwrap();
    (status.success(), stderr)
}

fn submit_args(title: &str) -> Vec<String> {
    [
        "case",
        "submit",
        "--category",
        "onsite-environment-02",
        "--building",
        "620102001001-g01-b01",
        "--title",
        title,
        "--description",
        "3号楼门口的路灯不亮了",
        "--name",
        "张三",
        "--phone",
        "13909310001",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn up_cli_stop_restart(extra_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["up"];
    args.extend_from_slice(extra_args);
    let running = start(&args, dir.path(), &[]);
    assert!(
        running.banner.contains("Minqing is up"),
        "{}",
        running.banner
    );
    // The admin token is printed once and kept (only) in the data directory, owner-only.
    let token_file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("mq_") && running.banner.contains(&token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is private");
    }

    let (ok, out, _) = cli(&running, dir.path(), &["catalogue", "classes"]);
    assert!(
        ok && out.contains("onsite") && out.contains("errand") && out.contains("online"),
        "{out}"
    );
    let submit: Vec<String> = submit_args("路灯不亮");
    let submit: Vec<&str> = submit.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&running, dir.path(), &submit);
    assert!(ok, "{out}{err}");
    let case = out.split_whitespace().next().unwrap().to_string();
    assert!(case.starts_with("cases/"), "{out}");
    let (ok, out, _) = cli(&running, dir.path(), &["case", "get", &case]);
    assert!(ok && out.contains("路灯不亮"), "{out}");
    // A refused submission says which fields are wrong, and fails.
    let (ok, _, err) = cli(
        &running,
        dir.path(),
        &[
            "case",
            "submit",
            "--category",
            "nope",
            "--title",
            "",
            "--description",
            "x",
            "--name",
            "a",
            "--phone",
            "13909310001",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("category") && err.contains("title") && err.contains("place"),
        "{err}"
    );
    // A bad token is refused.
    let bad = Command::new(BIN)
        .args([
            "case",
            "list",
            "--endpoint",
            &running.intake,
            "--token",
            "mq_wrong",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Unauthenticated"));

    // Operations endpoints.
    let (status, body) = http_get(&running.ops, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("rpc_server_duration"), "{body}");
    assert_eq!(http_get(&running.ops, "/healthz").0, 200);
    assert_eq!(http_get(&running.ops, "/readyz").0, 200);

    // Ctrl-C stops it cleanly.
    let (ok, stderr) = interrupt(running);
    assert!(ok, "clean exit: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");

    // Starting again keeps every case, and does not print a new admin token.
    let running = start(&args, dir.path(), &[]);
    assert!(
        running.banner.contains("generated at first start"),
        "{}",
        running.banner
    );
    assert!(!running.banner.contains(&token));
    let (ok, out, _) = cli(&running, dir.path(), &["case", "list"]);
    assert!(ok && out.contains(&case), "{out}");
    let (ok, _) = interrupt(running);
    assert!(ok);
}

#[test]
fn up_on_sqlite_serves_the_cli_stops_cleanly_and_keeps_cases() {
    up_cli_stop_restart(&[]);
}

#[test]
fn up_on_postgres_does_the_same() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDatabase::new(Backend::Postgres)) else {
        return;
    };
    let url = db.postgres_url.clone().unwrap();
    up_cli_stop_restart(&["--database-url", &url]);
    drop(db);
}

#[test]
fn serve_runs_one_service_alone() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&["serve", "intake"], dir.path(), &[]);
    assert!(running.banner.contains("intake"), "{}", running.banner);
    let (ok, out, _) = cli(
        &running,
        dir.path(),
        &["catalogue", "list", "--mode", "online"],
    );
    assert!(ok && out.lines().count() >= 4, "{out}");
    let (ok, _) = interrupt(running);
    assert!(ok);
}

#[test]
fn serve_runs_a_few_services_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    // Named in any order, started in the suite's order; the others stay off.
    let running = start(&["serve", "routing", "intake"], dir.path(), &[]);
    assert!(
        running.banner.contains("minqing.intake.v1.Intake")
            && running.banner.contains("minqing.routing.v1.Routing"),
        "{}",
        running.banner
    );
    assert!(
        !running.banner.contains("minqing.supervision.v1")
            && !running.banner.contains("minqing.matching.v1"),
        "{}",
        running.banner
    );
    // A case submitted to intake is routed by the routing service beside it, and intake
    // follows routing's feed: the case leaves the submitted state.
    let submit: Vec<String> = submit_args("路灯不亮");
    let submit: Vec<&str> = submit.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&running, dir.path(), &submit);
    assert!(ok, "{out}{err}");
    let case = out.split_whitespace().next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out, _) = cli(&running, dir.path(), &["case", "get", &case]);
        assert!(ok, "{out}");
        if !out
            .lines()
            .next()
            .unwrap_or_default()
            .contains(" submitted ")
        {
            last.clear();
            break;
        }
        last = out;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(last.is_empty(), "never routed: {last}");
    let (ok, _) = interrupt(running);
    assert!(ok);
}

fn exit_code(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_configuration_exits_64_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = exit_code(
        &["up"],
        &[("MINQING_SERVER__CONCURRENCY_LIMIT", "0")],
        dir.path(),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("concurrency_limit"), "{err}");
    let (code, err) = exit_code(&["up"], &[("MINQING_NO_SUCH_SETTING", "1")], dir.path());
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no_such_setting"), "{err}");
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "this is = = not toml").unwrap();
    let (code, err) = exit_code(
        &["up", "--config", bad_file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not valid TOML"), "{err}");
    let (code, err) = exit_code(&["up", "--database-url", "mysql://x"], &[], dir.path());
    assert_eq!(code, 64, "{err}");
    let (code, err) = exit_code(
        &["up"],
        &[("MINQING_INTAKE__CLUSTERS__MIN_TEXT_SIMILARITY", "7")],
        dir.path(),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("min_text_similarity"), "{err}");
    // Nothing was started or written for a refused configuration.
    assert!(!dir.path().join("intake.db").exists());
}

mod otlp {
    //! A stand-in OpenTelemetry collector (the collector is outside the suite): it records the
    //! spans and metric names the binary exports over OTLP/gRPC.

    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    };

    #[derive(Default, Clone)]
    pub struct Collector {
        pub spans: Arc<Mutex<Vec<(String, String)>>>,
        pub metrics: Arc<Mutex<Vec<String>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap();
            for rs in request.into_inner().resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        let trace: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        spans.push((trace, span.name));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let mut names = self.metrics.lock().unwrap();
            for rm in request.into_inner().resource_metrics {
                for sm in rm.scope_metrics {
                    names.extend(sm.metrics.into_iter().map(|m| m.name));
                }
            }
            Ok(tonic::Response::new(ExportMetricsServiceResponse {
                partial_success: None,
            }))
        }
    }

    pub async fn serve(collector: Collector) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[test]
fn traces_and_metrics_are_exported_by_otlp_with_the_callers_trace() {
    use minqing_proto::minqing::{intake::v1 as pb, r#type::v1 as tpb};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = otlp::Collector::default();
    let collector_addr = rt.block_on(otlp::serve(collector.clone()));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{collector_addr}");
    let running = start(
        &["up"],
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    );
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(running.intake.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::intake_client::IntakeClient::new(channel);
        let mut req = tonic::Request::new(pb::SubmitCaseRequest {
            request_id: "otlp-1".into(),
            channel: tpb::Channel::Hotline as i32,
            reporter: Some(pb::Reporter {
                anonymous: true,
                contact: None,
            }),
            place: Some(tpb::Place {
                district: "620102".into(),
                ..Default::default()
            }),
            category: "online-report-01".into(),
            title: "t".into(),
            description: "d".into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-01")
                .parse()
                .unwrap(),
        );
        client.submit_case(req).await.unwrap();
    });
    // Stopping flushes the exporters.
    let (ok, stderr) = interrupt(running);
    assert!(ok, "{stderr}");
    let spans = collector.spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .any(|(trace, name)| trace == trace_id && name.contains("SubmitCase")),
        "the server's span joined the caller's trace: {spans:?}\n{stderr}"
    );
    let metrics = collector.metrics.lock().unwrap().clone();
    assert!(
        metrics.iter().any(|m| m == "rpc.server.duration"),
        "{metrics:?}"
    );
}

#[test]
fn a_collector_that_is_down_costs_nothing_but_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        &["up"],
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
    );
    let (ok, out, _) = cli(&running, dir.path(), &["catalogue", "classes"]);
    assert!(ok && out.contains("onsite"));
    let (ok, stderr) = interrupt(running);
    assert!(ok, "{stderr}");
}

/// The address a service's banner line names (`  matching     grpc://…`).
fn service_addr(running: &Running, service: &str) -> String {
    running
        .banner
        .lines()
        .find(|l| l.split_whitespace().next() == Some(service))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("grpc://")))
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| panic!("no {service} line in the banner:\n{}", running.banner))
}

#[test]
fn volunteers_import_from_csv_with_progress_and_row_by_row_results() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&["up"], dir.path(), &[]);
    let matching = service_addr(&running, "matching");
    let csv = dir.path().join("volunteers.csv");
    std::fs::write(
        &csv,
        "external_id,display_name,name,phone,building,skills,languages,availability,weekly_hours,max_open_tasks,party_member,teams,offers,show_name\n\
         LH-0001,王师傅,王建国,13909310001,620102001001-g01-b01,elderly-care;first-aid@2027-05-01,zh,mon 18:00-21:00;sat 09:00-12:00,6,3,yes,,yes,yes\n\
         LH-0002,李阿姨,李秀英,13909310002,620102001001-g01-b02,tutoring,zh;en,wed 16:30-18:00,3,2,no,,yes,no\n\
         LH-0003,,赵强,123,nowhere,Bad Skill,zh,someday,x,1,no,,yes,no\n",
    )
    .unwrap();
    let import = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["volunteer", "import"])
            .arg(&csv)
            .args(extra)
            .args(["--endpoint", &matching])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("MINQING_TOKEN")
            .output()
            .expect("the CLI runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = import(&[]);
    assert!(!ok, "a failed row makes the import fail: {out}");
    assert!(
        out.contains("2 registered, 0 updated, 0 unchanged, 1 failed"),
        "{out}"
    );
    assert!(out.contains("line 4"), "{out}");
    // Again: nothing new; with --update-existing the rows are updated.
    let (_, out) = import(&[]);
    assert!(
        out.contains("0 registered, 0 updated, 2 unchanged, 1 failed"),
        "{out}"
    );
    let out = Command::new(BIN)
        .args([
            "volunteer",
            "list",
            "--skill",
            "elderly-care",
            "--endpoint",
            &matching,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("MINQING_TOKEN")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("王师傅") && !listed.contains("李阿姨"),
        "{listed}"
    );
    let (ok, _) = interrupt(running);
    assert!(ok);
}

#[test]
fn supervision_cli_shows_calendars_clocks_and_replies() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&["up"], dir.path(), &[]);
    assert!(
        running.banner.contains("minqing.supervision.v1.Calendars"),
        "{}",
        running.banner
    );
    let supervision = service_addr(&running, "supervision");
    let sup = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--endpoint", &supervision])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("MINQING_TOKEN")
            .output()
            .expect("the CLI runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = sup(&["calendar", "show", "--year", "2026"]);
    assert!(
        ok && out.contains("2026-10-01") && out.contains("2026-09-20"),
        "{out}{err}"
    );
    let (ok, out, err) = sup(&[
        "calendar",
        "deadline",
        "1",
        "--from",
        "2026-09-30T10:00:00+08:00",
    ]);
    assert!(ok && out.contains("2026-10-08 17:30"), "{out}{err}");
    let (ok, out, _) = sup(&["calendar", "mark", "2026-13-01", "nope"]);
    assert!(!ok, "{out}");
    let (ok, out, err) = sup(&["calendar", "mark", "2026-12-31", "city holiday"]);
    assert!(ok && out.contains("2026-12-31 marked"), "{out}{err}");

    // A case submitted through intake gets a clock; its reply record starts empty.
    let submit: Vec<String> = submit_args("路灯不亮");
    let submit: Vec<&str> = submit.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&running, dir.path(), &submit);
    assert!(ok, "{out}{err}");
    let case = out.split_whitespace().next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shown = String::new();
    while Instant::now() < deadline {
        let (ok, out, _) = sup(&["clock", "get", &case]);
        if ok && out.contains("running") {
            shown = out;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shown.contains("units/grid-620102001001-g01"), "{shown}");
    let (ok, out, err) = sup(&["clock", "list"]);
    assert!(ok && out.contains(&case), "{out}{err}");
    let (ok, out, err) = sup(&["reply", "list", &case]);
    assert!(ok && out.is_empty(), "{out}{err}");
    // Not answered yet: the rating is refused with the reason.
    let (ok, _, err) = sup(&[
        "rate",
        &case,
        "--handling",
        "5",
        "--staff",
        "5",
        "--phone",
        "13909310001",
    ]);
    assert!(!ok && err.contains("FailedPrecondition"), "{err}");
    let (ok, _) = interrupt(running);
    assert!(ok);
}
