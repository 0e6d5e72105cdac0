//! The CLI for routing: units (with a bulk import and its progress bar), rules (show, list,
//! reload, check a file offline, explain), case routes and staff actions, and a unit's desk.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use tonic::{codegen::InterceptedService, transport::Channel};

use crate::{
    cli::ClientArgs,
    client::{CallError, connect, enum_name, time},
};
use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::{
    routing::v1::{self as pb, routing_client::RoutingClient, unit_desk_client::UnitDeskClient},
    r#type::v1 as tpb,
};

type Authed = InterceptedService<Channel, BearerToken>;

/// Where routing listens, and who is asking.
#[derive(Debug, Clone, Args)]
pub struct RoutingArgs {
    /// Routing's address.
    #[arg(
        long,
        env = "MINQING_ROUTING_ENDPOINT",
        default_value = "http://127.0.0.1:7402",
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

impl RoutingArgs {
    async fn channel(&self) -> anyhow::Result<(Channel, BearerToken)> {
        connect(&ClientArgs {
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            data_dir: self.data_dir.clone(),
        })
        .await
    }

    async fn routing(&self) -> anyhow::Result<RoutingClient<Authed>> {
        let (c, t) = self.channel().await?;
        Ok(RoutingClient::with_interceptor(c, t))
    }

    async fn desk(&self) -> anyhow::Result<UnitDeskClient<Authed>> {
        let (c, t) = self.channel().await?;
        Ok(UnitDeskClient::with_interceptor(c, t))
    }
}

fn unit_name(id: &str) -> String {
    if id.starts_with("units/") {
        id.to_string()
    } else {
        format!("units/{id}")
    }
}

fn case_name(id: &str) -> String {
    if id.starts_with("cases/") {
        id.to_string()
    } else {
        format!("cases/{id}")
    }
}

fn assignment_name(id: &str) -> String {
    if id.starts_with("assignments/") {
        id.to_string()
    } else {
        format!("assignments/{id}")
    }
}

fn disposition(d: i32) -> String {
    tpb::Disposition::try_from(d).map_or("?".into(), |d| enum_name(d.as_str_name(), "DISPOSITION_"))
}

fn print_unit(u: &pb::Unit) {
    let kind = pb::UnitKind::try_from(u.kind)
        .map_or("?".into(), |k| enum_name(k.as_str_name(), "UNIT_KIND_"));
    say!(
        "{}  {}  {}{}",
        u.name,
        kind,
        u.display_name,
        if u.active { "" } else { "  (inactive)" }
    );
    say!("  places:     {}", u.places.join(", "));
    if !u.categories.is_empty() {
        say!("  categories: {}", u.categories.join(", "));
    }
}

fn print_decision(d: &pb::RouteDecision) {
    say!(
        "{} by {} ({}){}",
        disposition(d.disposition),
        d.unit_display_name,
        d.unit,
        if d.rule.is_empty() {
            "  — no rule matched".to_string()
        } else {
            format!("  — {}", d.rule)
        }
    );
    say!("  reason:   {}", d.reason);
    say!(
        "  due:      {}  ({} working days)",
        time(&d.due_time),
        d.time_limit_working_days
    );
    for (i, s) in d.steps.iter().enumerate() {
        say!("  {:>2}. {}", i + 1, s.text);
    }
}

fn print_route(r: &pb::CaseRoute) {
    let state = pb::RouteState::try_from(r.state)
        .map_or("?".into(), |s| enum_name(s.as_str_name(), "ROUTE_STATE_"));
    say!("{}  {}  {}", r.case, state, disposition(r.disposition));
    say!(
        "  handling:     {} ({})",
        r.handling_unit_display_name,
        r.handling_unit
    );
    say!(
        "  coordinating: {} ({})",
        r.coordinating_unit_display_name,
        r.coordinating_unit
    );
    say!("  due:          {}", time(&r.due_time));
    if let Some(e) = &r.escalation {
        say!(
            "  escalation:   to {} — {}",
            e.approver,
            if e.decide_time.is_some() {
                if e.approved { "approved" } else { "refused" }
            } else {
                "awaiting"
            }
        );
    }
    if let Some(f) = &r.referral {
        say!("  referral:     {} — {}", f.competent_body, f.reason);
    }
    for a in &r.assignments {
        let s = pb::AssignmentState::try_from(a.state).map_or("?".into(), |s| {
            enum_name(s.as_str_name(), "ASSIGNMENT_STATE_")
        });
        say!("  - {}  {}  {}  {}", a.name, a.unit, s, a.end_reason);
    }
}

fn print_assignment(a: &pb::Assignment) {
    let s = pb::AssignmentState::try_from(a.state).map_or("?".into(), |s| {
        enum_name(s.as_str_name(), "ASSIGNMENT_STATE_")
    });
    let title = a.facts.as_ref().map(|f| f.title.as_str()).unwrap_or("");
    say!(
        "{}  {}  {}  {}  {}",
        a.name,
        a.case,
        disposition(a.disposition),
        s,
        title
    );
    say!(
        "  due: {}  accept by: {}",
        time(&a.due_time),
        time(&a.accept_by)
    );
    if !a.missing_documents.is_empty() {
        say!("  papers missing: {}", a.missing_documents.join(", "));
    }
    if let Some(c) = &a.reporter_contact {
        say!("  reporter: {} {}", c.name, c.phone);
    }
}

/// Unit kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Building chief.
    BuildingChief,
    /// Grid.
    Grid,
    /// Community.
    Community,
    /// Street office.
    StreetOffice,
    /// District department.
    DistrictDepartment,
    /// Police station.
    PoliceStation,
    /// Property company.
    PropertyCompany,
    /// Clinic.
    Clinic,
    /// Utility.
    Utility,
    /// Housekeeping.
    Housekeeping,
    /// Emergency line.
    EmergencyLine,
    /// Other body.
    OtherBody,
}

