//! Routing: every case dispatched to the lowest competent level or outside unit, under one
//! of the five dispositions (immediate, committed, supplement, escalated, referred) or handed
//! to an emergency line, with a deadline — by declarative rules that explain every decision.
//!
//! Owns the registry of units (grids, communities, street offices, district departments and
//! outside units), each case's route and assignments, the partner agencies' desks, and the
//! deputies' liaison stations. Serves `minqing.routing.v1.Routing`,
//! `minqing.routing.v1.UnitDesk`, `minqing.liaison.v1.LiaisonStations`, its event feed and
//! token management. Follows intake's feed: routes every `CaseSubmitted`, resumes cases
//! waiting for papers on `CaseSupplemented`, cancels on `CaseWithdrawn`.
//!
//! Every change emits its event in the same transaction (minqing/routing/v1/events.proto and
//! minqing/liaison/v1/events.proto).

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod convert;
pub mod directory;
pub mod dispatch;
pub mod domain;
pub mod flow;
pub mod grpc;
pub mod import;
pub mod knowledge;
pub mod liaison_store;
pub mod rules;
pub mod store;
pub mod sweeper;
pub mod workdays;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::RoutingConfig;
use minqing_kit::{
    auth::TokensService,
    feed::{Consumer, ConsumerOptions, EventFeedService, FeedSource},
    server::GrpcServer,
    service::{ServiceEnv, Started, peer_channel},
};
use minqing_proto::minqing::{
    liaison::v1::liaison_stations_server::LiaisonStationsServer,
    routing::v1::{routing_server::RoutingServer, unit_desk_server::UnitDeskServer},
};

/// The service's name: its database, schema and feed source.
pub const NAME: &str = "routing";

/// Who start-up work acts as.
const SYSTEM_ACTOR: &str = "system:routing";

/// Opens routing's database, loads its rules and units, follows intake's feed, and serves on
/// `listener`.
pub async fn start(
    env: &ServiceEnv,
    config: RoutingConfig,
    listener: TcpListener,
) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
    let intake_url = env.peer("intake", &config.intake_url);
    let intake = peer_channel(&intake_url)?;
    let db = env
        .open_db(NAME, config.database_url.as_deref(), config.max_connections)
        .await?;
    db.migrate(&store::MIGRATIONS)
        .await
        .context("migrating the routing database")?;

    let knowledge = knowledge::KnowledgeCache::new(
        knowledge::Source::Intake(intake.clone()),
        Duration::from_secs(config.catalogue_refresh_secs),
    );
    let source = config
        .rules_path
        .as_ref()
        .map_or_else(|| "builtin:sample".to_string(), |p| p.display().to_string());
    let text = match &config.rules_path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rule file {}", path.display()))?,
        None => rules::SAMPLE.to_string(),
    };
    let now = env.clock.now_micros();
    let rule_set = rules::RuleSet::parse(&text, &source, now, None).map_err(|problems| {
        anyhow::anyhow!(
            "the rule file {source} was refused:\n  {}",
            problems.join("\n  ")
        )
    })?;
    let app = Arc::new(app::App::new(
        db.clone(),
        rule_set,
        knowledge,
        env.clock.clone(),
        config.clone(),
    ));
    app.record_load(&app.rules(), SYSTEM_ACTOR).await?;
    seed_units(&app, &config).await?;
    app.refresh_directory().await?;

    let limit = env.common.server.max_message_bytes;
    let mut server = GrpcServer::new(NAME);
    server
        .add(RoutingServer::new(grpc::RoutingApi(app.clone())).max_decoding_message_size(limit))
        .add(
            UnitDeskServer::new(grpc::DeskApi {
                app: app.clone(),
                shutdown: env.shutdown.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add(
            LiaisonStationsServer::new(grpc::LiaisonApi {
                app: app.clone(),
                intake: grpc::IntakePeer {
                    channel: intake.clone(),
                    token: env.service_token.clone(),
                },
            })
            .max_decoding_message_size(limit),
        )
        .add(EventFeedService::new(db.clone(), env.shutdown.clone()).into_server(limit))
        .add(TokensService::new(env.tokens.clone()).into_server(limit));

    let addr = listener.local_addr()?;
    let ctx = env.serve_context();
    let mut tasks = vec![tokio::spawn(async move {
        server.serve(listener, ctx).await.context("routing server")
    })];

    let mut opts = ConsumerOptions::new(dispatch::CONSUMER);
    opts.kinds = dispatch::kinds();
    let consumer = Consumer::new(
        db.clone(),
        FeedSource::Grpc {
            channel: intake,
            token: env.service_token.clone(),
        },
        dispatch::Dispatcher { app: app.clone() },
        opts,
    );
    let shutdown = env.shutdown.clone();
    tasks.push(tokio::spawn(async move {
        consumer.run(shutdown).await;
        Ok(())
    }));
    let (a, s) = (app.clone(), env.shutdown.clone());
    tasks.push(tokio::spawn(async move {
        sweeper::run(a, s).await;
        Ok(())
    }));
    let (a, s) = (app.clone(), env.shutdown.clone());
    tasks.push(tokio::spawn(async move {
        refresh_directory(a, s).await;
        Ok(())
    }));
    if config.rules_path.is_some() && config.rules_watch_ms > 0 {
        let (a, s) = (app.clone(), env.shutdown.clone());
        tasks.push(tokio::spawn(async move {
            watch_rules(a, s).await;
            Ok(())
        }));
    }
    tracing::info!(%addr, rules = app.rules().rules.len(), units = app.directory.current().len(), "routing serving");
    Ok(Started {
        name: NAME,
        addr,
        db,
        tasks,
    })
}

/// Loads the seed units into an empty registry (the sample city's by default).
async fn seed_units(app: &app::App, config: &RoutingConfig) -> anyhow::Result<()> {
    if store::count_units(&app.db).await? > 0 {
        return Ok(());
    }
    let (name, text) = match &config.seed_units_path {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the units file {}", path.display()))?,
        ),
        None if config.seed_sample_units => ("units.toml".into(), import::SAMPLE_UNITS.to_string()),
        None => return Ok(()),
    };
    let units = import::parse_file(&name, &text)
        .map_err(|e| anyhow::anyhow!("the units file {name} was refused: {e}"))?;
    let count = units.len();
    grpc::seed(app, SYSTEM_ACTOR, units).await?;
    tracing::info!(units = count, from = %name, "units registry seeded");
    Ok(())
}

/// Re-reads the units when told they changed, and every `directory_refresh_ms` to see other
/// replicas' changes.
async fn refresh_directory(app: Arc<app::App>, shutdown: CancellationToken) {
    let every = Duration::from_millis(app.config.directory_refresh_ms);
    loop {
        tokio::select! {
            () = app.directory_changed.notified() => {},
            () = tokio::time::sleep(every) => {},
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = app.refresh_directory().await {
            tracing::warn!(error = %e, "cannot re-read the units; keeping the directory held");
        }
    }
}

/// Reloads the rule file when it changes on disk; a refused file leaves the rules in force.
async fn watch_rules(app: Arc<app::App>, shutdown: CancellationToken) {
    let every = Duration::from_millis(app.config.rules_watch_ms);
    let Some(path) = app.config.rules_path.clone() else {
        return;
    };
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shutdown.cancelled() => return,
        }
        let now = modified(&path);
        if now == last {
            continue;
        }
        last = now;
        match app.reload_rules("system:routing-rules-watch").await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("rule file touched but unchanged"),
            Err(e) => {
                tracing::error!(error = %e, "the changed rule file was refused; the rules in force stay")
            }
        }
    }
}
