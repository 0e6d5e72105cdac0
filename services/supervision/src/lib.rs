//! Supervision: every case on a working-day clock until the resident has an answer and has
//! rated it. It owns the working-day calendars of the cities (weekends, public holidays and
//! make-up working days as data, with working hours), and — from the event feeds of intake,
//! routing and matching — each case's clock, the warnings before its deadline and the
//! escalations after it, the replies to residents, and their ratings.
//!
//! Serves `minqing.supervision.v1.Calendars`, `Clocks`, `Replies`, `Ratings` and its event
//! feed. Every change emits its event
//! (see `events.proto`) in the same transaction.

#![forbid(unsafe_code)]

pub mod app;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod flow;
pub mod grpc;
pub mod indicators;
pub mod outlets;
pub mod replan;
pub mod replies;
pub mod store;
pub mod templates;
pub mod timers;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::SupervisionConfig;
use minqing_kit::{
    feed::{Consumer, ConsumerOptions, EventFeedService, FeedSource},
    server::GrpcServer,
    service::{ServiceEnv, Started, peer_channel},
};
use minqing_proto::minqing::supervision::v1::{
    calendars_server::CalendarsServer, clocks_server::ClocksServer,
    disclosure_server::DisclosureServer, ratings_server::RatingsServer,
    replies_server::RepliesServer,
};

/// The service's name: its database, schema and feed source.
pub const NAME: &str = "supervision";

/// Registers every gRPC service supervision serves: the one place to add a new API.
pub fn services(server: &mut GrpcServer, ctx: &Arc<app::Ctx>, env: &ServiceEnv) {
    let limit = env.common.server.max_message_bytes;
    server
        .add(CalendarsServer::new(grpc::CalendarsApi(ctx.clone())).max_decoding_message_size(limit))
        .add(ClocksServer::new(grpc::ClocksApi(ctx.clone())).max_decoding_message_size(limit))
        .add(RepliesServer::new(grpc::RepliesApi(ctx.clone())).max_decoding_message_size(limit))
        .add(RatingsServer::new(grpc::RatingsApi(ctx.clone())).max_decoding_message_size(limit))
        .add(indicators::indicators_server(ctx, env).max_decoding_message_size(limit))
        .add(
            DisclosureServer::new(grpc::disclosure::DisclosureApi(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        // Events carry no personal data, so subscriptions are not audited.
        .add(EventFeedService::new(ctx.db.clone(), env.shutdown.clone()).into_server(limit))
        .add(minqing_kit::audit::AuditService::new(ctx.db.clone()).into_server(limit));
}

/// Opens supervision's database, loads the calendars and the due-time queue, follows intake's
/// and routing's feeds, and serves on `listener`.
pub async fn start(
    env: &ServiceEnv,
    config: SupervisionConfig,
    listener: TcpListener,
) -> anyhow::Result<Started> {
    let outlets = outlets::Outlets::from_config(&config.outlets, config.webhook_url.as_deref())
        .map_err(anyhow::Error::msg)?;
    start_with_outlets(env, config, listener, outlets).await
}

/// [`start`] with the outlets given (an embedder's own SMS gateway, or a test's recorder).
pub async fn start_with_outlets(
    env: &ServiceEnv,
    config: SupervisionConfig,
    listener: TcpListener,
    outlets: outlets::Outlets,
) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
    let db = env
        .open_db(NAME, config.database_url.as_deref(), config.max_connections)
        .await?;
    let ctx = context(db.clone(), config.clone(), env.clock.clone(), outlets).await?;
    let loaded = timers::load(&ctx).await.context("loading the timers")?;
    tracing::info!(timers = loaded, "due-time queue loaded");
    let mut server = GrpcServer::new(NAME);
    services(&mut server, &ctx, env);

    let addr = listener.local_addr()?;
    let serve_ctx = env.serve_context();
    let mut tasks = vec![tokio::spawn(async move {
        server
            .serve(listener, serve_ctx)
            .await
            .context("supervision server")
    })];
    let (c, shutdown) = (ctx.clone(), env.shutdown.clone());
    tasks.push(tokio::spawn(async move {
        timers::run(c, shutdown).await;
        Ok(())
    }));
    let (c, shutdown) = (ctx.clone(), env.shutdown.clone());
    tasks.push(tokio::spawn(async move {
        delivery::run(c, shutdown).await;
        Ok(())
    }));
    let (c, shutdown) = (ctx.clone(), env.shutdown.clone());
    tasks.push(tokio::spawn(async move {
        replan::run(c, shutdown).await;
        Ok(())
    }));
    if config.follow_feeds {
        let feeds = [
            (
                "intake",
                &config.intake_url,
                flow::FROM_INTAKE,
                flow::intake_kinds(),
            ),
            (
                "routing",
                &config.routing_url,
                flow::FROM_ROUTING,
                flow::routing_kinds(),
            ),
        ];
        for (peer, url, name, kinds) in feeds {
            let source = FeedSource::Grpc {
                channel: peer_channel(&env.peer(peer, url))?,
                token: env.service_token.clone(),
            };
            let mut opts = ConsumerOptions::new(name);
            opts.kinds = kinds;
            opts.pace = env.common.storage.background_pace();
            let shutdown = env.shutdown.clone();
            if peer == "intake" {
                let consumer =
                    Consumer::new(db.clone(), source, flow::FromIntake(ctx.clone()), opts);
                tasks.push(tokio::spawn(async move {
                    consumer.run(shutdown).await;
                    Ok(())
                }));
            } else {
                let consumer =
                    Consumer::new(db.clone(), source, flow::FromRouting(ctx.clone()), opts);
                tasks.push(tokio::spawn(async move {
                    consumer.run(shutdown).await;
                    Ok(())
                }));
            }
        }
    }
    if config.follow_feeds {
        tasks.extend(indicators::spawn(&ctx, env)?);
    }
    if config.follow_feeds && config.follow_matching {
        let source = FeedSource::Grpc {
            channel: peer_channel(&env.peer("matching", &config.matching_url))?,
            token: env.service_token.clone(),
        };
        let mut opts = ConsumerOptions::new(flow::FROM_MATCHING);
        opts.kinds = flow::matching_kinds();
        opts.pace = env.common.storage.background_pace();
        let consumer = Consumer::new(db.clone(), source, flow::FromMatching(ctx.clone()), opts);
        let shutdown = env.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        }));
    }
    tracing::info!(%addr, "supervision serving");
    Ok(Started {
        name: NAME,
        addr,
        db,
        tasks,
    })
}

