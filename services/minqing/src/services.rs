//! The services `minqing` can run, and how each is configured and started.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use minqing_kit::{
    config::{ConfigError, Settings},
    service::{ServiceEnv, Started},
};

/// Config sections the services own (`[intake]`, …).
pub const SECTIONS: &[&str] = &["intake", "routing", "matching", "supervision"];

/// A service of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Cases from every channel, the public catalogue, duplicate clusters.
    Intake,
    /// Dispatch rules, units, partner agencies' desks, deputies' liaison stations.
    Routing,
    /// Volunteers, teams and partner organisations; the menu; matching; service records.
    Matching,
    /// Working-day calendars, case clocks, warnings and escalations, replies and ratings.
    Supervision,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: &[Service] = &[
        Service::Intake,
        Service::Routing,
        Service::Matching,
        Service::Supervision,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Intake => minqing_intake::NAME,
            Service::Routing => minqing_routing::NAME,
            Service::Matching => minqing_matching::NAME,
            Service::Supervision => minqing_supervision::NAME,
        }
    }

    /// What it serves, for the start-up banner.
    pub fn apis(self) -> &'static str {
        match self {
            Service::Intake => "minqing.intake.v1.Intake, minqing.intake.v1.Catalogue",
            Service::Routing => {
                "minqing.routing.v1.Routing, minqing.routing.v1.UnitDesk, minqing.liaison.v1.LiaisonStations"
            }
            Service::Matching => {
                "minqing.matching.v1.Volunteers, .Needs, .Matching, .ServiceRecords"
            }
            Service::Supervision => {
                "minqing.supervision.v1.Calendars, .Clocks, .Replies, .Ratings, .Indicators, .Disclosure"
            }
        }
    }

    /// Reads and checks its config section (a problem exits with code 64).
    pub fn check(self, settings: &Settings) -> Result<SocketAddr, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            section: Some(self.name().into()),
            message,
        };
        match self {
            Service::Intake => {
                let c: minqing_intake::IntakeConfig = settings.section(self.name())?;
                c.validate().map_err(invalid)?;
                Ok(c.listen)
            }
            Service::Routing => {
                let c: minqing_routing::RoutingConfig = settings.section(self.name())?;
                c.validate().map_err(invalid)?;
                Ok(c.listen)
            }
            Service::Matching => {
                let c: minqing_matching::MatchingConfig = settings.section(self.name())?;
                c.validate().map_err(invalid)?;
                Ok(c.listen)
            }
            Service::Supervision => {
                let c: minqing_supervision::SupervisionConfig = settings.section(self.name())?;
                c.validate().map_err(invalid)?;
                Ok(c.listen)
            }
        }
    }

    /// Starts it on `listener`.
    pub async fn start(
        self,
        env: &ServiceEnv,
        settings: &Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Started> {
        match self {
            Service::Intake => {
                minqing_intake::start(env, settings.section(self.name())?, listener).await
            }
            Service::Routing => {
                minqing_routing::start(env, settings.section(self.name())?, listener).await
            }
            Service::Matching => {
                minqing_matching::start(env, settings.section(self.name())?, listener).await
            }
            Service::Supervision => {
                minqing_supervision::start(env, settings.section(self.name())?, listener).await
            }
        }
    }
}
