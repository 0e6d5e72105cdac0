//! Needs and menus: CreateNeed, GetNeed, ListNeeds, UpdateNeed, CancelNeed, PublishMenu,
//! GetMenu, ListMenus.

use tonic::Request;

use super::{
    MENU_READERS, POSTERS, STAFF, convert, hash, in_scope, place_filter, scope_filter, validate,
};
use crate::{
    domain::{
        AssigneeKind, ClaimPolicy, Menu, Need, NeedSource, NeedSpec, NeedState, SkillRequirement,
        Urgency,
    },
    error::Error,
    ops::{self, Ctx},
    store::{self, Inserted},
};
use minqing_kit::{
    auth::{Principal, Role, caller},
    error::FieldViolations,
    time::Micros,
};
use minqing_proto::minqing::matching::v1 as pb;

/// Checks a need as given on the wire.
pub(crate) fn spec(ctx: &Ctx, v: &mut FieldViolations, n: &pb::Need) -> Option<NeedSpec> {
    let before = v.violations().len();
    let place = validate::place(v, "need.place", &ctx.gazetteer, &n.place);
    let address = n
        .place
        .as_ref()
        .map(|p| validate::text(v, "need.place.address", &p.address, 0, 500, false))
        .unwrap_or_default();
    let location = n
        .place
        .as_ref()
        .and_then(|p| validate::location(v, "need.place.location", &p.location));
    let start = validate::time(v, "need.start_time", &n.start_time, true);
    let end = validate::time(v, "need.end_time", &n.end_time, true);
    if let (Some(s), Some(e)) = (start, end) {
        v.check(
            e <= s || e - s > 90 * 86_400_000_000,
            "need.end_time",
            "after the start, within 90 days of it",
        );
    }
    v.check(
        !(15..=1_440).contains(&n.effort_minutes),
        "need.effort_minutes",
        "must be 15 to 1440",
    );
    v.check(
        !(1..=100).contains(&n.people_needed),
        "need.people_needed",
        "must be 1 to 100",
    );
    v.check(n.skills.len() > 10, "need.skills", "at most 10");
    let mut skills: Vec<SkillRequirement> = Vec::new();
    for (i, s) in n.skills.iter().enumerate() {
        let code = s.skill.trim();
        if !crate::domain::is_code(code) || skills.iter().any(|x| x.skill == code) {
            v.add(format!("need.skills[{i}].skill"), "a skill code, each once");
        } else {
            skills.push(SkillRequirement {
                skill: code.to_string(),
                credential_required: s.credential_required,
            });
        }
    }
    let claim_policy = match n.claim_policy {
        0 => ClaimPolicy::FirstCome,
        c => ClaimPolicy::from_wire(c).unwrap_or_else(|| {
            v.add("need.claim_policy", "unknown policy");
            ClaimPolicy::FirstCome
        }),
    };
    let mut open_to = Vec::new();
    for (i, k) in n.open_to.iter().enumerate() {
        match AssigneeKind::from_wire(*k) {
            Some(k) if !open_to.contains(&k) => open_to.push(k),
            _ => v.add(
                format!("need.open_to[{i}]"),
                "a kind of assignee, each once",
            ),
        }
    }
    let urgency = match n.urgency {
        0 => Urgency::Normal,
        u => Urgency::from_wire(u).unwrap_or_else(|| {
            v.add("need.urgency", "unknown urgency");
            Urgency::Normal
        }),
    };
    let category = validate::text(v, "need.category", &n.category, 0, 100, false);
    let spec = NeedSpec {
        title: validate::text(v, "need.title", &n.title, 1, 200, false),
        description: validate::text(v, "need.description", &n.description, 0, 4_000, true),
        place: place.unwrap_or_default(),
        address,
        location,
        category,
        skills,
        languages: validate::codes(v, "need.languages", &n.languages, 5),
        start: start.unwrap_or(0),
        end: end.unwrap_or(0),
        effort_minutes: n.effort_minutes.max(0) as u32,
        people_needed: n.people_needed.max(0) as u32,
        claim_policy,
        open_to,
        party_members_only: n.party_members_only,
        urgency,
    };
    (v.violations().len() == before).then_some(spec)
}

