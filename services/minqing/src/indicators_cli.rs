//! The CLI for supervision's indicators and public disclosure: `minqing indicators …` and
//! `minqing disclosure …`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use tonic::{codegen::InterceptedService, transport::Channel};

use crate::{
    cli::ClientArgs,
    client::{CallError, connect, time},
};
use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::supervision::v1::{
    self as pb, disclosure_client::DisclosureClient, indicators_client::IndicatorsClient,
};

type Authed = InterceptedService<Channel, BearerToken>;

/// Where supervision listens, and who is asking.
#[derive(Debug, Clone, Args)]
pub struct SupervisionArgs {
    /// Supervision's address.
    #[arg(
        long,
        env = "MINQING_SUPERVISION_ENDPOINT",
        default_value = "http://127.0.0.1:7404",
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

impl SupervisionArgs {
    async fn channel(&self) -> anyhow::Result<(Channel, BearerToken)> {
        connect(&ClientArgs {
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            data_dir: self.data_dir.clone(),
        })
        .await
    }

    async fn indicators(&self) -> anyhow::Result<IndicatorsClient<Authed>> {
        let (c, t) = self.channel().await?;
        Ok(IndicatorsClient::with_interceptor(c, t))
    }

    async fn disclosure(&self) -> anyhow::Result<DisclosureClient<Channel>> {
        Ok(DisclosureClient::new(self.channel().await?.0))
    }
}

/// A period's length.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// One day.
    Day,
    /// Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
    /// A calendar quarter.
    Quarter,
    /// A calendar year.
    Year,
}

/// A dimension.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dim {
    /// Catalogue item.
    Category,
    /// Handling unit.
    Unit,
    /// Intake channel.
    Channel,
}

fn period(kind: Kind, date: &str) -> pb::Period {
    let kind = match kind {
        Kind::Day => pb::PeriodKind::Day,
        Kind::Week => pb::PeriodKind::Week,
        Kind::Month => pb::PeriodKind::Month,
        Kind::Quarter => pb::PeriodKind::Quarter,
        Kind::Year => pb::PeriodKind::Year,
    };
    pb::Period {
        kind: kind as i32,
        date: date.into(),
    }
}

fn dim(d: Option<Dim>) -> i32 {
    (match d {
        None => pb::Dimension::Unspecified,
        Some(Dim::Category) => pb::Dimension::Category,
        Some(Dim::Unit) => pb::Dimension::Unit,
        Some(Dim::Channel) => pb::Dimension::Channel,
    }) as i32
}

fn show(label: &str, f: &pb::Figures) {
    say!(
        "{label:<28} received {:>7}  answered on time {:>5.1}%  resolved {:>5.1}%  satisfied {:>5.1}% (mean {:.2}, {} rated)  overdue now {}  handling avg {:.1} h, p90 {:.1} h",
        f.received,
        f.response_rate * 100.0,
        f.resolution_rate * 100.0,
        f.satisfaction_rate * 100.0,
        f.mean_rating,
        f.rated,
        f.overdue_now,
        f.average_handling_seconds as f64 / 3600.0,
        f.p90_handling_seconds as f64 / 3600.0,
    );
}

/// `minqing indicators …`.
#[derive(Debug, Subcommand)]
pub enum IndicatorsCommand {
    /// A place's figures for a period.
    Get {
        /// A place code (district, street, community or grid).
        place: String,
        /// The period's length.
        #[arg(long, value_enum, default_value = "month")]
        period: Kind,
        /// Any day of the period, YYYY-MM-DD (city time).
        #[arg(long)]
        date: String,
        /// Break the figures down by this dimension.
        #[arg(long, value_enum)]
        by: Option<Dim>,
        /// Only cases with this value of --filter-dim.
        #[arg(long, value_enum, requires = "value")]
        filter_dim: Option<Dim>,
        /// The filter's value (a catalogue item, "units/{id}" or "CHANNEL_HOTLINE").
        #[arg(long, default_value = "")]
        value: String,
        #[command(flatten)]
        args: SupervisionArgs,
    },
    /// Recompute every rollup from the feeds' first events (city admin).
    Rebuild {
        #[command(flatten)]
        args: SupervisionArgs,
    },
    /// The deputies' report of a liaison station or a district.
    Report {
        /// A liaison station, as intake records it.
        #[arg(long, default_value = "")]
        station: String,
        /// A district code.
        #[arg(long, default_value = "")]
        district: String,
        /// The period's length.
        #[arg(long, value_enum, default_value = "month")]
        period: Kind,
        /// Any day of the period, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        #[command(flatten)]
        args: SupervisionArgs,
    },
    /// Systemic problems (hot spots) raised in a district.
    Problems {
        /// The district's code.
        district: String,
        #[command(flatten)]
        args: SupervisionArgs,
    },
}

