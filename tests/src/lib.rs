//! The end-to-end harness: starts the suite's services for real — each on its own loopback
//! socket (port 0), over a fresh database on either backend — exactly as `minqing up` does,
//! and hands out typed gRPC clients. The clock is manual, so tests move time instead of
//! waiting for it.

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, net::SocketAddr};

use chrono::TimeZone;
use minqing_kit::{
    auth::{NewToken, Role, TokenStore},
    config::CommonConfig,
    db::{Backend, Db},
    feed::BearerToken,
    service::{ServiceEnv, Started},
    testing::TestDatabase,
    time::Clock,
};
use minqing_proto::minqing::{
    events::v1::event_feed_client::EventFeedClient,
    intake::v1::{catalogue_client::CatalogueClient, intake_client::IntakeClient},
    liaison::v1::liaison_stations_client::LiaisonStationsClient,
    matching::v1::{
        matching_client::MatchingClient, needs_client::NeedsClient,
        service_records_client::ServiceRecordsClient, volunteers_client::VolunteersClient,
    },
    routing::v1::{routing_client::RoutingClient, unit_desk_client::UnitDeskClient},
    supervision::v1::{
        calendars_client::CalendarsClient, clocks_client::ClocksClient,
        ratings_client::RatingsClient, replies_client::RepliesClient,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::{codegen::InterceptedService, transport::Channel};

/// A client that sends a bearer token.
pub type Authed = InterceptedService<Channel, BearerToken>;

/// The running suite.
pub struct Suite {
    /// The database(s) behind it.
    pub test_db: TestDatabase,
    /// The token store.
    pub tokens: TokenStore,
    /// The city admin's secret.
    pub admin: String,
    /// The suite's service token.
    pub service_token: String,
    /// The shared clock.
    pub clock: Clock,
    /// Cancelled to stop.
    pub shutdown: CancellationToken,
    /// The started services by name.
    pub services: BTreeMap<&'static str, Started>,
}

/// Which services a suite runs, and how each is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Intake's config.
    pub intake: minqing_intake::IntakeConfig,
    /// Routing's config; `None` to run without routing.
    pub routing: Option<minqing_routing::RoutingConfig>,
    /// Matching's config; `None` to run without matching.
    pub matching: Option<minqing_matching::MatchingConfig>,
    /// Supervision's config; `None` to run without supervision.
    pub supervision: Option<minqing_supervision::SupervisionConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            intake: minqing_intake::IntakeConfig::default(),
            // Overdue acceptances are looked for often, so tests moving the clock see them soon.
            routing: Some(minqing_routing::RoutingConfig {
                sweep_interval_ms: 50,
                ..Default::default()
            }),
            matching: Some(minqing_matching::MatchingConfig::default()),
            // The timer and reply workers look at the manual clock often, so tests moving it
            // see warnings and replies soon.
            supervision: Some(minqing_supervision::SupervisionConfig {
                timer_tick_ms: 20,
                ..Default::default()
            }),
        }
    }
}

/// Intake alone: for tests of intake that read its state without routing changing it.
pub fn intake_only(o: &mut Options) {
    o.routing = None;
    o.matching = None;
    o.supervision = None;
    o.intake.follow_routing = false;
}

