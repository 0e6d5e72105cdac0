//! Intake: the case as the resident raised it, through every channel.
//!
//! Owns cases (idempotent submission, supplements, withdrawal, the resident-visible state and
//! timeline), the public service catalogue (fixed disclosure), the gazetteer of places, and
//! duplicate clusters. Serves `minqing.intake.v1.Intake`, `minqing.intake.v1.Catalogue`, its
//! event feed (`minqing.events.v1.EventFeed`) and token management.
//!
//! Every accepted change emits its event in the same transaction: `CaseSubmitted`,
//! `CaseSupplemented`, `CaseWithdrawn`, `CaseClustered`, `CaseUnclustered`,
//! `CaseStateChanged` (from routing's feed: the resident-visible state, see [`routed`]).

#![forbid(unsafe_code)]

pub mod catalogue;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod places;
pub mod routed;
pub mod store;
pub mod submit;

use std::sync::Arc;

use anyhow::Context as _;
use prost::Name;
use tokio::net::TcpListener;

pub use config::IntakeConfig;
use minqing_kit::{
    audit::{AuditLog, AuditService},
    auth::TokensService,
    feed::{Consumer, ConsumerOptions, EventFeedService, FeedSource},
    server::GrpcServer,
    service::{ServiceEnv, Started, peer_channel},
};
use minqing_proto::minqing::intake::v1::{
    self as pb, catalogue_server::CatalogueServer, intake_server::IntakeServer,
};

/// The service's name: its database, schema and feed source.
pub const NAME: &str = "intake";

/// Opens intake's database, loads its catalogue and gazetteer, and serves on `listener`.
pub async fn start(
    env: &ServiceEnv,
    config: IntakeConfig,
    listener: TcpListener,
) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
    let catalogue = match &config.catalogue_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the catalogue {}", path.display()))?;
            catalogue::Catalogue::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => catalogue::Catalogue::sample(),
    };
    let gazetteer = match &config.places_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the gazetteer {}", path.display()))?;
            places::Gazetteer::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => places::Gazetteer::sample(),
    };
    let db = env
        .open_db(NAME, config.database_url.as_deref(), config.max_connections)
        .await?;
    db.migrate(&store::MIGRATIONS)
        .await
        .context("migrating the intake database")?;
    // Intake's two consumers run in lanes of their own, each able to append only the kinds it
    // writes, so that a reader of intake's feed wanting none of those kinds (routing's
    // dispatcher, which takes what residents submit) does not wait for their batches, which
    // take up to a second of events each. Named before the feed is served, so every
    // subscriber passes them.
    let cluster_lane = config
        .clusters
        .enabled
        .then(|| db.lane(cluster::LANE, &cluster::lane_kinds()))
        .transpose()?;
    let routed_lane = config
        .follow_routing
        .then(|| db.lane(routed::LANE, &routed::lane_kinds()))
        .transpose()?;

    let (audit, audit_writer) =
        AuditLog::start(db.clone(), env.clock.clone(), env.shutdown.clone());
    let state = Arc::new(grpc::State {
        db: db.clone(),
        audit: audit.clone(),
        catalogue: Arc::new(catalogue),
        gazetteer: Arc::new(gazetteer),
        clock: env.clock.clone(),
        submitter: submit::Submitter::start(db.clone()),
    });
    let limit = env.common.server.max_message_bytes;
    let mut server = GrpcServer::new(NAME);
    server
        .add(IntakeServer::new(grpc::IntakeApi(state.clone())).max_decoding_message_size(limit))
        .add(CatalogueServer::new(grpc::CatalogueApi(state)).max_decoding_message_size(limit))
        .add(
            EventFeedService::new(db.clone(), env.shutdown.clone())
                .with_audit(audit)
                .into_server(limit),
        )
        .add(AuditService::new(db.clone()).into_server(limit))
        .add(TokensService::new(env.tokens.clone()).into_server(limit));

    let addr = listener.local_addr()?;
    let ctx = env.serve_context();
    let mut tasks = vec![
        tokio::spawn(async move { server.serve(listener, ctx).await.context("intake server") }),
        audit_writer,
    ];
    if config.clusters.enabled {
        let mut opts = ConsumerOptions::new(cluster::CONSUMER);
        opts.kinds = vec![pb::CaseSubmitted::full_name()];
        opts.pace = env.common.storage.background_pace();
        opts.lane = cluster_lane;
        let consumer = Consumer::new(
            db.clone(),
            FeedSource::Local(db.clone()),
            cluster::Clusterer {
                config: config.clusters.clone(),
                clock: env.clock.clone(),
                db: db.clone(),
            },
            opts,
        );
        let shutdown = env.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        }));
    }
    if config.follow_routing {
        let mut opts = ConsumerOptions::new(routed::CONSUMER);
        opts.kinds = routed::kinds();
        opts.pace = env.common.storage.background_pace();
        opts.lane = routed_lane;
        let consumer = Consumer::new(
            db.clone(),
            FeedSource::Grpc {
                channel: peer_channel(&env.peer("routing", &config.routing_url))?,
                token: env.service_token.clone(),
            },
            routed::Routed {
                clock: env.clock.clone(),
            },
            opts,
        );
        let shutdown = env.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            consumer.run(shutdown).await;
            Ok(())
        }));
    }
    tracing::info!(%addr, "intake serving");
    Ok(Started {
        name: NAME,
        addr,
        db,
        tasks,
    })
}