impl IndicatorsCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            IndicatorsCommand::Get {
                place,
                period: kind,
                date,
                by,
                filter_dim,
                value,
                args,
            } => {
                let r = args
                    .indicators()
                    .await?
                    .get_indicators(pb::GetIndicatorsRequest {
                        place,
                        period: Some(period(kind, &date)),
                        filter_dimension: dim(filter_dim),
                        filter_value: value,
                        group_by: dim(by),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{} from {} to {}", r.place, r.start_date, r.end_date);
                show("total", &r.total.unwrap_or_default());
                for g in &r.groups {
                    show(
                        &g.value,
                        g.figures.as_ref().unwrap_or(&pb::Figures::default()),
                    );
                }
            }
            IndicatorsCommand::Rebuild { args } => {
                let r = args
                    .indicators()
                    .await?
                    .rebuild_indicators(pb::RebuildIndicatorsRequest {})
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "rebuilt from {} events: {} cases, {} rollup rows, {} differed from the incremental rollups",
                    r.events,
                    r.cases,
                    r.rollup_rows,
                    r.differing_rows
                );
            }
            IndicatorsCommand::Report {
                station,
                district,
                period: kind,
                date,
                args,
            } => {
                let r = args
                    .indicators()
                    .await?
                    .get_deputy_report(pb::GetDeputyReportRequest {
                        liaison_station: station,
                        district,
                        period: Some(period(kind, &date)),
                        max_cases: 0,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{}{} from {} to {}",
                    r.liaison_station,
                    r.district,
                    r.start_date,
                    r.end_date
                );
                show("all cases", &r.figures.unwrap_or_default());
                show(
                    "raised at liaison stations",
                    &r.liaison_figures.unwrap_or_default(),
                );
                for c in &r.cases {
                    say!(
                        "  {}  {}  {}  {}  received {}  {}{}",
                        c.case,
                        c.liaison_station,
                        c.deputy,
                        c.category,
                        time(&c.receive_time),
                        c.outcome,
                        if c.answer.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", c.answer)
                        }
                    );
                }
                if r.truncated {
                    say!("  (more cases than shown)");
                }
            }
            IndicatorsCommand::Problems { district, args } => {
                let mut client = args.indicators().await?;
                let mut page_token = String::new();
                loop {
                    let page = client
                        .list_systemic_problems(pb::ListSystemicProblemsRequest {
                            district: district.clone(),
                            page_size: 100,
                            page_token: page_token.clone(),
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for p in &page.problems {
                        say!(
                            "{}  {}  {}  {} reports within {} h  raised {}",
                            p.name,
                            p.place,
                            p.category,
                            p.case_count,
                            p.window_hours,
                            time(&p.raise_time)
                        );
                    }
                    page_token = page.next_page_token;
                    if page_token.is_empty() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `minqing disclosure …` (no token needed).
#[derive(Debug, Subcommand)]
pub enum DisclosureCommand {
    /// The public list of a place's cases.
    Cases {
        /// A district, street or community code.
        place: String,
        /// Only this catalogue item.
        #[arg(long, default_value = "")]
        category: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        args: SupervisionArgs,
    },
    /// A place's public figures for a period.
    Summary {
        /// A district, street or community code.
        place: String,
        /// The period's length.
        #[arg(long, value_enum, default_value = "month")]
        period: Kind,
        /// Any day of the period, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        #[command(flatten)]
        args: SupervisionArgs,
    },
}

impl DisclosureCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            DisclosureCommand::Cases {
                place,
                category,
                limit,
                args,
            } => {
                let mut client = args.disclosure().await?;
                let mut page_token = String::new();
                let mut shown = 0;
                while shown < limit {
                    let page = client
                        .list_public_cases(pb::ListPublicCasesRequest {
                            place: place.clone(),
                            category: category.clone(),
                            page_size: (limit - shown).min(200) as i32,
                            page_token: page_token.clone(),
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for c in &page.cases {
                        say!(
                            "{}  {} {}  {}  {}  received {}  answered {}{}",
                            c.reference,
                            c.community,
                            c.community_name,
                            c.category,
                            c.state,
                            c.receive_date,
                            if c.answer_date.is_empty() {
                                "-"
                            } else {
                                &c.answer_date
                            },
                            if c.answer_summary.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", c.answer_summary)
                            }
                        );
                    }
                    shown += page.cases.len();
                    page_token = page.next_page_token;
                    if page_token.is_empty() {
                        break;
                    }
                }
            }
            DisclosureCommand::Summary {
                place,
                period: kind,
                date,
                args,
            } => {
                let r = args
                    .disclosure()
                    .await?
                    .get_public_summary(pb::GetPublicSummaryRequest {
                        place,
                        period: Some(period(kind, &date)),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{} from {} to {}", r.place, r.start_date, r.end_date);
                show("total", &r.figures.unwrap_or_default());
                for g in &r.by_category {
                    show(
                        &g.value,
                        g.figures.as_ref().unwrap_or(&pb::Figures::default()),
                    );
                }
            }
        }
        Ok(())
    }
}
