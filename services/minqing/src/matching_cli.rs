//! The CLI for matching: bulk-import volunteers from CSV (with a progress bar), list
//! volunteers and needs, show a need's best candidates, and plan a batch.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tonic::{codegen::InterceptedService, transport::Channel};

use crate::client::CallError;
use minqing_kit::feed::BearerToken;
use minqing_proto::minqing::{
    matching::v1::{
        self as pb, matching_client::MatchingClient, needs_client::NeedsClient,
        volunteers_client::VolunteersClient,
    },
    r#type::v1 as tpb,
};

/// Where matching listens and who calls it.
#[derive(Debug, Clone, Args)]
pub struct MatchingArgs {
    /// Matching's address.
    #[arg(
        long,
        env = "MINQING_MATCHING_ENDPOINT",
        default_value = "http://127.0.0.1:7403",
        global = true
    )]
    pub endpoint: String,
    /// A bearer token (community staff) [default: the admin token in the data directory].
    #[arg(long, env = "MINQING_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Where to find the admin token when --token is not given.
    #[arg(long, default_value = "./minqing-data", global = true)]
    pub data_dir: PathBuf,
}

type Authed = InterceptedService<Channel, BearerToken>;

async fn channel(args: &MatchingArgs) -> anyhow::Result<(Channel, BearerToken)> {
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

async fn volunteers(args: &MatchingArgs) -> anyhow::Result<VolunteersClient<Authed>> {
    let (c, t) = channel(args).await?;
    Ok(VolunteersClient::with_interceptor(c, t))
}

/// `minqing volunteer …`.
#[derive(Debug, Subcommand)]
pub enum VolunteerCommand {
    /// Register or update volunteers from a CSV file, keyed by external_id. Columns (header
    /// row required): external_id, display_name, name, phone, building (or grid or
    /// community), skills ("first-aid@2027-05-01;elderly-care": a date means a credential
    /// valid until then), languages ("zh;en"), availability ("mon 18:00-21:00;sat
    /// 09:00-12:00"), weekly_hours, max_open_tasks, party_member, teams ("teams/…;…"),
    /// offers (consent to offers), show_name. Missing optional columns take defaults.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Update volunteers already registered under the same external_id.
        #[arg(long)]
        update_existing: bool,
        /// Rows per call.
        #[arg(long, default_value_t = 200)]
        batch: usize,
        #[command(flatten)]
        client: MatchingArgs,
    },
    /// List volunteers.
    List {
        /// Only here (a place code).
        #[arg(long, default_value = "")]
        place: String,
        /// Only with this skill.
        #[arg(long, default_value = "")]
        skill: String,
        #[command(flatten)]
        client: MatchingArgs,
    },
}

/// `minqing need …`.
#[derive(Debug, Subcommand)]
pub enum NeedCommand {
    /// List open needs (the menu).
    List {
        /// Only here (a place code).
        #[arg(long, default_value = "")]
        place: String,
        /// Only needing this skill.
        #[arg(long, default_value = "")]
        skill: String,
        #[command(flatten)]
        client: MatchingArgs,
    },
    /// The best candidates for a need, with reasons.
    Candidates {
        /// The need (needs/… or its id).
        need: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        max: i32,
        #[command(flatten)]
        client: MatchingArgs,
    },
    /// Plan an optimal assignment of a place's open needs (add --offer to make the offers).
    Plan {
        /// The place (a code at any level).
        #[arg(long)]
        place: String,
        /// Make the planned offers.
        #[arg(long)]
        offer: bool,
        #[command(flatten)]
        client: MatchingArgs,
    },
}

fn hours(s: &str, v: &mut Vec<String>, field: &str) -> i32 {
    match s.trim().parse::<f64>() {
        Ok(h) if h > 0.0 => (h * 60.0).round() as i32,
        _ => {
            v.push(format!("{field}: {s:?} is not a number of hours"));
            0
        }
    }
}

fn day(s: &str) -> Option<i32> {
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => 1,
        "tue" => 2,
        "wed" => 3,
        "thu" => 4,
        "fri" => 5,
        "sat" => 6,
        "sun" => 7,
        _ => return None,
    })
}

fn minute(s: &str) -> Option<i32> {
    let (h, m) = s.trim().split_once(':')?;
    Some(h.parse::<i32>().ok()? * 60 + m.parse::<i32>().ok()?)
}

fn date_end(s: &str) -> Option<prost_types::Timestamp> {
    let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    let t = d.and_hms_opt(23, 59, 59)?.and_utc().timestamp() - 8 * 3600;
    Some(prost_types::Timestamp {
        seconds: t,
        nanos: 0,
    })
}

fn truthy(s: Option<&str>, default: bool) -> bool {
    match s.map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if !s.is_empty() => matches!(s.as_str(), "1" | "y" | "yes" | "true" | "是"),
        _ => default,
    }
}

