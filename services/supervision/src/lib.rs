//! Supervision: every case on a working-day clock until the resident has an answer and has
//! rated it. It owns the working-day calendars of the cities (weekends, public holidays and
//! make-up working days as data, with working hours), and — from the event feeds of intake,
//! routing and matching — each case's clock, the warnings before its deadline and the
//! escalations after it, the replies to residents, and their ratings.
//!
//! Serves `minqing.supervision.v1.Calendars` and its event feed. Every change emits its event
//! (see `events.proto`) in the same transaction.

#![forbid(unsafe_code)]

pub mod app;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod indicators;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::SupervisionConfig;
use minqing_kit::{
    feed::EventFeedService,
    server::GrpcServer,
    service::{ServiceEnv, Started},
};
use minqing_proto::minqing::supervision::v1::{
    calendars_server::CalendarsServer, disclosure_server::DisclosureServer,
};

/// The service's name: its database, schema and feed source.
pub const NAME: &str = "supervision";

/// Registers every gRPC service supervision serves: the one place to add a new API.
pub fn services(server: &mut GrpcServer, ctx: &Arc<app::Ctx>, env: &ServiceEnv) {
    let limit = env.common.server.max_message_bytes;
    server
        .add(CalendarsServer::new(grpc::CalendarsApi(ctx.clone())).max_decoding_message_size(limit))
        .add(indicators::indicators_server(ctx, env).max_decoding_message_size(limit))
        .add(
            DisclosureServer::new(grpc::disclosure::DisclosureApi(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        // Events carry no personal data, so subscriptions are not audited.
        .add(EventFeedService::new(ctx.db.clone(), env.shutdown.clone()).into_server(limit))
        .add(minqing_kit::audit::AuditService::new(ctx.db.clone()).into_server(limit));
}

/// Opens supervision's database, loads the calendars, and serves on `listener`.
pub async fn start(
    env: &ServiceEnv,
    config: SupervisionConfig,
    listener: TcpListener,
) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
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
    let db = env
        .open_db(NAME, config.database_url.as_deref(), config.max_connections)
        .await?;
    db.migrate(&store::MIGRATIONS)
        .await
        .context("migrating the supervision database")?;
    let book = app::CalendarBook::load(&db, &env.clock, calendars)
        .await
        .context("loading the calendars")?;
    let ctx = Arc::new(app::Ctx {
        db: db.clone(),
        config: config.clone(),
        clock: env.clock.clone(),
        calendars: book,
        gazetteer: Arc::new(gazetteer),
    });
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
    if config.follow_feeds {
        tasks.extend(indicators::spawn(&ctx, env)?);
    }
    tracing::info!(%addr, "supervision serving");
    Ok(Started {
        name: NAME,
        addr,
        db,
        tasks,
    })
}
