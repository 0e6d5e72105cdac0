//! The CLI for supervision: the working-day calendar (show, count a deadline, mark holidays
//! and make-up days), a case's clock, its replies and appointed visits, and ratings.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::{codegen::InterceptedService, transport::Channel};

use crate::client::CallError;
use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::supervision::v1::{
    self as pb, calendars_client::CalendarsClient, clocks_client::ClocksClient,
    ratings_client::RatingsClient, replies_client::RepliesClient,
};

/// Where supervision listens and who calls it.
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

type Authed = InterceptedService<Channel, BearerToken>;

async fn channel(args: &SupervisionArgs) -> anyhow::Result<(Channel, BearerToken)> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(args.data_dir.join(crate::run::ADMIN_TOKEN_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    };
    let channel = Channel::from_shared(args.endpoint.clone())?
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach {}: {e} (is `minqing up` running?)",
                args.endpoint
            )
        })?;
    Ok((channel, BearerToken::new(&token)))
}

async fn calendars(args: &SupervisionArgs) -> anyhow::Result<CalendarsClient<Authed>> {
    let (c, t) = channel(args).await?;
    Ok(CalendarsClient::with_interceptor(c, t))
}

/// "cases/…" from a name or a bare id.
fn case_name(s: &str) -> String {
    if s.starts_with("cases/") {
        s.to_string()
    } else {
        format!("cases/{s}")
    }
}

