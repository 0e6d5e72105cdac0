//! The CLI client: try the suite without other tools.

use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use tonic::{Code, Status, codegen::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

use crate::cli::ClientArgs;
use minqing_kit::{feed::BearerToken, time::from_timestamp};
use minqing_proto::minqing::{
    auth::v1::{self as auth_pb, tokens_client::TokensClient},
    intake::v1::{self as pb, catalogue_client::CatalogueClient, intake_client::IntakeClient},
    r#type::v1 as tpb,
};

/// A call that failed, with the server's details spelled out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(String);

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        let mut text = match status.get_details_bad_request() {
            Some(bad) if !bad.field_violations.is_empty() => {
                let mut text = format!("{:?}: the request was refused", status.code());
                for v in bad.field_violations {
                    text.push_str(&format!("\n  {}: {}", v.field, v.description));
                }
                text
            }
            _ => format!("{:?}: {}", status.code(), status.message()),
        };
        if status.code() == Code::Unauthenticated {
            text.push_str(
                "\n  (pass --token, set MINQING_TOKEN, or run where ./minqing-data/admin.token is)",
            );
        }
        CallError(text)
    }
}

type Authed = InterceptedService<Channel, BearerToken>;

async fn connect(args: &ClientArgs) -> anyhow::Result<(Channel, BearerToken)> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => read_admin_token(&args.data_dir).unwrap_or_default(),
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