impl Suite {
    /// Starts every service; `None` when PostgreSQL was asked for and is not available.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_opts(backend, |_| {}).await
    }

    /// Starts every service, letting `configure` adjust the intake config first.
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut minqing_intake::IntakeConfig),
    ) -> Option<Self> {
        Self::start_opts(backend, |o| configure(&mut o.intake)).await
    }

    /// Starts every service, letting the closures adjust intake's and matching's configs.
    pub async fn start_full(
        backend: Backend,
        configure: impl FnOnce(&mut minqing_intake::IntakeConfig),
        configure_matching: impl FnOnce(&mut minqing_matching::MatchingConfig),
    ) -> Option<Self> {
        Self::start_opts(backend, |o| {
            configure(&mut o.intake);
            if let Some(m) = o.matching.as_mut() {
                configure_matching(m);
            }
        })
        .await
    }

    /// Starts the services `configure` leaves in, configured as it says.
    pub async fn start_opts(
        backend: Backend,
        configure: impl FnOnce(&mut Options),
    ) -> Option<Self> {
        let mut options = Options::default();
        configure(&mut options);
        if options.matching.is_none()
            && let Some(s) = options.supervision.as_mut()
        {
            s.follow_matching = false;
        }
        let test_db = TestDatabase::new(backend).await?;
        let auth_db = Db::connect(&test_db.options("auth"))
            .await
            .expect("auth db");
        let tokens = TokenStore::open(auth_db).await.expect("token store");
        let admin = tokens.ensure_admin().await.unwrap().expect("fresh store");
        let (_, service_token) = tokens.issue_service_token("tests").await.unwrap();
        let clock = Clock::manual(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
                .single()
                .expect("a valid time"),
        );
        let shutdown = CancellationToken::new();
        let common = CommonConfig {
            data_dir: test_db.data_path(),
            database_url: test_db.postgres_url.clone().unwrap_or_default(),
            ..CommonConfig::default()
        };
        let mut common = common;
        common.storage.max_connections = 8;

        let intake_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routing_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let matching_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let supervision_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peers = BTreeMap::new();
        peers.insert(
            "intake".to_string(),
            format!("http://{}", intake_listener.local_addr().unwrap()),
        );
        // Only services that run are peers: a test may stand one in at its configured address.
        if options.routing.is_some() {
            peers.insert(
                "routing".to_string(),
                format!("http://{}", routing_listener.local_addr().unwrap()),
            );
        }
        if options.matching.is_some() {
            peers.insert(
                "matching".to_string(),
                format!("http://{}", matching_listener.local_addr().unwrap()),
            );
        }
        if options.supervision.is_some() {
            peers.insert(
                "supervision".to_string(),
                format!("http://{}", supervision_listener.local_addr().unwrap()),
            );
        }
        let env = ServiceEnv {
            common,
            tokens: tokens.clone(),
            shutdown: shutdown.clone(),
            clock: clock.clone(),
            service_token: service_token.clone(),
            peers,
        };
        let intake = minqing_intake::start(&env, options.intake, intake_listener)
            .await
            .expect("intake starts");
        let mut services = BTreeMap::new();
        services.insert("intake", intake);
        if let Some(config) = options.routing {
            let routing = minqing_routing::start(&env, config, routing_listener)
                .await
                .expect("routing starts");
            services.insert("routing", routing);
        }
        if let Some(config) = options.matching {
            let matching = minqing_matching::start(&env, config, matching_listener)
                .await
                .expect("matching starts");
            services.insert("matching", matching);
        }
        if let Some(config) = options.supervision {
            let supervision = minqing_supervision::start(&env, config, supervision_listener)
                .await
                .expect("supervision starts");
            services.insert("supervision", supervision);
        }
        Some(Self {
            test_db,
            tokens,
            admin,
            service_token,
            clock,
            shutdown,
            services,
        })
    }

    /// Where a service listens.
    pub fn addr(&self, service: &str) -> SocketAddr {
        self.services[service].addr
    }

    /// A service's database.
    pub fn db(&self, service: &str) -> &Db {
        &self.services[service].db
    }

    /// A connected channel to a service.
    pub async fn channel(&self, service: &str) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr(service)))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    /// A token for `principal` with `role`, limited to `place` and `unit` when given.
    pub async fn token(
        &self,
        principal: &str,
        role: Role,
        place: Option<&str>,
        unit: Option<&str>,
    ) -> String {
        self.tokens
            .create(NewToken {
                principal: principal.into(),
                role,
                place_scope: place.unwrap_or_default().into(),
                unit_scope: unit.unwrap_or_default().into(),
                description: String::new(),
                ttl: None,
            })
            .await
            .unwrap()
            .1
    }

    /// An intake client using `token`.
    pub async fn intake(&self, token: &str) -> IntakeClient<Authed> {
        IntakeClient::with_interceptor(self.channel("intake").await, BearerToken::new(token))
    }

    /// Matching's volunteer, team and organisation client using `token`.
    pub async fn volunteers(&self, token: &str) -> VolunteersClient<Authed> {
        VolunteersClient::with_interceptor(self.channel("matching").await, BearerToken::new(token))
    }

    /// Matching's needs, menus and claims client using `token`.
    pub async fn needs(&self, token: &str) -> NeedsClient<Authed> {
        NeedsClient::with_interceptor(self.channel("matching").await, BearerToken::new(token))
    }

    /// Matching's candidates, plans and assignments client using `token`.
    pub async fn matching(&self, token: &str) -> MatchingClient<Authed> {
        MatchingClient::with_interceptor(self.channel("matching").await, BearerToken::new(token))
    }

    /// Matching's service records client using `token`.
    pub async fn records(&self, token: &str) -> ServiceRecordsClient<Authed> {
        ServiceRecordsClient::with_interceptor(
            self.channel("matching").await,
            BearerToken::new(token),
        )
    }

    /// A routing client using `token`.
    pub async fn routing(&self, token: &str) -> RoutingClient<Authed> {
        RoutingClient::with_interceptor(self.channel("routing").await, BearerToken::new(token))
    }

    /// A unit desk client using `token` (scoped to the unit).
    pub async fn desk(&self, token: &str) -> UnitDeskClient<Authed> {
        UnitDeskClient::with_interceptor(self.channel("routing").await, BearerToken::new(token))
    }

    /// A liaison stations client using `token`.
    pub async fn liaison(&self, token: &str) -> LiaisonStationsClient<Authed> {
        LiaisonStationsClient::with_interceptor(
            self.channel("routing").await,
            BearerToken::new(token),
        )
    }

    /// Supervision's calendars client using `token`.
    pub async fn calendars(&self, token: &str) -> CalendarsClient<Authed> {
        CalendarsClient::with_interceptor(
            self.channel("supervision").await,
            BearerToken::new(token),
        )
    }

    /// Supervision's clocks client using `token`.
    pub async fn clocks(&self, token: &str) -> ClocksClient<Authed> {
        ClocksClient::with_interceptor(self.channel("supervision").await, BearerToken::new(token))
    }

    /// Supervision's replies client using `token`.
    pub async fn replies(&self, token: &str) -> RepliesClient<Authed> {
        RepliesClient::with_interceptor(self.channel("supervision").await, BearerToken::new(token))
    }

    /// Supervision's ratings client using `token`.
    pub async fn ratings(&self, token: &str) -> RatingsClient<Authed> {
        RatingsClient::with_interceptor(self.channel("supervision").await, BearerToken::new(token))
    }

    /// The public catalogue client (no token).
    pub async fn catalogue(&self) -> CatalogueClient<Channel> {
        CatalogueClient::new(self.channel("intake").await)
    }

    /// A client of `service`'s event feed, with the service token.
    pub async fn feed(&self, service: &str) -> EventFeedClient<Authed> {
        EventFeedClient::with_interceptor(
            self.channel(service).await,
            BearerToken::new(&self.service_token),
        )
    }

    /// Stops every service and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (_, started) in std::mem::take(&mut self.services) {
            for task in started.tasks {
                let _ = task.await;
            }
            started.db.close().await;
        }
    }
}