/// Supervision's state over an open database: migrates it, reads the calendar file, the
/// gazetteer and the reply templates, and loads the calendars. The due-time queue starts
/// empty ([`timers::load`] fills it).
pub async fn context(
    db: minqing_kit::db::Db,
    config: SupervisionConfig,
    clock: minqing_kit::time::Clock,
    outlets: outlets::Outlets,
) -> anyhow::Result<Arc<app::Ctx>> {
    config.validate().map_err(anyhow::Error::msg)?;
    let templates = match &config.templates_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the reply templates {}", path.display()))?;
            templates::Templates::new(Some(&text))
        }
        None => templates::Templates::new(None),
    }
    .map_err(anyhow::Error::msg)?;
    let calendar_text = match &config.calendar_path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the calendar file {}", path.display()))?,
        None => calendar::SAMPLE.to_string(),
    };
    let calendars = calendar::parse_file(&calendar_text).map_err(anyhow::Error::msg)?;
    let gazetteer = match &config.places_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the gazetteer {}", path.display()))?;
            minqing_intake::places::Gazetteer::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => minqing_intake::places::Gazetteer::sample(),
    };
    db.migrate(&store::MIGRATIONS)
        .await
        .context("migrating the supervision database")?;
    let book = app::CalendarBook::load(&db, &clock, calendars)
        .await
        .context("loading the calendars")?;
    Ok(Arc::new(app::Ctx {
        db,
        policy: config.policy(),
        config,
        clock,
        calendars: book,
        gazetteer: Arc::new(gazetteer),
        timers: timers::TimerQueue::default(),
        templates,
        outlets,
        deliveries_ready: tokio::sync::Notify::new(),
        replan_wake: tokio::sync::Notify::new(),
    }))
}
