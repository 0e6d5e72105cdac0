//! Cases: SubmitCase, GetCase, ListCases, SupplementCase, WithdrawCase, GetCaseTimeline.

use prost::{Message, Name};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{
    PERSONAL_ROLES, READ_ROLES, SUBMIT_ROLES, State, audited, check_scope, convert,
    convert::Personal, personal, validate,
};
use crate::{
    domain::{Case, CaseState, Channel},
    store::{self, CaseFilter, Inserted},
};
use minqing_kit::{
    auth::{Principal, caller},
    error::{FieldViolations, already_exists, failed_precondition, not_found, permission_denied},
    feed::{self, EventMeta, EventRow},
    time::{from_timestamp, to_timestamp},
};
use minqing_proto::minqing::intake::v1 as pb;

/// How many times a change is retried when the case changed underneath it.
const RETRIES: usize = 3;

fn request_hash<M: Message>(m: &M) -> String {
    hex::encode(Sha256::digest(m.encode_to_vec()))
}

pub(super) async fn submit(
    state: &State,
    request: Request<pb::SubmitCaseRequest>,
) -> Result<Response<pb::Case>, Status> {
    let principal = caller(&request)?.require(SUBMIT_ROLES)?.clone();
    let req = request.into_inner();
    let hash = request_hash(&req);
    let request_id = req.request_id.clone();
    let now = state.clock.now_micros();
    let submission = validate::submit(req, &state.catalogue, &state.gazetteer, now)?;
    if !principal.covers_place(submission.place.codes()) {
        return Err(permission_denied(
            "OUT_OF_SCOPE",
            "the case's place is outside your place scope",
        ));
    }
    let case = Case {
        id: uuid::Uuid::now_v7().to_string(),
        request_id,
        recorded_by: principal.actor(),
        submission,
        state: CaseState::Submitted,
        disposition: None,
        handling_unit: String::new(),
        due_time: None,
        cluster: None,
        supplement_count: 0,
        withdraw_reason: String::new(),
        create_time: now,
        update_time: now,
        version: 1,
        cluster_version: 0,
    };
    let event = EventRow::new(
        &EventMeta::current(principal.actor()),
        &case.name(),
        &pb::CaseSubmitted {
            case: Some(convert::case(&case, Personal::Shown)),
        },
        now,
    );
    let item = store::NewCase {
        case,
        request_hash: hash,
        event,
    };
    let (item, answer) = state.submitter.submit(item).await?;
    let store::NewCase {
        case,
        request_hash: hash,
        ..
    } = item;
    match answer {
        Inserted::New => {
            tracing::info!(case = %case.id, channel = ?case.submission.channel, category = %case.submission.category, "case submitted");
            Ok(Response::new(convert::case(
                &case,
                personal(&principal, &case),
            )))
        }
        Inserted::Existing {
            request_hash,
            case: existing,
        } => {
            if request_hash == hash {
                Ok(Response::new(convert::case(
                    &existing,
                    personal(&principal, &existing),
                )))
            } else {
                Err(already_exists(
                    "case",
                    &existing.name(),
                    format!(
                        "request_id {} was already used for a different request",
                        existing.request_id
                    ),
                ))
            }
        }
    }
}

/// Loads a case the caller may see, or the right error.
async fn visible_case(state: &State, principal: &Principal, name: &str) -> Result<Case, Status> {
    let mut v = FieldViolations::new();
    let id = validate::case_name(&mut v, "name", name);
    v.finish()?;
    let id = id.expect("checked");
    let case = store::get_case(state.db.pool(), &id)
        .await?
        .ok_or_else(|| not_found("case", name))?;
    check_scope(principal, &case)?;
    Ok(case)
}

pub(super) async fn get(
    state: &State,
    request: Request<pb::GetCaseRequest>,
) -> Result<Response<pb::Case>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?;
    let case = visible_case(state, principal, &request.get_ref().name).await?;
    let shown = audited(state, principal, &case, "minqing.intake.v1.Intake/GetCase").await;
    Ok(Response::new(convert::case(&case, shown)))
}