fn read_admin_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(crate::run::ADMIN_TOKEN_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

async fn intake(args: &ClientArgs) -> anyhow::Result<IntakeClient<Authed>> {
    let (channel, token) = connect(args).await?;
    Ok(IntakeClient::with_interceptor(channel, token))
}

async fn catalogue(args: &ClientArgs) -> anyhow::Result<CatalogueClient<Channel>> {
    Ok(CatalogueClient::new(connect(args).await?.0))
}

fn case_name(id: &str) -> String {
    if id.starts_with("cases/") {
        id.to_string()
    } else {
        format!("cases/{id}")
    }
}

fn time(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(from_timestamp)
        .map(|m| {
            minqing_kit::time::from_micros(m).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| "-".into())
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_lowercase()
}

fn print_case(c: &pb::Case) {
    let state = pb::CaseState::try_from(c.state)
        .map_or("?".into(), |s| enum_name(s.as_str_name(), "CASE_STATE_"));
    let channel = tpb::Channel::try_from(c.channel)
        .map_or("?".into(), |s| enum_name(s.as_str_name(), "CHANNEL_"));
    say!("{}  {}  via {}  [{}]", c.name, state, channel, c.category);
    say!("  title:     {}", c.title);
    if let Some(p) = &c.place {
        let codes: Vec<&str> = [&p.district, &p.street, &p.community, &p.grid, &p.building]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        say!(
            "  place:     {}{}",
            codes.join(" / "),
            if p.address.is_empty() {
                String::new()
            } else {
                format!("  ({})", p.address)
            }
        );
    }
    if let Some(r) = &c.reporter {
        match (&r.contact, r.anonymous) {
            (_, true) => say!("  reporter:  anonymous"),
            (Some(k), false) => {
                let method = tpb::ContactMethod::try_from(k.preferred_method)
                    .map_or("?".into(), |m| {
                        enum_name(m.as_str_name(), "CONTACT_METHOD_")
                    });
                let visit = if k.needs_appointed_visit {
                    ", needs an appointed visit"
                } else {
                    ""
                };
                let who = if k.name.is_empty() {
                    "(personal data hidden)".to_string()
                } else {
                    format!("{} {}", k.name, k.phone)
                };
                say!("  reporter:  {who}; reply by {method}{visit}");
            }
            (None, false) => {}
        }
    }
    if c.disposition != 0 {
        let d = tpb::Disposition::try_from(c.disposition)
            .map_or("?".into(), |d| enum_name(d.as_str_name(), "DISPOSITION_"));
        say!(
            "  handling:  {d} by {} (due {})",
            c.handling_unit,
            time(&c.due_time)
        );
    }
    if !c.cluster.is_empty() {
        say!("  cluster:   {}", c.cluster);
    }
    say!(
        "  received:  {}   updated: {}",
        time(&c.create_time),
        time(&c.update_time)
    );
}

/// `minqing case …`.
#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Submit a case.
    Submit(Box<SubmitArgs>),
    /// Show one case.
    Get {
        /// The case id or name.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List cases, newest first.
    List(ListArgs),
    /// Record papers or information that arrived later.
    Supplement {
        /// The case id or name.
        id: String,
        /// What arrived.
        #[arg(long, default_value = "")]
        note: String,
        /// An attachment URI (repeatable).
        #[arg(long = "attachment")]
        attachments: Vec<String>,
        /// Idempotency id [default: random].
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Withdraw a case at the resident's request.
    Withdraw {
        /// The case id or name.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The case's timeline, as the resident sees it.
    Timeline {
        /// The case id or name.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Link cases that report the same issue.
    Link {
        /// Two or more case ids or names.
        #[arg(required = true, num_args = 2..)]
        ids: Vec<String>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a case out of its cluster.
    Unlink {
        /// The case id or name.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a cluster of reports.
    Cluster {
        /// The cluster name (clusters/…).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Channels, as typed on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChannelArg {
    /// Public hotline.
    Hotline,
    /// Building mailbox.
    Mailbox,
    /// Web mailbox.
    Web,
    /// Resident app.
    App,
    /// Contact card.
    ContactCard,
    /// Grid worker's door-to-door visit (needs --visiting-worker).
    DoorToDoor,
    /// Deputies' liaison station (needs --deputy and --station).
    LiaisonStation,
    /// 24-hour call centre.
    CallCentre,
    /// Service-hall window.
    ServiceHall,
    /// Grid app.
    GridApp,
    /// Residents' group chat.
    GroupChat,
    /// Compound grid station.
    CompoundStation,
}

impl ChannelArg {
    fn wire(self) -> tpb::Channel {
        match self {
            ChannelArg::Hotline => tpb::Channel::Hotline,
            ChannelArg::Mailbox => tpb::Channel::Mailbox,
            ChannelArg::Web => tpb::Channel::Web,
            ChannelArg::App => tpb::Channel::App,
            ChannelArg::ContactCard => tpb::Channel::ContactCard,
            ChannelArg::DoorToDoor => tpb::Channel::DoorToDoor,
            ChannelArg::LiaisonStation => tpb::Channel::LiaisonStation,
            ChannelArg::CallCentre => tpb::Channel::CallCentre,
            ChannelArg::ServiceHall => tpb::Channel::ServiceHall,
            ChannelArg::GridApp => tpb::Channel::GridApp,
            ChannelArg::GroupChat => tpb::Channel::GroupChat,
            ChannelArg::CompoundStation => tpb::Channel::CompoundStation,
        }
    }
}

/// How the resident wants to hear back.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ContactArg {
    /// Telephone.
    Phone,
    /// Letter.
    Letter,
    /// Online.
    Online,
    /// Face to face.
    FaceToFace,
}

/// Urgency.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UrgencyArg {
    /// Can wait.
    Low,
    /// Ordinary.
    Normal,
    /// Today.
    High,
    /// Danger to life or property.
    Emergency,
}

/// `minqing case submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// How it came in.
    #[arg(long, value_enum, default_value = "hotline")]
    channel: ChannelArg,
    /// The catalogue item (see `minqing catalogue list`).
    #[arg(long)]
    category: String,
    /// District code.
    #[arg(long, default_value = "")]
    district: String,
    /// Street code.
    #[arg(long, default_value = "")]
    street: String,
    /// Community code.
    #[arg(long, default_value = "")]
    community: String,
    /// Grid code.
    #[arg(long, default_value = "")]
    grid: String,
    /// Building code.
    #[arg(long, default_value = "")]
    building: String,
    /// Free-text address of the spot.
    #[arg(long, default_value = "")]
    address: String,
    /// Latitude of the spot.
    #[arg(long, requires = "longitude", allow_hyphen_values = true)]
    latitude: Option<f64>,
    /// Longitude of the spot.
    #[arg(long, requires = "latitude", allow_hyphen_values = true)]
    longitude: Option<f64>,
    /// A short title.
    #[arg(long)]
    title: String,
    /// What the resident said.
    #[arg(long)]
    description: String,
    /// The resident did not give their name.
    #[arg(long, conflicts_with_all = ["name", "phone"])]
    anonymous: bool,
    /// The resident's name.
    #[arg(long, default_value = "")]
    name: String,
    /// The resident's phone.
    #[arg(long, default_value = "")]
    phone: String,
    /// Postal address for a letter.
    #[arg(long, default_value = "")]
    postal_address: String,
    /// Online address for an online reply.
    #[arg(long, default_value = "")]
    online_address: String,
    /// How the resident wants to hear back.
    #[arg(long, value_enum, default_value = "phone")]
    reply_by: ContactArg,
    /// Elderly, disabled or housebound: tell the outcome by an appointed visit.
    #[arg(long)]
    appointed_visit: bool,
    /// Door-to-door: who visited.
    #[arg(long, default_value = "")]
    visiting_worker: String,
    /// Liaison station: the deputy.
    #[arg(long, default_value = "")]
    deputy: String,
    /// Liaison station: which station.
    #[arg(long, default_value = "")]
    station: String,
    /// Service hall: which window.
    #[arg(long, default_value = "")]
    window: String,
    /// Urgency.
    #[arg(long, value_enum, default_value = "normal")]
    urgency: UrgencyArg,
    /// An attachment URI (repeatable).
    #[arg(long = "attachment")]
    attachments: Vec<String>,
    /// Idempotency id [default: random]; a retry with the same id returns the same case.
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `minqing case list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only in this place (a code at any level).
    #[arg(long, default_value = "")]
    place: String,
    /// Only under this catalogue item.
    #[arg(long, default_value = "")]
    category: String,
    /// Only from this phone (staff).
    #[arg(long, default_value = "")]
    phone: String,
    /// Page size.
    #[arg(long, default_value_t = 20)]
    page_size: i32,
    /// Follow every page.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl CaseCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            CaseCommand::Submit(a) => {
                let mut client = intake(&a.client).await?;
                let anonymous = a.anonymous;
                let contact = (!anonymous).then(|| tpb::Contact {
                    name: a.name.clone(),
                    phone: a.phone.clone(),
                    postal_address: a.postal_address.clone(),
                    online_address: a.online_address.clone(),
                    preferred_method: match a.reply_by {
                        ContactArg::Phone => tpb::ContactMethod::Phone,
                        ContactArg::Letter => tpb::ContactMethod::Letter,
                        ContactArg::Online => tpb::ContactMethod::Online,
                        ContactArg::FaceToFace => tpb::ContactMethod::FaceToFace,
                    } as i32,
                    needs_appointed_visit: a.appointed_visit,
                    visit_note: String::new(),
                });
                let req = pb::SubmitCaseRequest {
                    request_id: a
                        .request_id
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    channel: a.channel.wire() as i32,
                    channel_details: Some(pb::ChannelDetails {
                        visiting_worker: a.visiting_worker,
                        deputy: a.deputy,
                        liaison_station: a.station,
                        window: a.window,
                        external_ref: String::new(),
                    }),
                    reporter: Some(pb::Reporter { anonymous, contact }),
                    place: Some(tpb::Place {
                        district: a.district,
                        street: a.street,
                        community: a.community,
                        grid: a.grid,
                        building: a.building,
                        location: a.latitude.zip(a.longitude).map(|(latitude, longitude)| {
                            tpb::LatLng {
                                latitude,
                                longitude,
                            }
                        }),
                        address: a.address,
                    }),
                    category: a.category,
                    title: a.title,
                    description: a.description,
                    attachments: a
                        .attachments
                        .into_iter()
                        .map(|uri| tpb::Attachment {
                            uri,
                            ..Default::default()
                        })
                        .collect(),
                    urgency: match a.urgency {
                        UrgencyArg::Low => tpb::Urgency::Low,
                        UrgencyArg::Normal => tpb::Urgency::Normal,
                        UrgencyArg::High => tpb::Urgency::High,
                        UrgencyArg::Emergency => tpb::Urgency::Emergency,
                    } as i32,
                    occur_time: None,
                };
                let case = client
                    .submit_case(req)
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_case(&case);
            }
            CaseCommand::Get { id, client } => {
                let case = intake(&client)
                    .await?
                    .get_case(pb::GetCaseRequest {
                        name: case_name(&id),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_case(&case);
            }
            CaseCommand::List(a) => {
                let mut client = intake(&a.client).await?;
                let mut page_token = String::new();
                let mut shown = 0;
                loop {
                    let page = client
                        .list_cases(pb::ListCasesRequest {
                            page_size: a.page_size,
                            page_token: page_token.clone(),
                            place: a.place.clone(),
                            category: a.category.clone(),
                            reporter_phone: a.phone.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for c in &page.cases {
                        print_case(c);
                        shown += 1;
                    }
                    page_token = page.next_page_token;
                    if page_token.is_empty() || !a.all {
                        break;
                    }
                }
                if shown == 0 {
                    say!("no cases");
                } else if !page_token.is_empty() {
                    say!("… more: use --all");
                }
            }
            CaseCommand::Supplement {
                id,
                note,
                attachments,
                request_id,
                client,
            } => {
                let case = intake(&client)
                    .await?
                    .supplement_case(pb::SupplementCaseRequest {
                        name: case_name(&id),
                        request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                        note,
                        attachments: attachments
                            .into_iter()
                            .map(|uri| tpb::Attachment {
                                uri,
                                ..Default::default()
                            })
                            .collect(),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_case(&case);
            }
            CaseCommand::Withdraw { id, reason, client } => {
                let case = intake(&client)
                    .await?
                    .withdraw_case(pb::WithdrawCaseRequest {
                        name: case_name(&id),
                        reason,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_case(&case);
            }
            CaseCommand::Timeline { id, client } => {
                let timeline = intake(&client)
                    .await?
                    .get_case_timeline(pb::GetCaseTimelineRequest {
                        name: case_name(&id),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{}", timeline.case);
                for e in timeline.entries {
                    say!("  {}  {:<28} {}", time(&e.time), e.actor, e.summary);
                }
            }
            CaseCommand::Link {
                ids,
                reason,
                client,
            } => {
                let cluster = intake(&client)
                    .await?
                    .link_cases(pb::LinkCasesRequest {
                        cases: ids.iter().map(|i| case_name(i)).collect(),
                        reason,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_cluster(&cluster);
            }
            CaseCommand::Unlink { id, client } => {
                let case = intake(&client)
                    .await?
                    .unlink_case(pb::UnlinkCaseRequest {
                        name: case_name(&id),
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_case(&case);
            }
            CaseCommand::Cluster { name, client } => {
                let name = if name.starts_with("clusters/") {
                    name
                } else {
                    format!("clusters/{name}")
                };
                let cluster = intake(&client)
                    .await?
                    .get_cluster(pb::GetClusterRequest { name })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_cluster(&cluster);
            }
        }
        Ok(())
    }
}

fn print_cluster(c: &pb::Cluster) {
    say!(
        "{}  [{}]  {}  formed {}",
        c.name,
        c.category,
        c.reason,
        time(&c.create_time)
    );
    for case in &c.cases {
        say!("  {case}");
    }
}

/// `minqing catalogue …`.
#[derive(Debug, Subcommand)]
pub enum CatalogueCommand {
    /// The modes and sub-classes.
    Classes {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Items, optionally filtered.
    List {
        /// Only this mode (onsite, errand, online).
        #[arg(long, default_value = "")]
        mode: String,
        /// Only this sub-class.
        #[arg(long, default_value = "")]
        subclass: String,
        /// Only items mentioning this.
        #[arg(long, default_value = "")]
        query: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One item with everything fixed disclosure requires.
    Get {
        /// The item id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl CatalogueCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            CatalogueCommand::Classes { client } => {
                let c = catalogue(&client)
                    .await?
                    .list_catalogue_classes(pb::ListCatalogueClassesRequest {})
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("catalogue edition {}", c.version);
                for m in &c.modes {
                    say!("{}  {} ({})", m.id, m.name, m.name_en);
                    for s in c.subclasses.iter().filter(|s| s.mode == m.id) {
                        say!("  {:<22} {} ({})", s.id, s.name, s.name_en);
                    }
                }
            }
            CatalogueCommand::List {
                mode,
                subclass,
                query,
                client,
            } => {
                let mut api = catalogue(&client).await?;
                let mut page_token = String::new();
                loop {
                    let page = api
                        .list_catalogue_items(pb::ListCatalogueItemsRequest {
                            page_size: 100,
                            page_token: page_token.clone(),
                            mode: mode.clone(),
                            subclass: subclass.clone(),
                            query: query.clone(),
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for i in &page.items {
                        let limit = if i.time_limit_working_days == 0 {
                            "on the spot".to_string()
                        } else {
                            format!("{} working days", i.time_limit_working_days)
                        };
                        say!("{:<24} {}  ({}; {})", i.id, i.name, i.name_en, limit);
                    }
                    page_token = page.next_page_token;
                    if page_token.is_empty() {
                        break;
                    }
                }
            }
            CatalogueCommand::Get { id, client } => {
                let i = catalogue(&client)
                    .await?
                    .get_catalogue_item(pb::GetCatalogueItemRequest { id })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!("{}  {} ({})", i.id, i.name, i.name_en);
                say!("  mode / sub-class:   {} / {}", i.mode, i.subclass);
                say!("  what it covers:     {}", i.description);
                say!("  legal basis:        {}", i.legal_basis);
                say!("  service standard:   {}", i.service_standard);
                say!(
                    "  time limit:         {} working days",
                    i.time_limit_working_days
                );
                say!("  fees:               {}", i.fees);
                say!(
                    "  responsible:        {} ({})",
                    i.responsible_unit,
                    i.responsible_role
                );
                say!(
                    "  documents:          {}",
                    if i.required_documents.is_empty() {
                        "none".into()
                    } else {
                        i.required_documents.join("; ")
                    }
                );
                for (n, step) in i.procedure.iter().enumerate() {
                    say!("  step {}:             {step}", n + 1);
                }
            }
        }
        Ok(())
    }
}

/// `minqing places …`.
#[derive(Debug, Subcommand)]
pub enum PlacesCommand {
    /// Places under a parent (the districts when none is given).
    List {
        /// The parent's code.
        #[arg(long, default_value = "")]
        parent: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl PlacesCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        let PlacesCommand::List { parent, client } = self;
        let mut api = catalogue(&client).await?;
        let mut page_token = String::new();
        loop {
            let page = api
                .list_places(pb::ListPlacesRequest {
                    parent: if parent.is_empty() {
                        String::new()
                    } else {
                        parent.clone()
                    },
                    level: if parent.is_empty() {
                        tpb::PlaceLevel::District as i32
                    } else {
                        0
                    },
                    page_size: 500,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(CallError::from)?
                .into_inner();
            for p in &page.places {
                let level = tpb::PlaceLevel::try_from(p.level)
                    .map_or("?".into(), |l| enum_name(l.as_str_name(), "PLACE_LEVEL_"));
                say!("{:<24} {:<10} {} ({})", p.code, level, p.name, p.name_en);
            }
            page_token = page.next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

/// Roles, as typed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    CityAdmin,
    /// A district's system.
    DistrictSystem,
    /// Window or call-centre staff.
    WindowStaff,
    /// Grid worker.
    GridWorker,
    /// Outside unit (needs --unit-scope).
    PartnerUnit,
    /// Deputy.
    Deputy,
    /// Volunteer.
    Volunteer,
    /// Supervisor.
    Supervisor,
    /// Community staff.
    CommunityStaff,
    /// A service of the suite.
    Service,
}

/// `minqing token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// Who will hold it.
        #[arg(long)]
        principal: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Limit to a place (a gazetteer code).
        #[arg(long, default_value = "")]
        place_scope: String,
        /// Limit to a unit (partner units).
        #[arg(long, default_value = "")]
        unit_scope: String,
        /// Lifetime in seconds (0: none).
        #[arg(long, default_value_t = 0)]
        ttl_seconds: i64,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens.
    List {
        /// Include revoked and expired ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token.
    Revoke {
        /// tokens/{id}.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Who the token in use says it is.
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn print_token(t: &auth_pb::Token) {
    let role =
        auth_pb::Role::try_from(t.role).map_or("?".into(), |r| enum_name(r.as_str_name(), "ROLE_"));
    let status = if t.revoke_time.is_some() {
        "  REVOKED"
    } else {
        ""
    };
    say!(
        "{}  {}  {}{}{}{}",
        t.name,
        t.principal,
        role,
        if t.place_scope.is_empty() {
            String::new()
        } else {
            format!("  place={}", t.place_scope)
        },
        if t.unit_scope.is_empty() {
            String::new()
        } else {
            format!("  unit={}", t.unit_scope)
        },
        status
    );
}

impl TokenCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            TokenCommand::Create {
                principal,
                role,
                place_scope,
                unit_scope,
                ttl_seconds,
                description,
                client,
            } => {
                let (channel, token) = connect(&client).await?;
                let role = match role {
                    RoleArg::CityAdmin => auth_pb::Role::CityAdmin,
                    RoleArg::DistrictSystem => auth_pb::Role::DistrictSystem,
                    RoleArg::WindowStaff => auth_pb::Role::WindowStaff,
                    RoleArg::GridWorker => auth_pb::Role::GridWorker,
                    RoleArg::PartnerUnit => auth_pb::Role::PartnerUnit,
                    RoleArg::Deputy => auth_pb::Role::Deputy,
                    RoleArg::Volunteer => auth_pb::Role::Volunteer,
                    RoleArg::Supervisor => auth_pb::Role::Supervisor,
                    RoleArg::CommunityStaff => auth_pb::Role::CommunityStaff,
                    RoleArg::Service => auth_pb::Role::Service,
                };
                let created = TokensClient::with_interceptor(channel, token)
                    .create_token(auth_pb::CreateTokenRequest {
                        principal,
                        role: role as i32,
                        place_scope,
                        unit_scope,
                        ttl_seconds,
                        description,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                if let Some(t) = &created.token {
                    print_token(t);
                }
                say!("secret: {}", created.secret);
                say!("(shown once: only its hash is stored)");
            }
            TokenCommand::List { all, client } => {
                let (channel, token) = connect(&client).await?;
                let mut api = TokensClient::with_interceptor(channel, token);
                let mut page_token = String::new();
                loop {
                    let page = api
                        .list_tokens(auth_pb::ListTokensRequest {
                            page_size: 100,
                            page_token: page_token.clone(),
                            include_inactive: all,
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    page.tokens.iter().for_each(print_token);
                    page_token = page.next_page_token;
                    if page_token.is_empty() {
                        break;
                    }
                }
            }
            TokenCommand::Revoke { name, client } => {
                let (channel, token) = connect(&client).await?;
                let name = if name.starts_with("tokens/") {
                    name
                } else {
                    format!("tokens/{name}")
                };
                let t = TokensClient::with_interceptor(channel, token)
                    .revoke_token(auth_pb::RevokeTokenRequest { name })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_token(&t);
            }
            TokenCommand::Whoami { client } => {
                let (channel, token) = connect(&client).await?;
                let t = TokensClient::with_interceptor(channel, token)
                    .who_am_i(auth_pb::WhoAmIRequest {})
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                print_token(&t);
            }
        }
        Ok(())
    }
}

/// `minqing audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recorded reads of personal data, newest first.
    List {
        /// Only about this resource (e.g. cases/…).
        #[arg(long, default_value = "")]
        resource: String,
        /// Only by this actor (role:principal).
        #[arg(long, default_value = "")]
        actor: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl AuditCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        let AuditCommand::List {
            resource,
            actor,
            limit,
            client,
        } = self;
        let (channel, token) = connect(&client).await?;
        let page = minqing_proto::minqing::audit::v1::audit_client::AuditClient::with_interceptor(
            channel, token,
        )
        .list_audit_entries(minqing_proto::minqing::audit::v1::ListAuditEntriesRequest {
            page_size: limit,
            resource,
            actor,
            ..Default::default()
        })
        .await
        .map_err(CallError::from)?
        .into_inner();
        for e in &page.entries {
            say!(
                "{}  {:<32} {:<20} {}  ({})",
                time(&e.time),
                e.actor,
                e.action,
                e.resource,
                e.detail
            );
        }
        if page.entries.is_empty() {
            say!("no entries");
        }
        Ok(())
    }
}