/// Whether the caller sees only published needs (volunteers and partners).
fn menu_only(p: &Principal) -> bool {
    matches!(p.role, Role::Volunteer | Role::PartnerUnit)
}

/// Inserts a new need (and its event); shared with the consumer of routing's feed.
pub(crate) async fn insert_need(
    ctx: &Ctx,
    tx: &mut minqing_kit::db::Tx,
    need: &Need,
    request_hash: &str,
    source_event: &str,
    actor: &str,
    now: Micros,
) -> Result<Inserted<Need>, Error> {
    let inserted = store::needs::insert(tx, need, request_hash).await?;
    if let Inserted::New = inserted {
        let event = pb::NeedPosted {
            need: Some(convert::need(need)),
            source_event: source_event.to_string(),
        };
        ops::emit(tx, actor, &need.name(), &event, now).await?;
    }
    let _ = ctx;
    Ok(inserted)
}

pub(super) async fn create(
    ctx: &Ctx,
    request: Request<pb::CreateNeedRequest>,
) -> Result<pb::Need, Error> {
    let principal = caller(&request)?.require(POSTERS)?.clone();
    let req = request.into_inner();
    let h = hash(&req);
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let spec = spec(ctx, &mut v, &req.need.unwrap_or_default());
    let Some(spec) = spec.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    in_scope(&principal, &spec.place)?;
    let now = ctx.clock.now_micros();
    let state = if req.publish {
        NeedState::Open
    } else {
        NeedState::Draft
    };
    let need = Need {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: req.request_id,
        source: NeedSource::Community,
        case: None,
        spec,
        state,
        menu: None,
        people_accepted: 0,
        people_pending: 0,
        people_done: 0,
        posted_by: principal.actor(),
        create_time: now,
        update_time: now,
        publish_time: req.publish.then_some(now),
        cancel_reason: String::new(),
        version: 1,
    };
    let mut tx = ctx.db.begin().await?;
    match insert_need(ctx, &mut tx, &need, &h, "", &principal.actor(), now).await? {
        Inserted::New => {
            tx.commit().await?;
            Ok(convert::need(&need))
        }
        Inserted::Existing {
            request_hash,
            value,
        } => {
            tx.rollback().await?;
            if request_hash == h {
                Ok(convert::need(&value))
            } else {
                Err(Error::precondition(
                    "REQUEST_ID_REUSED",
                    value.name(),
                    "request_id was already used for a different request",
                ))
            }
        }
    }
}

/// Loads a need the caller may see.
pub(crate) async fn visible(ctx: &Ctx, p: &Principal, name: &str) -> Result<Need, Error> {
    p.require(MENU_READERS)?;
    let mut v = FieldViolations::new();
    let Some(id) = validate::name(&mut v, "name", name, "needs") else {
        return Err(Error::Invalid(v));
    };
    let need = store::needs::get(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("need", name.to_string()))?;
    if menu_only(p) {
        if matches!(need.state, NeedState::Draft | NeedState::Cancelled) {
            return Err(Error::NotFound("need", name.to_string()));
        }
    } else {
        in_scope(p, &need.spec.place)?;
    }
    Ok(need)
}

pub(super) async fn get(
    ctx: &Ctx,
    request: Request<pb::GetNeedRequest>,
) -> Result<pb::Need, Error> {
    let principal = caller(&request)?.clone();
    Ok(convert::need(
        &visible(ctx, &principal, &request.get_ref().name).await?,
    ))
}