pub(super) async fn list(
    state: &State,
    request: Request<pb::ListCasesRequest>,
) -> Result<Response<pb::ListCasesResponse>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?;
    let req = request.get_ref();
    let mut v = FieldViolations::new();
    v.check(
        !(0..=500).contains(&req.page_size),
        "page_size",
        "must be 0 to 500",
    );
    let mut filter = CaseFilter::default();
    for (i, s) in req.states.iter().enumerate() {
        match CaseState::from_wire(*s) {
            Some(s) => filter.states.push(s),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    for (i, c) in req.channels.iter().enumerate() {
        match Channel::from_wire(*c) {
            Some(c) => filter.channels.push(c.wire()),
            None => v.add(format!("channels[{i}]"), "unknown channel"),
        }
    }
    v.check(
        filter.states.len() > 20 || filter.channels.len() > 20,
        "states",
        "at most 20 values each",
    );
    if !req.category.is_empty() {
        if state.catalogue.item(&req.category).is_none() {
            v.add(
                "category",
                format!("unknown catalogue item {}", req.category),
            );
        }
        filter.category = Some(req.category.clone());
    }
    let place_column = |code: &str| state.gazetteer.get(code).map(|e| e.level.field());
    if !req.place.is_empty() {
        match place_column(&req.place) {
            Some(column) => filter.place = Some((column, req.place.clone())),
            None => v.add("place", format!("unknown place code {}", req.place)),
        }
    }
    if let Some(scope) = &principal.place_scope {
        // A scope the gazetteer does not know matches nothing.
        let column = place_column(scope).unwrap_or("building");
        filter.scope = Some((column, scope.clone()));
    }
    for (field, ts, slot) in [
        ("submitted_after", &req.submitted_after, &mut filter.after),
        (
            "submitted_before",
            &req.submitted_before,
            &mut filter.before,
        ),
    ] {
        if let Some(ts) = ts {
            match from_timestamp(ts) {
                Some(t) => *slot = Some(t),
                None => v.add(field, "not a valid timestamp"),
            }
        }
    }
    if let (Some(a), Some(b)) = (filter.after, filter.before) {
        v.check(
            a > b,
            "submitted_before",
            "must not be before submitted_after",
        );
    }
    if !req.reporter_phone.is_empty() {
        if !principal.is(PERSONAL_ROLES) {
            return Err(permission_denied(
                "PERSONAL_DATA",
                "your role may not search by the reporter's phone",
            ));
        }
        filter.phone = Some(req.reporter_phone.trim().to_string());
    }
    if !req.cluster.is_empty() {
        filter.cluster = validate::cluster_name(&mut v, "cluster", &req.cluster);
    }
    // The token binds the page to the same filter: it carries the filter's fingerprint.
    let fingerprint = {
        let mut unpaged = req.clone();
        unpaged.page_token.clear();
        unpaged.page_size = 0;
        request_hash(&unpaged)[..16].to_string()
    };
    if !req.page_token.is_empty() {
        match req.page_token.split_once('.') {
            Some((fp, last)) if fp == fingerprint && uuid::Uuid::parse_str(last).is_ok() => {
                filter.below_id = Some(last.to_string());
            }
            _ => v.add(
                "page_token",
                "not a token from a previous page of this same request",
            ),
        }
    }
    v.finish()?;
    let limit = if req.page_size == 0 {
        50
    } else {
        i64::from(req.page_size)
    };
    let mut cases = store::list_cases(state.db.pool(), &filter, limit + 1).await?;
    let next_page_token = if cases.len() as i64 > limit {
        cases.truncate(limit as usize);
        cases
            .last()
            .map(|c| format!("{fingerprint}.{}", c.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut shown = Vec::with_capacity(cases.len());
    for c in &cases {
        let personal = audited(state, principal, c, "minqing.intake.v1.Intake/ListCases").await;
        shown.push(convert::case(c, personal));
    }
    Ok(Response::new(pb::ListCasesResponse {
        cases: shown,
        next_page_token,
    }))
}

pub(super) async fn supplement(
    state: &State,
    request: Request<pb::SupplementCaseRequest>,
) -> Result<Response<pb::Case>, Status> {
    let principal = caller(&request)?.require(SUBMIT_ROLES)?.clone();
    let req = request.into_inner();
    let hash = request_hash(&req);
    let request_id = req.request_id.clone();
    let (id, note, attachments) = validate::supplement(req)?;
    let name = format!("cases/{id}");
    for _ in 0..RETRIES {
        let now = state.clock.now_micros();
        let mut tx = state.db.begin().await?;
        let mut case = store::get_case(tx.conn(), &id)
            .await?
            .ok_or_else(|| not_found("case", &name))?;
        check_scope(&principal, &case)?;
        if let Some(earlier) =
            store::insert_supplement(&mut tx, &id, &request_id, &hash, now).await?
        {
            tx.rollback().await?;
            return if earlier == hash {
                Ok(Response::new(convert::case(
                    &case,
                    personal(&principal, &case),
                )))
            } else {
                Err(already_exists(
                    "supplement",
                    &name,
                    format!("request_id {request_id} was already used for a different supplement"),
                ))
            };
        }
        if !case.state.is_open() {
            return Err(failed_precondition(
                "CASE_CLOSED",
                &name,
                format!("the case is {:?}; it takes no more supplements", case.state),
            ));
        }
        let previous = case.state;
        let version = case.version;
        case.supplement_count += 1;
        if case.state == CaseState::AwaitingPapers {
            case.state = CaseState::InProgress;
        }
        case.update_time = now;
        case.version += 1;
        if !store::update_case(&mut tx, &case, version).await? {
            continue;
        }
        let event = pb::CaseSupplemented {
            case: Some(convert::case(&case, Personal::Shown)),
            note: note.clone(),
            attachments: convert::attachments(&attachments),
            previous_state: previous.wire(),
        };
        feed::append(
            &mut tx,
            &EventMeta::current(principal.actor()),
            &name,
            &event,
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(Response::new(convert::case(
            &case,
            personal(&principal, &case),
        )));
    }
    Err(Status::aborted("the case kept changing; retry"))
}

pub(super) async fn withdraw(
    state: &State,
    request: Request<pb::WithdrawCaseRequest>,
) -> Result<Response<pb::Case>, Status> {
    let principal = caller(&request)?.require(SUBMIT_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::case_name(&mut v, "name", &req.name);
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 1_000, true);
    v.finish()?;
    let id = id.expect("checked");
    for _ in 0..RETRIES {
        let now = state.clock.now_micros();
        let mut tx = state.db.begin().await?;
        let mut case = store::get_case(tx.conn(), &id)
            .await?
            .ok_or_else(|| not_found("case", &req.name))?;
        check_scope(&principal, &case)?;
        if case.state == CaseState::Withdrawn {
            return Ok(Response::new(convert::case(
                &case,
                personal(&principal, &case),
            )));
        }
        if !case.state.is_open() {
            return Err(failed_precondition(
                "CASE_CLOSED",
                &req.name,
                format!(
                    "the case is {:?} and can no longer be withdrawn",
                    case.state
                ),
            ));
        }
        let version = case.version;
        case.state = CaseState::Withdrawn;
        case.withdraw_reason = reason.clone();
        case.update_time = now;
        case.version += 1;
        if !store::update_case(&mut tx, &case, version).await? {
            continue;
        }
        let event = pb::CaseWithdrawn {
            case: Some(convert::case(&case, Personal::Shown)),
            reason: reason.clone(),
        };
        feed::append(
            &mut tx,
            &EventMeta::current(principal.actor()),
            &case.name(),
            &event,
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(Response::new(convert::case(
            &case,
            personal(&principal, &case),
        )));
    }
    Err(Status::aborted("the case kept changing; retry"))
}

pub(super) async fn timeline(
    state: &State,
    request: Request<pb::GetCaseTimelineRequest>,
) -> Result<Response<pb::CaseTimeline>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?;
    let case = visible_case(state, principal, &request.get_ref().name).await?;
    let events = store::case_events(state.db.pool(), &case.name()).await?;
    let entries = events
        .into_iter()
        .filter_map(|(kind, time, actor, payload)| entry(&kind, time, &actor, &payload))
        .collect();
    Ok(Response::new(pb::CaseTimeline {
        case: case.name(),
        entries,
    }))
}

/// Who acted, as a resident is told: a post or unit, never a private person's name.
fn actor_label(actor: &str) -> &'static str {
    match actor.split_once(':').map(|(role, _)| role) {
        Some("window_staff") => "Service hall",
        Some("grid_worker") => "Grid worker",
        Some("community_staff") => "Community service station",
        Some("district_system") => "District service platform",
        Some("deputy") => "Deputies' liaison station",
        Some("supervisor") => "Supervisor",
        Some("partner_unit") => "Handling unit",
        Some("city_admin") => "City administration",
        _ => "Minqing",
    }
}

/// One timeline entry from one of the case's events; `None` for kinds residents are not told of.
fn entry(kind: &str, time: i64, actor: &str, payload: &[u8]) -> Option<pb::TimelineEntry> {
    let state_of = |c: &Option<pb::Case>| c.as_ref().map_or(0, |c| c.state);
    let (summary, state) = if kind == pb::CaseSubmitted::full_name() {
        let e = pb::CaseSubmitted::decode(payload).ok()?;
        let channel = e
            .case
            .as_ref()
            .and_then(|c| Channel::from_wire(c.channel))
            .map_or("a channel", Channel::label);
        (
            format!("Your report was received through {channel}."),
            state_of(&e.case),
        )
    } else if kind == pb::CaseSupplemented::full_name() {
        let e = pb::CaseSupplemented::decode(payload).ok()?;
        let n = e.attachments.len();
        let papers = if n == 0 {
            "Additional information was received.".to_string()
        } else {
            format!("{n} additional document(s) were received.")
        };
        (papers, state_of(&e.case))
    } else if kind == pb::CaseWithdrawn::full_name() {
        let e = pb::CaseWithdrawn::decode(payload).ok()?;
        (
            "The case was withdrawn at your request.".to_string(),
            state_of(&e.case),
        )
    } else if kind == pb::CaseClustered::full_name() {
        let e = pb::CaseClustered::decode(payload).ok()?;
        // Events written before `size` existed list the members instead.
        let listed = e.cluster.as_ref().map_or(0, |c| c.cases.len());
        let others = usize::try_from(e.size)
            .unwrap_or(0)
            .max(listed)
            .saturating_sub(1);
        (
            format!(
                "Linked with {others} other report(s) of the same issue; one collective reply will reach everyone."
            ),
            0,
        )
    } else if kind == pb::CaseUnclustered::full_name() {
        ("No longer linked with other reports.".to_string(), 0)
    } else if kind == pb::CaseStateChanged::full_name() {
        let e = pb::CaseStateChanged::decode(payload).ok()?;
        (e.summary.clone(), state_of(&e.case))
    } else {
        return None;
    };
    Some(pb::TimelineEntry {
        time: Some(to_timestamp(time)),
        kind: kind.to_string(),
        summary,
        state,
        actor: actor_label(actor).to_string(),
    })
}
