//! A kit server on port 0 with the event feed and token management, for tests.

use std::net::SocketAddr;

use minqing_kit::{
    auth::{TokenStore, TokensService},
    config::ServerConfig,
    db::{Backend, Db, Migrations, Tx},
    error::StoreError,
    feed::{self, EventFeedService, EventMeta},
    server::{GrpcServer, ServeContext},
    testing::TestDatabase,
};
use minqing_proto::minqing::events::v1::{self as pb, event_feed_client::EventFeedClient};
use prost::{Message, Name};
use tokio_util::sync::CancellationToken;
use tonic::{Streaming, transport::Channel};

pub const NO_MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};

pub struct Harness {
    pub test_db: TestDatabase,
    pub producer: Db,
    pub tokens: TokenStore,
    pub addr: SocketAddr,
    pub admin_token: String,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// `None` when PostgreSQL was asked for and is not available (the test is skipped).
    pub async fn start(backend: Backend, config: ServerConfig) -> Option<Self> {
        let test_db = TestDatabase::new(backend).await?;
        let producer = test_db.db("producer", &NO_MIGRATIONS).await;
        let auth_db = Db::connect(&test_db.options("auth")).await.unwrap();
        let tokens = TokenStore::open(auth_db).await.unwrap();
        let admin_token = tokens.ensure_admin().await.unwrap().expect("first start");
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = GrpcServer::new("test");
        server.add(
            EventFeedService::new(producer.clone(), shutdown.clone())
                .into_server(config.max_message_bytes),
        );
        server.add(TokensService::new(tokens.clone()).into_server(config.max_message_bytes));
        let ctx = ServeContext {
            config,
            tokens: tokens.clone(),
            shutdown: shutdown.clone(),
        };
        let server = tokio::spawn(async move {
            server.serve(listener, ctx).await.unwrap();
        });
        Some(Self {
            test_db,
            producer,
            tokens,
            addr,
            admin_token,
            shutdown,
            server,
        })
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A subscription over gRPC to the producer's feed after `after`, of `kinds` (every kind
    /// when empty), `max_batch` events a response.
    pub async fn subscribe(
        &self,
        token: &str,
        after: &str,
        kinds: &[&str],
        max_batch: i32,
    ) -> Streaming<pb::SubscribeResponse> {
        EventFeedClient::new(self.channel().await)
            .subscribe(authed(
                pb::SubscribeRequest {
                    after: after.into(),
                    kinds: kinds.iter().map(|k| k.to_string()).collect(),
                    max_batch,
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Appends an empty `M` about `subject` in `tx`, by `actor`: an event whose kind is `M`'s name.
pub async fn append_empty<M: Message + Name + Default>(
    tx: &mut Tx,
    actor: &str,
    subject: &str,
) -> Result<String, StoreError> {
    feed::append(tx, &EventMeta::current(actor), subject, &M::default(), 0).await
}