/// A timestamp in China Standard Time, for people.
fn local(ts: &Option<prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".into();
    };
    let Some(offset) = chrono::FixedOffset::east_opt(8 * 3600) else {
        return "-".into();
    };
    chrono::DateTime::from_timestamp(ts.seconds, 0)
        .map(|t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn parse_time(s: &str) -> anyhow::Result<prost_types::Timestamp> {
    if s == "now" {
        let now = chrono::Utc::now();
        return Ok(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: 0,
        });
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| anyhow::anyhow!("{s:?} is not a time like 2026-11-23T10:00:00+08:00: {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

/// `minqing calendar …`.
#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Show a city's calendar: working hours, holidays and make-up working days.
    Show {
        /// The city code.
        #[arg(default_value = "6201")]
        city: String,
        /// Only days of this year.
        #[arg(long)]
        year: Option<i32>,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// The deadline N working days after a time, and the working time between two times.
    Deadline {
        /// Working days.
        days: i32,
        /// From when (RFC 3339, or "now").
        #[arg(long, default_value = "now")]
        from: String,
        /// Also count the working time from --from to this time.
        #[arg(long)]
        until: Option<String>,
        /// The city code.
        #[arg(long, default_value = "6201")]
        city: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// Mark a date a holiday (or, with --workday, a make-up working day).
    Mark {
        /// The date, YYYY-MM-DD.
        date: String,
        /// What it is.
        description: String,
        /// A make-up working day rather than a holiday.
        #[arg(long)]
        workday: bool,
        /// The city code.
        #[arg(long, default_value = "6201")]
        city: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// Make a date ordinary again.
    Clear {
        /// The date, YYYY-MM-DD.
        date: String,
        /// The city code.
        #[arg(long, default_value = "6201")]
        city: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
}

impl CalendarCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            CalendarCommand::Show { city, year, client } => {
                let c = calendars(&client)
                    .await?
                    .get_calendar(pb::GetCalendarRequest {
                        name: format!("calendars/{city}"),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                let hours: Vec<String> = c
                    .working_hours
                    .iter()
                    .map(|h| format!("{}-{}", h.start, h.end))
                    .collect();
                say!(
                    "{}  {}  (UTC{:+}h)",
                    c.name,
                    c.display_name,
                    c.utc_offset_minutes / 60
                );
                say!("working hours  {}", hours.join(", "));
                for d in c
                    .special_days
                    .iter()
                    .filter(|d| year.is_none_or(|y| d.date.starts_with(&y.to_string())))
                {
                    let kind = if d.kind == pb::DayKind::Workday as i32 {
                        "work"
                    } else {
                        "off "
                    };
                    say!("{}  {kind}  {}", d.date, d.description);
                }
            }
            CalendarCommand::Deadline {
                days,
                from,
                until,
                city,
                client,
            } => {
                let start = parse_time(&from)?;
                let end = until.as_deref().map(parse_time).transpose()?;
                let r = calendars(&client)
                    .await?
                    .compute_deadline(pb::ComputeDeadlineRequest {
                        name: format!("calendars/{city}"),
                        start_time: Some(start),
                        working_days: days,
                        end_time: end,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{days} working days from {} end {}",
                    local(&Some(start)),
                    local(&r.due_time)
                );
                if end.is_some() {
                    say!(
                        "working time until {}: {} h {} min over {} working days",
                        local(&end),
                        r.working_minutes / 60,
                        r.working_minutes % 60,
                        r.working_days_between
                    );
                }
            }
            CalendarCommand::Mark {
                date,
                description,
                workday,
                city,
                client,
            } => {
                let kind = if workday {
                    pb::DayKind::Workday
                } else {
                    pb::DayKind::Holiday
                };
                let c = calendars(&client)
                    .await?
                    .update_calendar(pb::UpdateCalendarRequest {
                        name: format!("calendars/{city}"),
                        upsert_days: vec![pb::SpecialDay {
                            date: date.clone(),
                            kind: kind as i32,
                            description,
                        }],
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{date} marked on {} ({})", c.name, c.etag);
            }
            CalendarCommand::Clear { date, city, client } => {
                let c = calendars(&client)
                    .await?
                    .update_calendar(pb::UpdateCalendarRequest {
                        name: format!("calendars/{city}"),
                        remove_dates: vec![date.clone()],
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{date} is ordinary again on {} ({})", c.name, c.etag);
            }
        }
        Ok(())
    }
}

/// `minqing clock …`.
#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// A case's clock and its history.
    Get {
        /// The case (cases/… or its id).
        case: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// Open clocks, soonest deadline first.
    List {
        /// Only here (a place code).
        #[arg(long, default_value = "")]
        place: String,
        /// Only overdue ones.
        #[arg(long)]
        overdue: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        max: i32,
        #[command(flatten)]
        client: SupervisionArgs,
    },
}

fn state_name(state: i32) -> &'static str {
    match pb::ClockState::try_from(state).unwrap_or_default() {
        pb::ClockState::Running => "running",
        pb::ClockState::Paused => "paused",
        pb::ClockState::Overdue => "OVERDUE",
        pb::ClockState::Closed => "closed",
        pb::ClockState::Unspecified => "-",
    }
}

impl ClockCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ClockCommand::Get { case, client } => {
                let (c, t) = channel(&client).await?;
                let clock = ClocksClient::with_interceptor(c, t)
                    .get_clock(pb::GetClockRequest {
                        name: case_name(&case),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{}  {}  unit {}",
                    clock.case,
                    state_name(clock.state),
                    clock.unit
                );
                say!(
                    "due {}  ({} working days from {}; escalations {}; warned {})",
                    local(&clock.due_time),
                    clock.time_limit_working_days,
                    local(&clock.start_time),
                    clock.escalations,
                    clock.warned
                );
                if let Some(a) = &clock.acceptance {
                    say!(
                        "acceptance  {} by {}  accepted {}  overdue {}",
                        a.unit,
                        local(&a.accept_by),
                        local(&a.accept_time),
                        a.overdue
                    );
                }
                for h in &clock.history {
                    say!("  {}  {}", local(&h.time), h.summary);
                }
            }
            ClockCommand::List {
                place,
                overdue,
                max,
                client,
            } => {
                let (c, t) = channel(&client).await?;
                let states = if overdue {
                    vec![pb::ClockState::Overdue as i32]
                } else {
                    vec![]
                };
                let list = ClocksClient::with_interceptor(c, t)
                    .list_clocks(pb::ListClocksRequest {
                        page_size: max,
                        states,
                        place,
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                for c in list.clocks {
                    say!(
                        "{}  {:<8}  due {}  {}",
                        c.case,
                        state_name(c.state),
                        local(&c.due_time),
                        c.unit
                    );
                }
            }
        }
        Ok(())
    }
}

/// `minqing reply …`.
#[derive(Debug, Subcommand)]
pub enum ReplyCommand {
    /// The replies that answered a case's reporter, and how each was delivered.
    List {
        /// The case (cases/… or its id).
        case: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// Open appointed visits in a grid or community.
    Visits {
        /// The grid or community code (default: the token's scope).
        #[arg(long, default_value = "")]
        place: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
    /// Record an appointed visit: the resident was told.
    Visited {
        /// The appointment (appointments/…).
        appointment: String,
        /// What was said or agreed.
        outcome: String,
        #[command(flatten)]
        client: SupervisionArgs,
    },
}

fn delivery_state(state: i32) -> &'static str {
    match pb::DeliveryState::try_from(state).unwrap_or_default() {
        pb::DeliveryState::Queued => "queued",
        pb::DeliveryState::Delivered => "delivered",
        pb::DeliveryState::Failed => "FAILED",
        pb::DeliveryState::AwaitingVisit => "awaiting visit",
        pb::DeliveryState::Undeliverable => "undeliverable",
        pb::DeliveryState::Unspecified => "-",
    }
}

impl ReplyCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ReplyCommand::List { case, client } => {
                let (c, t) = channel(&client).await?;
                let list = RepliesClient::with_interceptor(c, t)
                    .list_replies(pb::ListRepliesRequest {
                        case: case_name(&case),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                for r in list.replies {
                    let trigger = pb::ReplyTrigger::try_from(r.trigger)
                        .map(|t| t.as_str_name())
                        .unwrap_or("-");
                    say!(
                        "{}  {}  {}  {}",
                        r.name,
                        local(&r.create_time),
                        trigger,
                        r.cluster
                    );
                    say!("  {}", r.text);
                    for d in r.deliveries {
                        let how =
                            minqing_proto::minqing::r#type::v1::ContactMethod::try_from(d.method)
                                .map(|m| m.as_str_name())
                                .unwrap_or("-");
                        say!(
                            "  -> {}  {how}  {}  tries {}  {}",
                            d.case,
                            delivery_state(d.state),
                            d.attempts,
                            d.last_error
                        );
                    }
                }
            }
            ReplyCommand::Visits { place, client } => {
                let (c, t) = channel(&client).await?;
                let list = RepliesClient::with_interceptor(c, t)
                    .list_appointments(pb::ListAppointmentsRequest {
                        place,
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                for a in list.appointments {
                    say!(
                        "{}  {}  grid {}  since {}",
                        a.name,
                        a.case,
                        a.grid,
                        local(&a.create_time)
                    );
                    say!("  {}", a.text);
                }
            }
            ReplyCommand::Visited {
                appointment,
                outcome,
                client,
            } => {
                let (c, t) = channel(&client).await?;
                let a = RepliesClient::with_interceptor(c, t)
                    .record_visit(pb::RecordVisitRequest {
                        name: appointment,
                        outcome,
                        visit_time: None,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{} recorded: the reply to {} is delivered", a.name, a.case);
            }
        }
        Ok(())
    }
}

/// `minqing rate`: rate an answered case (一事一评), for its reporter.
#[derive(Debug, Args)]
pub struct RateCommand {
    /// The case (cases/… or its id).
    case: String,
    /// The handling, 1 to 5.
    #[arg(long)]
    handling: i32,
    /// The staff member or unit, 1 to 5.
    #[arg(long)]
    staff: i32,
    /// The phone number the case was reported with.
    #[arg(long)]
    phone: String,
    /// A comment on the handling.
    #[arg(long, default_value = "")]
    comment: String,
    /// A comment on the staff member or unit.
    #[arg(long, default_value = "")]
    staff_comment: String,
    #[command(flatten)]
    client: SupervisionArgs,
}

impl RateCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        let (c, t) = channel(&self.client).await?;
        let r = RatingsClient::with_interceptor(c, t)
            .rate_case(pb::RateCaseRequest {
                case: case_name(&self.case),
                handling_score: self.handling,
                handling_comment: self.comment,
                staff_score: self.staff,
                staff_comment: self.staff_comment,
                reporter_phone: self.phone,
            })
            .await
            .map_err(CallError::from)?
            .into_inner();
        let who = if r.on_behalf {
            "on the reporter's behalf"
        } else {
            "by the reporter"
        };
        say!(
            "{} rated {who}: handling {}/5, {} {}/5",
            r.case,
            r.handling_score,
            r.unit,
            r.staff_score
        );
        Ok(())
    }
}