pub(super) async fn list(
    ctx: &Ctx,
    request: Request<pb::ListNeedsRequest>,
) -> Result<pb::ListNeedsResponse, Error> {
    let principal = caller(&request)?.require(MENU_READERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let mut f = store::needs::Filter {
        place: place_filter(ctx, &mut v, "place", &req.place),
        scope: if menu_only(&principal) {
            None
        } else {
            scope_filter(ctx, &principal)
        },
        ..Default::default()
    };
    if !req.skill.is_empty() {
        f.skill = Some(req.skill.clone());
    }
    let ws = validate::time(&mut v, "window_start", &req.window_start, false);
    let we = validate::time(&mut v, "window_end", &req.window_end, false);
    if ws.is_some() || we.is_some() {
        let (s, e) = (ws.unwrap_or(i64::MIN / 2), we.unwrap_or(i64::MAX / 2));
        v.check(e <= s, "window_end", "must be after window_start");
        f.window = Some((s, e));
    }
    let mut states = Vec::new();
    for (i, s) in req.states.iter().enumerate() {
        match NeedState::from_wire(*s) {
            Some(s) => states.push(s),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    if states.is_empty() {
        states.push(NeedState::Open);
    }
    if menu_only(&principal) {
        states.retain(|s| matches!(s, NeedState::Open | NeedState::Filled));
        if states.is_empty() {
            states.push(NeedState::Open);
        }
    }
    f.states = states.iter().map(|s| i64::from(s.wire())).collect();
    if !req.case.is_empty() {
        f.case = validate::name(&mut v, "case", &req.case, "cases").map(|id| format!("cases/{id}"));
    }
    if !req.menu.is_empty() {
        f.menu = validate::name(&mut v, "menu", &req.menu, "menus");
    }
    let fingerprint = {
        let mut unpaged = req.clone();
        unpaged.page_token.clear();
        unpaged.page_size = 0;
        hash(&unpaged)[..16].to_string()
    };
    if !req.page_token.is_empty() {
        let parsed = req.page_token.split('.').collect::<Vec<_>>();
        match parsed.as_slice() {
            [fp, t, id] if *fp == fingerprint && uuid::Uuid::parse_str(id).is_ok() => {
                match t.parse::<i64>() {
                    Ok(t) => f.after = Some((t, id.to_string())),
                    Err(_) => v.add(
                        "page_token",
                        "not a token from a previous page of this same request",
                    ),
                }
            }
            _ => v.add(
                "page_token",
                "not a token from a previous page of this same request",
            ),
        }
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let mut needs = store::needs::list(ctx.db.pool(), &f, limit + 1).await?;
    let next_page_token = if needs.len() as i64 > limit {
        needs.truncate(limit as usize);
        needs
            .last()
            .map(|n| format!("{fingerprint}.{}.{}", n.spec.start, n.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListNeedsResponse {
        needs: needs.iter().map(convert::need).collect(),
        next_page_token,
    })
}

const UPDATABLE: &[&str] = &[
    "title",
    "description",
    "place",
    "category",
    "skills",
    "languages",
    "start_time",
    "end_time",
    "effort_minutes",
    "people_needed",
    "claim_policy",
    "open_to",
    "party_members_only",
    "urgency",
];

pub(super) async fn update(
    ctx: &Ctx,
    request: Request<pb::UpdateNeedRequest>,
) -> Result<pb::Need, Error> {
    let principal = caller(&request)?.require(POSTERS)?.clone();
    let req = request.into_inner();
    let given = req.need.unwrap_or_default();
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "need.name", &given.name, "needs");
    v.check(paths.is_empty(), "update_mask", "name the fields to change");
    for (i, p) in paths.iter().enumerate() {
        v.check(
            !UPDATABLE.contains(&p.as_str()),
            format!("update_mask.paths[{i}]"),
            format!("{p} cannot be changed"),
        );
    }
    let Some(id) = id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let need = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut need = store::needs::get(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("need", given.name.clone()))?;
        in_scope(&principal, &need.spec.place)?;
        if !matches!(
            need.state,
            NeedState::Draft | NeedState::Open | NeedState::Filled
        ) {
            return Err(Error::precondition(
                "NEED_CLOSED",
                need.name(),
                "only draft, open or filled needs can change",
            ));
        }
        let mut merged = convert::need(&need);
        for p in &paths {
            match p.as_str() {
                "title" => merged.title = given.title.clone(),
                "description" => merged.description = given.description.clone(),
                "place" => merged.place = given.place.clone(),
                "category" => merged.category = given.category.clone(),
                "skills" => merged.skills = given.skills.clone(),
                "languages" => merged.languages = given.languages.clone(),
                "start_time" => merged.start_time = given.start_time,
                "end_time" => merged.end_time = given.end_time,
                "effort_minutes" => merged.effort_minutes = given.effort_minutes,
                "people_needed" => merged.people_needed = given.people_needed,
                "claim_policy" => merged.claim_policy = given.claim_policy,
                "open_to" => merged.open_to = given.open_to.clone(),
                "party_members_only" => merged.party_members_only = given.party_members_only,
                _ => merged.urgency = given.urgency,
            }
        }
        let mut v = FieldViolations::new();
        let Some(spec) = spec(ctx, &mut v, &merged).filter(|_| v.is_empty()) else {
            return Err(Error::Invalid(v));
        };
        in_scope(&principal, &spec.place)?;
        if spec.people_needed < need.people_accepted + need.people_pending {
            let mut v = FieldViolations::new();
            v.add(
                "need.people_needed",
                "may not drop below the places already taken",
            );
            return Err(Error::Invalid(v));
        }
        let (expected, before) = (need.version, need.state);
        need.spec = spec;
        need.state = need.settled_state();
        need.update_time = now;
        need.version += 1;
        let event = pb::NeedUpdated {
            need: Some(convert::need(&need)),
            changed_fields: paths.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &need.name(), &event, now).await?;
        ops::save_need(&mut tx, &need, expected, before, &principal.actor(), now).await?;
        tx.commit().await?;
        Ok(need)
    })?;
    Ok(convert::need(&need))
}

pub(super) async fn cancel(
    ctx: &Ctx,
    request: Request<pb::CancelNeedRequest>,
) -> Result<pb::Need, Error> {
    let principal = caller(&request)?.require(POSTERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 500, false);
    let Some(id) = validate::name(&mut v, "name", &req.name, "needs").filter(|_| v.is_empty())
    else {
        return Err(Error::Invalid(v));
    };
    let (need, touched) = crate::retry!({
        let now = ctx.clock.now_micros();
        let actor = principal.actor();
        let mut tx = ctx.db.begin().await?;
        let mut need = store::needs::get(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("need", req.name.clone()))?;
        in_scope(&principal, &need.spec.place)?;
        match need.state {
            NeedState::Cancelled => return Ok((need, vec![])),
            NeedState::Done => {
                return Err(Error::precondition(
                    "NEED_DONE",
                    need.name(),
                    "the need is done",
                ));
            }
            _ => {}
        }
        let touched = ops::cancel_need(
            &mut tx,
            &mut need,
            &reason,
            &format!("the need was cancelled: {reason}"),
            &actor,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((need, touched))
    })?;
    ctx.index.reload(touched).await?;
    Ok(convert::need(&need))
}

pub(super) async fn publish(
    ctx: &Ctx,
    request: Request<pb::PublishMenuRequest>,
) -> Result<pb::Menu, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let h = hash(&req);
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let place = validate::community(&mut v, "community", &ctx.gazetteer, &req.community);
    let title = validate::text(&mut v, "title", &req.title, 1, 200, false);
    let description = validate::text(&mut v, "description", &req.description, 0, 2_000, true);
    v.check(
        req.needs.is_empty() || req.needs.len() > 200,
        "needs",
        "give 1 to 200 needs",
    );
    let mut ids = Vec::new();
    for (i, n) in req.needs.iter().enumerate() {
        if let Some(id) = validate::name(&mut v, &format!("needs[{i}]"), n, "needs")
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    let Some(place) = place.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    in_scope(&principal, &place)?;
    let menu = crate::retry!({
        let now = ctx.clock.now_micros();
        let actor = principal.actor();
        let menu = Menu {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: req.request_id.clone(),
            community: req.community.clone(),
            title: title.clone(),
            description: description.clone(),
            needs: ids.clone(),
            published_by: actor.clone(),
            publish_time: now,
        };
        let mut tx = ctx.db.begin().await?;
        match store::needs::insert_menu(&mut tx, &menu, &place, &h).await? {
            Inserted::Existing {
                request_hash,
                value,
            } => {
                tx.rollback().await?;
                return if request_hash == h {
                    Ok(*value)
                } else {
                    Err(Error::precondition(
                        "REQUEST_ID_REUSED",
                        format!("menus/{}", value.id),
                        "request_id was already used for a different request",
                    ))
                };
            }
            Inserted::New => {}
        }
        for (i, id) in ids.iter().enumerate() {
            let mut need = store::needs::get(tx.conn(), id)
                .await?
                .ok_or_else(|| Error::NotFound("need", format!("needs/{id}")))?;
            if need.spec.place.community != req.community {
                let mut v = FieldViolations::new();
                v.add(
                    format!("needs[{i}]"),
                    format!("needs/{id} is not on {}'s menu", req.community),
                );
                return Err(Error::Invalid(v));
            }
            if need.state != NeedState::Draft {
                return Err(Error::precondition(
                    "NOT_DRAFT",
                    need.name(),
                    "only draft needs can be published",
                ));
            }
            let expected = need.version;
            need.state = NeedState::Open;
            need.menu = Some(menu.id.clone());
            need.publish_time = Some(now);
            need.update_time = now;
            need.version += 1;
            ops::save_need(&mut tx, &need, expected, NeedState::Draft, &actor, now).await?;
        }
        let event = pb::MenuPublished {
            menu: Some(convert::menu(&menu)),
        };
        ops::emit(&mut tx, &actor, &format!("menus/{}", menu.id), &event, now).await?;
        tx.commit().await?;
        Ok(menu)
    })?;
    Ok(convert::menu(&menu))
}

pub(super) async fn get_menu(
    ctx: &Ctx,
    request: Request<pb::GetMenuRequest>,
) -> Result<pb::Menu, Error> {
    let _principal = caller(&request)?.require(MENU_READERS)?;
    let name = &request.get_ref().name;
    let mut v = FieldViolations::new();
    let Some(id) = validate::name(&mut v, "name", name, "menus") else {
        return Err(Error::Invalid(v));
    };
    let menu = store::needs::get_menu(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("menu", name.clone()))?;
    Ok(convert::menu(&menu))
}

pub(super) async fn list_menus(
    ctx: &Ctx,
    request: Request<pb::ListMenusRequest>,
) -> Result<pb::ListMenusResponse, Error> {
    let principal = caller(&request)?.require(MENU_READERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 20, 100);
    let place = place_filter(ctx, &mut v, "place", &req.place);
    let before = if req.page_token.is_empty() {
        None
    } else {
        v.check(
            uuid::Uuid::parse_str(&req.page_token).is_err(),
            "page_token",
            "not a token from a previous page",
        );
        Some(req.page_token.clone())
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let scope = if menu_only(&principal) {
        None
    } else {
        scope_filter(ctx, &principal)
    };
    let mut menus =
        store::needs::list_menus(ctx.db.pool(), place, scope, before, limit + 1).await?;
    let next = if menus.len() as i64 > limit {
        menus.truncate(limit as usize);
        menus.last().map(|m| m.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListMenusResponse {
        menus: menus.iter().map(convert::menu).collect(),
        next_page_token: next,
    })
}