/// One CSV row as a volunteer; local problems (unparsable hours or windows) are returned.
fn row(get: &dyn Fn(&str) -> Option<String>) -> (pb::Volunteer, Vec<String>) {
    let mut problems = Vec::new();
    let list = |k: &str| -> Vec<String> {
        get(k)
            .map(|s| {
                s.split(';')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let place_code = get("building")
        .or_else(|| get("grid"))
        .or_else(|| get("community"))
        .unwrap_or_default();
    let home = if get("building").is_some() {
        tpb::Place {
            building: place_code,
            ..Default::default()
        }
    } else if get("grid").is_some() {
        tpb::Place {
            grid: place_code,
            ..Default::default()
        }
    } else {
        tpb::Place {
            community: place_code,
            ..Default::default()
        }
    };
    let skills = list("skills")
        .into_iter()
        .map(|s| match s.split_once('@') {
            Some((skill, until)) => {
                let expire = date_end(until);
                if expire.is_none() {
                    problems.push(format!("skills: {until:?} is not a date (YYYY-MM-DD)"));
                }
                pb::Skill {
                    skill: skill.to_string(),
                    credential: Some(pb::Credential {
                        title: skill.to_string(),
                        expire_time: expire,
                        ..Default::default()
                    }),
                }
            }
            None => pb::Skill {
                skill: s,
                credential: None,
            },
        })
        .collect();
    let mut weekly = Vec::new();
    for w in list("availability") {
        let parsed = w.split_once(' ').and_then(|(d, span)| {
            let (a, b) = span.split_once('-')?;
            Some(pb::WeeklyWindow {
                day: day(d)?,
                start_minute: minute(a)?,
                end_minute: minute(b)?,
            })
        });
        match parsed {
            Some(p) => weekly.push(p),
            None => problems.push(format!(
                "availability: {w:?} is not like \"mon 18:00-21:00\""
            )),
        }
    }
    let weekly_minutes =
        get("weekly_hours").map_or(600, |h| hours(&h, &mut problems, "weekly_hours"));
    let max_open_tasks = get("max_open_tasks").map_or(3, |s| {
        s.trim().parse().unwrap_or_else(|_| {
            problems.push(format!("max_open_tasks: {s:?} is not a number"));
            0
        })
    });
    let v = pb::Volunteer {
        external_id: get("external_id").unwrap_or_default(),
        display_name: get("display_name").unwrap_or_default(),
        contact: Some(tpb::Contact {
            name: get("name").unwrap_or_default(),
            phone: get("phone").unwrap_or_default(),
            preferred_method: tpb::ContactMethod::Phone as i32,
            ..Default::default()
        }),
        home: Some(home),
        skills,
        languages: list("languages"),
        availability: Some(pb::Availability {
            weekly,
            exceptions: vec![],
        }),
        capacity: Some(pb::Capacity {
            weekly_minutes,
            max_open_tasks,
        }),
        party_member: truthy(get("party_member").as_deref(), false),
        teams: list("teams"),
        consent: Some(pb::Consent {
            data_processing: true,
            offers: truthy(get("offers").as_deref(), true),
            show_name: truthy(get("show_name").as_deref(), false),
            consent_time: None,
        }),
        ..Default::default()
    };
    (v, problems)
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<(usize, pb::Volunteer, Vec<String>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 2))?;
        let get = |k: &str| -> Option<String> {
            let idx = headers.iter().position(|h| h == k)?;
            record
                .get(idx)
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        let (v, problems) = row(&get);
        out.push((i + 2, v, problems));
    }
    Ok(out)
}

impl VolunteerCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            VolunteerCommand::Import {
                file,
                update_existing,
                batch,
                client,
            } => {
                let rows = read_csv(&file)?;
                let mut api = volunteers(&client).await?;
                let bar = ProgressBar::new(rows.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} rows  {per_sec}  eta {eta}  {msg}")
                        .map_err(|e| anyhow::anyhow!("progress template: {e}"))?
                        .progress_chars("=> "),
                );
                let (mut created, mut updated, mut unchanged) = (0, 0, 0);
                let mut failures: Vec<String> = Vec::new();
                for chunk in rows.chunks(batch.clamp(1, 500)) {
                    let mut sent = Vec::new();
                    for (line, v, problems) in chunk {
                        if problems.is_empty() {
                            sent.push((*line, v.clone()));
                        } else {
                            failures.push(format!("line {line}: {}", problems.join("; ")));
                        }
                    }
                    if !sent.is_empty() {
                        let response = api
                            .import_volunteers(pb::ImportVolunteersRequest {
                                volunteers: sent.iter().map(|(_, v)| v.clone()).collect(),
                                update_existing,
                            })
                            .await
                            .map_err(CallError::from)?
                            .into_inner();
                        for r in response.results {
                            match pb::ImportOutcome::try_from(r.outcome) {
                                Ok(pb::ImportOutcome::Created) => created += 1,
                                Ok(pb::ImportOutcome::Updated) => updated += 1,
                                Ok(pb::ImportOutcome::Unchanged) => unchanged += 1,
                                _ => {
                                    let line = sent.get(r.index as usize).map_or(0, |s| s.0);
                                    let why: Vec<String> = r
                                        .violations
                                        .iter()
                                        .map(|v| format!("{}: {}", v.field, v.description))
                                        .collect();
                                    failures.push(format!(
                                        "line {line} ({}): {}",
                                        r.external_id,
                                        why.join("; ")
                                    ));
                                }
                            }
                        }
                    }
                    bar.inc(chunk.len() as u64);
                    bar.set_message(format!(
                        "{created} new, {updated} updated, {} failed",
                        failures.len()
                    ));
                }
                bar.finish();
                say!(
                    "{created} registered, {updated} updated, {unchanged} unchanged, {} failed",
                    failures.len()
                );
                for f in &failures {
                    say!("  {f}");
                }
                if !failures.is_empty() {
                    anyhow::bail!("{} rows were not imported", failures.len());
                }
            }
            VolunteerCommand::List {
                place,
                skill,
                client,
            } => {
                let mut api = volunteers(&client).await?;
                let mut page_token = String::new();
                loop {
                    let page = api
                        .list_volunteers(pb::ListVolunteersRequest {
                            page_size: 200,
                            page_token,
                            place: place.clone(),
                            skill: skill.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(CallError::from)?
                        .into_inner();
                    for v in &page.volunteers {
                        let skills: Vec<&str> = v.skills.iter().map(|s| s.skill.as_str()).collect();
                        let stats = v.stats.unwrap_or_default();
                        say!(
                            "{}  {}  [{}]  open {}  {} min this week",
                            v.name,
                            v.display_name,
                            skills.join(","),
                            stats.open_tasks,
                            stats.week_minutes
                        );
                    }
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
            }
        }
        Ok(())
    }
}

fn need_name(s: &str) -> String {
    if s.starts_with("needs/") {
        s.to_string()
    } else {
        format!("needs/{s}")
    }
}

impl NeedCommand {
    /// Runs it.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            NeedCommand::List {
                place,
                skill,
                client,
            } => {
                let (c, t) = channel(&client).await?;
                let mut api = NeedsClient::with_interceptor(c, t);
                let page = api
                    .list_needs(pb::ListNeedsRequest {
                        page_size: 200,
                        place,
                        skill,
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                for n in &page.needs {
                    say!(
                        "{}  {}  {} of {} taken  effort {} min  [{}]",
                        n.name,
                        n.title,
                        n.people_accepted + n.people_pending,
                        n.people_needed,
                        n.effort_minutes,
                        n.community
                    );
                }
            }
            NeedCommand::Candidates { need, max, client } => {
                let (c, t) = channel(&client).await?;
                let mut api = MatchingClient::with_interceptor(c, t);
                let found = api
                    .find_candidates(pb::FindCandidatesRequest {
                        need: need_name(&need),
                        max_candidates: max,
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{} eligible of {} volunteers",
                    found.eligible_count,
                    found.considered_count
                );
                for (i, c) in found.candidates.iter().enumerate() {
                    say!(
                        "{:>2}. {}  {}  score {:.3}",
                        i + 1,
                        c.volunteer,
                        c.display_name,
                        c.score
                    );
                    for r in &c.reasons {
                        say!("      {:.2} × {:.2}  {}", r.value, r.weight, r.summary);
                    }
                }
            }
            NeedCommand::Plan {
                place,
                offer,
                client,
            } => {
                let (c, t) = channel(&client).await?;
                let mut api = MatchingClient::with_interceptor(c, t);
                let plan = api
                    .plan_assignments(pb::PlanAssignmentsRequest {
                        place,
                        make_offers: offer,
                        ..Default::default()
                    })
                    .await
                    .map_err(CallError::from)?
                    .into_inner();
                say!(
                    "{} of {} places filled over {} needs (total score {:.2})",
                    plan.places_filled,
                    plan.places_requested,
                    plan.needs_considered,
                    plan.total_score
                );
                for a in &plan.assignments {
                    say!(
                        "  {} → {} {} ({:.3})",
                        a.need,
                        a.volunteer,
                        a.display_name,
                        a.score
                    );
                }
                for u in &plan.unfilled {
                    say!(
                        "  unfilled: {} ({} places, {} eligible)",
                        u.need,
                        u.places,
                        u.eligible_count
                    );
                }
                if offer {
                    say!("{} offers made", plan.offers.len());
                }
            }
        }
        Ok(())
    }
}
