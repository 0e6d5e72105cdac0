//! Matching: the menu-style service (菜单式服务) — volunteers, teams and partner organisations
//! (共建单位); needs published as a community's menu, from communities or from cases routing
//! judged suitable for neighbours or volunteers; claims; the best candidates for one need
//! (with reasons) and an optimal assignment for a batch (a min-cost flow); the assignment
//! lifecycle from offer to rating; and service records.
//!
//! Serves `minqing.matching.v1.Volunteers`, `Needs`, `Matching`, `ServiceRecords` and its
//! event feed. Every change emits its event (see `events.proto`) in the same transaction.

#![forbid(unsafe_code)]

pub mod calendar;
pub mod config;
pub mod domain;
pub mod error;
pub mod flow;
pub mod grpc;
pub mod index;
pub mod ops;
pub mod plan;
pub mod pool;
pub mod rank;
pub mod routing;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::MatchingConfig;
use minqing_kit::{
    feed::{Consumer, ConsumerOptions, EventFeedService, FeedSource},
    server::GrpcServer,
    service::{ServiceEnv, Started, peer_channel},
};
use minqing_proto::minqing::matching::v1::{
    matching_server::MatchingServer, needs_server::NeedsServer,
    service_records_server::ServiceRecordsServer, volunteers_server::VolunteersServer,
};

/// The service's name: its database, schema and feed source.
pub const NAME: &str = "matching";

/// Opens matching's database, loads the volunteer pool, and serves on `listener`.
pub async fn start(
    env: &ServiceEnv,
    config: MatchingConfig,
    listener: TcpListener,
) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
    let gazetteer = match &config.places_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the gazetteer {}", path.display()))?;
            minqing_intake::places::Gazetteer::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => minqing_intake::places::Gazetteer::sample(),
    };
    let gazetteer = Arc::new(gazetteer);
    let db = env
        .open_db(NAME, config.database_url.as_deref(), config.max_connections)
        .await?;
    db.migrate(&store::MIGRATIONS)
        .await
        .context("migrating the matching database")?;
    let calendar = calendar::Calendar::new(config.utc_offset_minutes);
    let index = Arc::new(
        index::Index::load(db.clone(), gazetteer.clone(), calendar, env.clock.clone())
            .await
            .context("loading the volunteer pool")?,
    );
    let (audit, audit_writer) =
        minqing_kit::audit::AuditLog::start(db.clone(), env.clock.clone(), env.shutdown.clone());
    let ctx = Arc::new(ops::Ctx {
        db: db.clone(),
        index: index.clone(),
        gazetteer,
        config: Arc::new(config.clone()),
        calendar,
        clock: env.clock.clone(),
        audit,
    });
    let limit = env.common.server.max_message_bytes;
    let mut server = GrpcServer::new(NAME);
    server
        .add(
            VolunteersServer::new(grpc::VolunteersApi(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        .add(NeedsServer::new(grpc::NeedsApi(ctx.clone())).max_decoding_message_size(limit))
        .add(MatchingServer::new(grpc::MatchingApi(ctx.clone())).max_decoding_message_size(limit))
        .add(
            ServiceRecordsServer::new(grpc::RecordsApi(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        // Events carry no personal data (volunteers' is cleared), so subscriptions are not audited.
        .add(EventFeedService::new(db.clone(), env.shutdown.clone()).into_server(limit))
        .add(minqing_kit::audit::AuditService::new(db.clone()).into_server(limit));

    let addr = listener.local_addr()?;
    let serve_ctx = env.serve_context();
    let mut tasks = vec![
        tokio::spawn(async move {
            server
                .serve(listener, serve_ctx)
                .await
                .context("matching server")
        }),
        audit_writer,
    ];
    let shutdown = env.shutdown.clone();
    tasks.push(tokio::spawn(async move {
        index.follow(shutdown).await;
        Ok(())
    }));
    let shutdown = env.shutdown.clone();
    let sweeper = ctx.clone();
    tasks.push(tokio::spawn(async move {
        ops::sweep(sweeper, shutdown).await;
        Ok(())
    }));
    if config.consume_routing {
        let source = FeedSource::Grpc {
            channel: peer_channel(&env.peer("routing", &config.routing_url))?,
            token: env.service_token.clone(),
        };
        let mut opts = ConsumerOptions::new(routing::CONSUMER);
        opts.kinds = routing::kinds();
        opts.pace = env.common.storage.background_pace();
        let consumer = Consumer::new(
            db.clone(),
            source,
            routing::FromRouting { ctx: ctx.clone() },
            opts,
        );
        let shutdown = env.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        }));
    }
    tracing::info!(%addr, "matching serving");
    Ok(Started {
        name: NAME,
        addr,
        db,
        tasks,
    })
}
