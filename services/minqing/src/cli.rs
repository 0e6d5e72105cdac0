//! Command-line arguments.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

/// Minqing: a city's civic-request pipeline over gRPC.
#[derive(Debug, Parser)]
#[command(name = "minqing", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every service in one process (SQLite under the data directory unless
    /// --database-url names a PostgreSQL database).
    Up(ServerArgs),
    /// Start one service alone, or a few of them in one process (`minqing serve intake
    /// routing`); each finds the others through its peers' addresses.
    Serve {
        /// Which services.
        #[arg(value_enum, required = true, num_args = 1..)]
        services: Vec<crate::services::Service>,
        #[command(flatten)]
        args: ServerArgs,
    },
    /// Cases: submit, get, list, supplement, withdraw, timeline.
    #[command(subcommand)]
    Case(Box<crate::client::CaseCommand>),
    /// The public service catalogue.
    #[command(subcommand)]
    Catalogue(crate::client::CatalogueCommand),
    /// The gazetteer of places.
    #[command(subcommand)]
    Places(crate::client::PlacesCommand),
    /// Volunteers: CSV import, list.
    #[command(subcommand)]
    Volunteer(crate::matching_cli::VolunteerCommand),
    /// Needs (the menu): list, candidates, batch plan.
    #[command(subcommand)]
    Need(crate::matching_cli::NeedCommand),
    /// Bearer tokens (city admin).
    #[command(subcommand)]
    Token(crate::client::TokenCommand),
    /// The audit log of personal-data reads (city admin).
    #[command(subcommand)]
    Audit(crate::client::AuditCommand),
    /// Units that handle cases: list, show, import (TOML or CSV), activate.
    #[command(subcommand)]
    Unit(crate::routing_cli::UnitCommand),
    /// Routing rules: show, list, reload, check a file, explain a route.
    #[command(subcommand)]
    Rules(crate::routing_cli::RulesCommand),
    /// A case's routing and staff actions: get, transfer, escalate, decide, refer.
    #[command(subcommand)]
    Route(crate::routing_cli::RouteCommand),
    /// A unit's desk: pull assignments, accept, reject, progress, resolve, ask for papers.
    #[command(subcommand)]
    Desk(crate::routing_cli::DeskCommand),
    /// Working-day calendars: show, count a deadline, mark holidays and make-up days.
    #[command(subcommand)]
    Calendar(crate::supervision_cli::CalendarCommand),
    /// A case's clock (deadline, warnings, escalations, history), or open clocks.
    #[command(subcommand)]
    Clock(crate::supervision_cli::ClockCommand),
    /// Replies to residents and appointed visits.
    #[command(subcommand)]
    Reply(crate::supervision_cli::ReplyCommand),
    /// Rate an answered case for its reporter (once per case).
    Rate(crate::supervision_cli::RateCommand),
    /// Supervision's indicators, deputies' reports and systemic problems.
    #[command(subcommand)]
    Indicators(crate::indicators_cli::IndicatorsCommand),
    /// Public disclosure: anonymised cases and figures (no token needed).
    #[command(subcommand)]
    Disclosure(crate::indicators_cli::DisclosureCommand),
    /// Load tools.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

/// Options for commands that run servers.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A TOML config file (every setting has a default; `MINQING_*` variables override it).
    #[arg(long, short, env = "MINQING_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the embedded store and the admin token live [default: ./minqing-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A postgres:// URL: run on PostgreSQL instead of the embedded SQLite.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Options for commands that call a running server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The service's address.
    #[arg(
        long,
        env = "MINQING_ENDPOINT",
        default_value = "http://127.0.0.1:7401",
        global = true
    )]
    pub endpoint: String,
    /// A bearer token [default: the admin token in the data directory].
    #[arg(long, env = "MINQING_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Where to find the admin token when --token is not given.
    #[arg(long, default_value = "./minqing-data", global = true)]
    pub data_dir: PathBuf,
}

impl Cli {
    /// Whether the command runs best on one thread: the end-to-end load tool shares the
    /// machine with the suite it measures, and on one thread it spends less of it (no
    /// wake-ups handed between worker threads) while still driving thousands of calls a
    /// second (BENCHMARKS.md, Routing).
    pub fn single_threaded(&self) -> bool {
        matches!(
            self.command,
            Command::Bench(crate::bench::BenchCommand::Route(_))
        )
    }

    /// Runs the command; the exit code says how it went (64 for unusable configuration).
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Up(args) => crate::run::up(args).await,
            Command::Serve { services, args } => crate::run::serve(services, args).await,
            Command::Case(c) => c.run().await,
            Command::Catalogue(c) => c.run().await,
            Command::Places(c) => c.run().await,
            Command::Volunteer(c) => c.run().await,
            Command::Need(c) => c.run().await,
            Command::Token(c) => c.run().await,
            Command::Audit(c) => c.run().await,
            Command::Unit(c) => c.run().await,
            Command::Rules(c) => c.run().await,
            Command::Route(c) => c.run().await,
            Command::Desk(c) => c.run().await,
            Command::Calendar(c) => c.run().await,
            Command::Clock(c) => c.run().await,
            Command::Reply(c) => c.run().await,
            Command::Rate(c) => c.run().await,
            Command::Indicators(c) => c.run().await,
            Command::Disclosure(c) => c.run().await,
            Command::Bench(c) => c.run().await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                let code = err
                    .downcast_ref::<minqing_kit::config::ConfigError>()
                    .map(|_| minqing_kit::config::EXIT_CONFIG as u8)
                    .or_else(|| err.downcast_ref::<crate::client::CallError>().map(|_| 1))
                    .unwrap_or(1);
                eprintln!("minqing: {err:#}");
                ExitCode::from(code)
            }
        }
    }
}