/// `minqing unit …`.
#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// List units.
    List {
        /// Only these kinds.
        #[arg(long, value_enum)]
        kind: Vec<KindArg>,
        /// Only units covering this place code.
        #[arg(long, default_value = "")]
        place: String,
        /// Only units handling this catalogue item.
        #[arg(long, default_value = "")]
        category: String,
        /// Include inactive units.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Show one unit.
    Get {
        /// Its id.
        id: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Import units from a TOML or CSV file (created or replaced), with a progress bar.
    Import {
        /// The file (`.csv` is read as CSV, anything else as TOML).
        file: PathBuf,
        /// Units per call (1 to 500).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Check only; write nothing.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Stop or start a unit taking new cases.
    SetActive {
        /// Its id.
        id: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        active: bool,
        #[command(flatten)]
        args: RoutingArgs,
    },
}

impl UnitCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            UnitCommand::List {
                kind,
                place,
                category,
                all,
                args,
            } => {
                let mut client = args.routing().await?;
                let mut token = String::new();
                loop {
                    let page = client
                        .list_units(pb::ListUnitsRequest {
                            page_size: 500,
                            page_token: token,
                            kinds: kind.iter().map(|k| *k as i32 + 1).collect(),
                            place: place.clone(),
                            category: category.clone(),
                            include_inactive: all,
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    page.units.iter().for_each(print_unit);
                    if page.next_page_token.is_empty() {
                        return Ok(());
                    }
                    token = page.next_page_token;
                }
            }
            UnitCommand::Get { id, args } => {
                let u = args
                    .routing()
                    .await?
                    .get_unit(pb::GetUnitRequest {
                        name: unit_name(&id),
                    })
                    .await
                    .map_err(CallError::from)?;
                print_unit(u.get_ref());
                Ok(())
            }
            UnitCommand::Import {
                file,
                batch,
                validate_only,
                args,
            } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                let units = minqing_routing::import::parse_file(&file.display().to_string(), &text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let batch = batch.clamp(1, 500);
                let mut client = args.routing().await?;
                let bar = indicatif::ProgressBar::new(units.len() as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{bar:40}] {pos}/{len} units  {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                let mut total = pb::ImportUnitsResponse::default();
                for chunk in units.chunks(batch) {
                    let sent = client
                        .import_units(pb::ImportUnitsRequest {
                            units: chunk.iter().map(minqing_routing::convert::unit).collect(),
                            validate_only,
                        })
                        .await;
                    let done = match sent {
                        Ok(r) => r.into_inner(),
                        Err(status) => {
                            bar.abandon_with_message("refused");
                            return Err(CallError::from(status).into());
                        }
                    };
                    total.created += done.created;
                    total.updated += done.updated;
                    total.unchanged += done.unchanged;
                    bar.inc(chunk.len() as u64);
                    bar.set_message(format!(
                        "{} new, {} changed, {} unchanged",
                        total.created, total.updated, total.unchanged
                    ));
                }
                bar.finish();
                say!(
                    "{} {} units from {}: {} new, {} changed, {} unchanged",
                    if validate_only { "checked" } else { "imported" },
                    units.len(),
                    file.display(),
                    total.created,
                    total.updated,
                    total.unchanged
                );
                Ok(())
            }
            UnitCommand::SetActive { id, active, args } => {
                let u = args
                    .routing()
                    .await?
                    .update_unit(pb::UpdateUnitRequest {
                        unit: Some(pb::Unit {
                            name: unit_name(&id),
                            active,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["active".into()],
                        }),
                        etag: String::new(),
                    })
                    .await
                    .map_err(CallError::from)?;
                print_unit(u.get_ref());
                Ok(())
            }
        }
    }
}

/// `minqing rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rule set in force.
    Show {
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// The rules in force, in file order.
    List {
        /// Only rules for this catalogue item (or every item).
        #[arg(long, default_value = "")]
        category: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Re-read the rule file now; a refused file leaves the rules in force.
    Reload {
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Check a rule file offline, without a server.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Explain how a case was routed, or how a hypothetical one would be.
    Explain {
        /// A routed case's id.
        #[arg(long, conflicts_with_all = ["category", "place"])]
        case: Option<String>,
        /// Catalogue item.
        #[arg(long)]
        category: Option<String>,
        /// The lowest place code known.
        #[arg(long)]
        place: Option<String>,
        /// Urgency: low, normal, high, emergency.
        #[arg(long, default_value = "normal")]
        urgency: String,
        /// Title and description text (keywords are matched in it).
        #[arg(long, default_value = "")]
        text: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
}

impl RulesCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            RulesCommand::Show { args } => {
                let s = args
                    .routing()
                    .await?
                    .get_rule_set(pb::GetRuleSetRequest {})
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{}  {} rules  from {}  loaded {}",
                    s.version,
                    s.rule_count,
                    s.source,
                    time(&s.load_time)
                );
                say!("  sha256: {}", s.sha256);
                for w in &s.warnings {
                    say!("  warning: {w}");
                }
                Ok(())
            }
            RulesCommand::List { category, args } => {
                let mut client = args.routing().await?;
                let mut token = String::new();
                loop {
                    let page = client
                        .list_rules(pb::ListRulesRequest {
                            page_size: 1000,
                            page_token: token,
                            category: category.clone(),
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for r in &page.rules {
                        let a = r.action.clone().unwrap_or_default();
                        let kind = pb::UnitKind::try_from(a.unit_kind)
                            .map_or(String::new(), |k| enum_name(k.as_str_name(), "UNIT_KIND_"));
                        say!(
                            "{:<40} p{:<4} {:<11} {}{}  {}",
                            r.name,
                            r.priority,
                            disposition(a.disposition),
                            kind,
                            a.unit,
                            r.description
                        );
                    }
                    if page.next_page_token.is_empty() {
                        return Ok(());
                    }
                    token = page.next_page_token;
                }
            }
            RulesCommand::Reload { args } => {
                let s = args
                    .routing()
                    .await?
                    .reload_rules(pb::ReloadRulesRequest {})
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "in force: {}  {} rules  ({})",
                    s.version,
                    s.rule_count,
                    s.sha256
                );
                Ok(())
            }
            RulesCommand::Check { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                match minqing_routing::rules::RuleSet::parse(
                    &text,
                    &file.display().to_string(),
                    0,
                    None,
                ) {
                    Ok(set) => {
                        say!(
                            "{}: version {}, {} rules: it would load",
                            file.display(),
                            set.version,
                            set.rules.len()
                        );
                        for w in &set.warnings {
                            say!("  warning: {w}");
                        }
                        Ok(())
                    }
                    Err(problems) => {
                        for p in &problems {
                            say!("  {p}");
                        }
                        Err(anyhow::anyhow!(
                            "{}: {} problem(s); it would be refused",
                            file.display(),
                            problems.len()
                        ))
                    }
                }
            }
            RulesCommand::Explain {
                case,
                category,
                place,
                urgency,
                text,
                args,
            } => {
                let subject = match case {
                    Some(c) => pb::explain_route_request::Subject::Case(case_name(&c)),
                    None => {
                        let place = place.unwrap_or_default();
                        let level = place.matches('-').count();
                        let mut p = tpb::Place::default();
                        match (level, place.len()) {
                            (2, _) => p.building = place,
                            (1, _) => p.grid = place,
                            (_, 12) => p.community = place,
                            (_, 9) => p.street = place,
                            _ => p.district = place,
                        }
                        let urgency = match urgency.as_str() {
                            "low" => tpb::Urgency::Low,
                            "high" => tpb::Urgency::High,
                            "emergency" => tpb::Urgency::Emergency,
                            _ => tpb::Urgency::Normal,
                        };
                        pb::explain_route_request::Subject::Facts(pb::CaseFacts {
                            category: category.unwrap_or_default(),
                            place: Some(p),
                            urgency: urgency as i32,
                            title: text,
                            ..Default::default()
                        })
                    }
                };
                let d = args
                    .routing()
                    .await?
                    .explain_route(pb::ExplainRouteRequest {
                        subject: Some(subject),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_decision(&d);
                Ok(())
            }
        }
    }
}

/// `minqing route …`: a case's routing and staff actions on it.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Show a case's routing with every assignment.
    Get {
        /// The case's id.
        case: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Hand a case on to another unit, with the responsibility for it.
    Transfer {
        /// The case's id.
        case: String,
        /// The receiving unit.
        #[arg(long)]
        unit: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Report a case up for approval.
    Escalate {
        /// The case's id.
        case: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The approving unit (default: the level above).
        #[arg(long, default_value = "")]
        approver: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Record the approver's decision.
    Decide {
        /// The case's id.
        case: String,
        /// Approve (otherwise refuse).
        #[arg(long)]
        approve: bool,
        /// The note (required for a refusal).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Refer a case to the competent body.
    Refer {
        /// The case's id.
        case: String,
        /// The competent body's name.
        #[arg(long)]
        body: String,
        /// Why it is not ours.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
}

impl RouteCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        let r = match self {
            RouteCommand::Get { case, args } => {
                args.routing()
                    .await?
                    .get_case_route(pb::GetCaseRouteRequest {
                        case: case_name(&case),
                    })
                    .await
            }
            RouteCommand::Transfer {
                case,
                unit,
                reason,
                args,
            } => {
                args.routing()
                    .await?
                    .transfer_case(pb::TransferCaseRequest {
                        case: case_name(&case),
                        unit: unit_name(&unit),
                        reason,
                        ..Default::default()
                    })
                    .await
            }
            RouteCommand::Escalate {
                case,
                reason,
                approver,
                args,
            } => {
                let approver = if approver.is_empty() {
                    approver
                } else {
                    unit_name(&approver)
                };
                args.routing()
                    .await?
                    .escalate_case(pb::EscalateCaseRequest {
                        case: case_name(&case),
                        approver,
                        reason,
                        etag: String::new(),
                    })
                    .await
            }
            RouteCommand::Decide {
                case,
                approve,
                note,
                args,
            } => {
                args.routing()
                    .await?
                    .decide_escalation(pb::DecideEscalationRequest {
                        case: case_name(&case),
                        approved: approve,
                        note,
                        answering_unit: String::new(),
                    })
                    .await
            }
            RouteCommand::Refer {
                case,
                body,
                reason,
                args,
            } => {
                args.routing()
                    .await?
                    .refer_case(pb::ReferCaseRequest {
                        case: case_name(&case),
                        competent_body: body,
                        reason,
                        unit: String::new(),
                    })
                    .await
            }
        };
        print_route(r.map_err(CallError::from)?.get_ref());
        Ok(())
    }
}

/// `minqing desk …`: a unit's desk, with a token scoped to the unit.
#[derive(Debug, Subcommand)]
pub enum DeskCommand {
    /// Print the unit's assignments as they come (from the acknowledged cursor).
    Pull {
        /// Start after this cursor instead.
        #[arg(long, default_value = "")]
        after: String,
        /// Keep following; otherwise stop once caught up.
        #[arg(long)]
        follow: bool,
        /// Acknowledge what was printed, so the next pull starts after it.
        #[arg(long)]
        ack: bool,
        /// The unit (the city admin must name it).
        #[arg(long, default_value = "")]
        unit: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Take an assignment up.
    Accept {
        /// The assignment's id.
        assignment: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Refuse an assignment; the case is routed again.
    Reject {
        /// The assignment's id.
        assignment: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Record progress.
    Progress {
        /// The assignment's id.
        assignment: String,
        /// What was done.
        #[arg(long)]
        note: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Resolve an assignment with its result.
    Resolve {
        /// The assignment's id.
        assignment: String,
        /// The result, as the resident will be told.
        #[arg(long)]
        result: String,
        #[command(flatten)]
        args: RoutingArgs,
    },
    /// Ask for papers the resident must still bring.
    Papers {
        /// The assignment's id.
        assignment: String,
        /// A missing paper (repeat for several).
        #[arg(long = "document", required = true)]
        documents: Vec<String>,
        #[command(flatten)]
        args: RoutingArgs,
    },
}

impl DeskCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        let r = match self {
            DeskCommand::Pull {
                after,
                follow,
                ack,
                unit,
                args,
            } => {
                let mut desk = args.desk().await?;
                let unit = if unit.is_empty() {
                    unit
                } else {
                    unit_name(&unit)
                };
                let mut s = desk
                    .pull_assignments(pb::PullAssignmentsRequest {
                        unit: unit.clone(),
                        after,
                        max_batch: 0,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                let mut cursor = String::new();
                loop {
                    let next = if follow {
                        s.next().await
                    } else {
                        tokio::time::timeout(Duration::from_secs(2), s.next())
                            .await
                            .unwrap_or_default()
                    };
                    let Some(batch) = next else { break };
                    let batch = batch.map_err(CallError::from)?;
                    for item in &batch.items {
                        let kind = pb::DeskItemKind::try_from(item.kind).map_or("?".into(), |k| {
                            enum_name(k.as_str_name(), "DESK_ITEM_KIND_")
                        });
                        say!("[{}] {} — {}", kind, time(&item.time), item.note);
                        if let Some(a) = &item.assignment {
                            print_assignment(a);
                        }
                    }
                    cursor = batch.cursor;
                    if ack && !cursor.is_empty() {
                        desk.acknowledge_assignments(pb::AcknowledgeAssignmentsRequest {
                            unit: unit.clone(),
                            cursor: cursor.clone(),
                        })
                        .await
                        .map_err(CallError::from)?;
                    }
                }
                say!("cursor: {cursor}");
                return Ok(());
            }
            DeskCommand::Accept { assignment, args } => {
                args.desk()
                    .await?
                    .accept_assignment(pb::AcceptAssignmentRequest {
                        name: assignment_name(&assignment),
                        note: String::new(),
                    })
                    .await
            }
            DeskCommand::Reject {
                assignment,
                reason,
                args,
            } => {
                args.desk()
                    .await?
                    .reject_assignment(pb::RejectAssignmentRequest {
                        name: assignment_name(&assignment),
                        reason,
                    })
                    .await
            }
            DeskCommand::Progress {
                assignment,
                note,
                args,
            } => {
                args.desk()
                    .await?
                    .report_progress(pb::ReportProgressRequest {
                        name: assignment_name(&assignment),
                        note,
                        attachments: vec![],
                    })
                    .await
            }
            DeskCommand::Resolve {
                assignment,
                result,
                args,
            } => {
                args.desk()
                    .await?
                    .resolve_assignment(pb::ResolveAssignmentRequest {
                        name: assignment_name(&assignment),
                        result,
                        evidence: vec![],
                    })
                    .await
            }
            DeskCommand::Papers {
                assignment,
                documents,
                args,
            } => {
                args.desk()
                    .await?
                    .request_papers(pb::RequestPapersRequest {
                        name: assignment_name(&assignment),
                        documents,
                        note: String::new(),
                    })
                    .await
            }
        };
        print_assignment(r.map_err(CallError::from)?.get_ref());
        Ok(())
    }
}
