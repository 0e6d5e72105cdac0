//! Teams and partner organisations: Create, Get, List, Update and Retire of each.

use tonic::Request;

use super::{
    READERS, STAFF, convert, convert::Personal, hash, in_scope, place_filter, scope_filter,
    validate,
};
use crate::{
    domain::{BodyState, Organisation, OrganisationKind, Place, Team, TeamKind},
    error::Error,
    ops::{self, Ctx},
    store::{self, Inserted},
};
use minqing_kit::{
    auth::{Principal, caller},
    error::FieldViolations,
};
use minqing_proto::minqing::matching::v1 as pb;

fn page_token(v: &mut FieldViolations, token: &str) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    if uuid::Uuid::parse_str(token).is_err() {
        v.add("page_token", "not a token from a previous page");
    }
    Some(token.to_string())
}

struct TeamFields {
    display_name: String,
    kind: TeamKind,
    place: Option<Place>,
    leader: Option<String>,
    skills: Vec<String>,
    description: String,
}

fn team_fields(ctx: &Ctx, v: &mut FieldViolations, t: &pb::Team) -> TeamFields {
    let kind = TeamKind::from_wire(t.kind);
    v.check(kind.is_none(), "team.kind", "required");
    TeamFields {
        display_name: validate::text(v, "team.display_name", &t.display_name, 1, 100, false),
        kind: kind.unwrap_or(TeamKind::General),
        place: validate::place(v, "team.place", &ctx.gazetteer, &t.place),
        leader: if t.leader.is_empty() {
            None
        } else {
            validate::name(v, "team.leader", &t.leader, "volunteers")
        },
        skills: validate::codes(v, "team.skills", &t.skills, 30),
        description: validate::text(v, "team.description", &t.description, 0, 1_000, true),
    }
}

async fn check_leader(ctx: &Ctx, leader: &Option<String>) -> Result<(), Error> {
    if let Some(l) = leader
        && store::volunteers::get(ctx.db.pool(), l).await?.is_none()
    {
        let mut v = FieldViolations::new();
        v.add("team.leader", format!("no such volunteer volunteers/{l}"));
        return Err(Error::Invalid(v));
    }
    Ok(())
}

async fn team_wire(ctx: &Ctx, t: &Team) -> Result<pb::Team, Error> {
    Ok(convert::team(
        t,
        store::volunteers::team_member_count(ctx.db.pool(), &t.id).await?,
    ))
}

pub(super) async fn create_team(
    ctx: &Ctx,
    request: Request<pb::CreateTeamRequest>,
) -> Result<pb::Team, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let h = hash(&req);
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let f = team_fields(ctx, &mut v, &req.team.unwrap_or_default());
    let Some(place) = f.place.clone().filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    in_scope(&principal, &place)?;
    check_leader(ctx, &f.leader).await?;
    let now = ctx.clock.now_micros();
    let team = Team {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: req.request_id,
        created_by: principal.actor(),
        display_name: f.display_name,
        kind: f.kind,
        place,
        leader: f.leader,
        skills: f.skills,
        description: f.description,
        state: BodyState::Active,
        create_time: now,
        update_time: now,
        version: 1,
    };
    let mut tx = ctx.db.begin().await?;
    match store::bodies::insert_team(&mut tx, &team, &h).await? {
        Inserted::New => {
            let event = pb::TeamCreated {
                team: Some(convert::team(&team, 0)),
            };
            ops::emit(&mut tx, &principal.actor(), &team.name(), &event, now).await?;
            tx.commit().await?;
            team_wire(ctx, &team).await
        }
        Inserted::Existing {
            request_hash,
            value,
        } => {
            tx.rollback().await?;
            if request_hash == h {
                team_wire(ctx, &value).await
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

async fn load_team(ctx: &Ctx, name: &str) -> Result<Team, Error> {
    let mut v = FieldViolations::new();
    let Some(id) = validate::name(&mut v, "name", name, "teams") else {
        return Err(Error::Invalid(v));
    };
    store::bodies::get_team(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("team", name.to_string()))
}

fn may_read(p: &Principal) -> Result<(), Error> {
    if p.is(READERS)
        || p.is(&[
            minqing_kit::auth::Role::Volunteer,
            minqing_kit::auth::Role::PartnerUnit,
        ])
    {
        Ok(())
    } else {
        Err(p
            .require(READERS)
            .err()
            .map(Error::from)
            .unwrap_or(Error::Denied("ROLE_NOT_ALLOWED", "not allowed".into())))
    }
}

pub(super) async fn get_team(
    ctx: &Ctx,
    request: Request<pb::GetTeamRequest>,
) -> Result<pb::Team, Error> {
    let principal = caller(&request)?.clone();
    may_read(&principal)?;
    let team = load_team(ctx, &request.get_ref().name).await?;
    team_wire(ctx, &team).await
}

pub(super) async fn list_teams(
    ctx: &Ctx,
    request: Request<pb::ListTeamsRequest>,
) -> Result<pb::ListTeamsResponse, Error> {
    let principal = caller(&request)?.clone();
    may_read(&principal)?;
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let place = place_filter(ctx, &mut v, "place", &req.place);
    let after = page_token(&mut v, &req.page_token);
    let kind = match req.kind {
        0 => None,
        k => {
            v.check(TeamKind::from_wire(k).is_none(), "kind", "unknown kind");
            Some(i64::from(k))
        }
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let mut teams = store::bodies::list_teams(
        ctx.db.pool(),
        place,
        scope_filter(ctx, &principal),
        kind,
        after,
        limit + 1,
    )
    .await?;
    let next = if teams.len() as i64 > limit {
        teams.truncate(limit as usize);
        teams.last().map(|t| t.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let mut out = Vec::new();
    for t in &teams {
        out.push(team_wire(ctx, t).await?);
    }
    Ok(pb::ListTeamsResponse {
        teams: out,
        next_page_token: next,
    })
}

pub(super) async fn update_team(
    ctx: &Ctx,
    request: Request<pb::UpdateTeamRequest>,
) -> Result<pb::Team, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let given = req.team.unwrap_or_default();
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "team.name", &given.name, "teams");
    v.check(paths.is_empty(), "update_mask", "name the fields to change");
    let allowed = [
        "display_name",
        "kind",
        "place",
        "leader",
        "skills",
        "description",
    ];
    for (i, p) in paths.iter().enumerate() {
        v.check(
            !allowed.contains(&p.as_str()),
            format!("update_mask.paths[{i}]"),
            format!("{p} cannot be changed"),
        );
    }
    let Some(id) = id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let team = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut team = store::bodies::get_team(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("team", given.name.clone()))?;
        in_scope(&principal, &team.place)?;
        let mut merged = convert::team(&team, 0);
        for p in &paths {
            match p.as_str() {
                "display_name" => merged.display_name = given.display_name.clone(),
                "kind" => merged.kind = given.kind,
                "place" => merged.place = given.place.clone(),
                "leader" => merged.leader = given.leader.clone(),
                "skills" => merged.skills = given.skills.clone(),
                _ => merged.description = given.description.clone(),
            }
        }
        let mut v = FieldViolations::new();
        let f = team_fields(ctx, &mut v, &merged);
        let Some(place) = f.place.clone().filter(|_| v.is_empty()) else {
            return Err(Error::Invalid(v));
        };
        in_scope(&principal, &place)?;
        check_leader(ctx, &f.leader).await?;
        let expected = team.version;
        team.display_name = f.display_name;
        team.kind = f.kind;
        team.place = place;
        team.leader = f.leader;
        team.skills = f.skills;
        team.description = f.description;
        team.update_time = now;
        team.version += 1;
        if !store::bodies::update_team(&mut tx, &team, expected).await? {
            return Err(Error::Conflict);
        }
        let event = pb::TeamUpdated {
            team: Some(convert::team(&team, 0)),
            changed_fields: paths.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &team.name(), &event, now).await?;
        tx.commit().await?;
        Ok(team)
    })?;
    team_wire(ctx, &team).await
}

pub(super) async fn retire_team(
    ctx: &Ctx,
    request: Request<pb::RetireTeamRequest>,
) -> Result<pb::Team, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 0, 500, false);
    let Some(id) = validate::name(&mut v, "name", &req.name, "teams").filter(|_| v.is_empty())
    else {
        return Err(Error::Invalid(v));
    };
    let team = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut team = store::bodies::get_team(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("team", req.name.clone()))?;
        in_scope(&principal, &team.place)?;
        if team.state == BodyState::Retired {
            return Ok(team);
        }
        let expected = team.version;
        team.state = BodyState::Retired;
        team.update_time = now;
        team.version += 1;
        if !store::bodies::update_team(&mut tx, &team, expected).await? {
            return Err(Error::Conflict);
        }
        let event = pb::TeamRetired {
            team: Some(convert::team(&team, 0)),
            reason: reason.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &team.name(), &event, now).await?;
        tx.commit().await?;
        Ok(team)
    })?;
    team_wire(ctx, &team).await
}

struct OrgFields {
    display_name: String,
    kind: OrganisationKind,
    communities: Vec<String>,
    places: Vec<Place>,
    contact: crate::domain::Contact,
    skills: Vec<String>,
    description: String,
}

fn org_fields(ctx: &Ctx, v: &mut FieldViolations, o: &pb::Organisation) -> OrgFields {
    let kind = OrganisationKind::from_wire(o.kind);
    v.check(kind.is_none(), "organisation.kind", "required");
    v.check(
        o.communities.is_empty() || o.communities.len() > 50,
        "organisation.communities",
        "give 1 to 50 community codes",
    );
    let mut communities = Vec::new();
    let mut places = Vec::new();
    for (i, c) in o.communities.iter().enumerate() {
        if communities.contains(c) {
            continue;
        }
        if let Some(p) = validate::community(
            v,
            &format!("organisation.communities[{i}]"),
            &ctx.gazetteer,
            c,
        ) {
            communities.push(c.clone());
            places.push(p);
        }
    }
    OrgFields {
        display_name: validate::text(
            v,
            "organisation.display_name",
            &o.display_name,
            1,
            200,
            false,
        ),
        kind: kind.unwrap_or(OrganisationKind::Other),
        communities,
        places,
        contact: validate::contact(v, "organisation.contact", &o.contact, false),
        skills: validate::codes(v, "organisation.skills", &o.skills, 30),
        description: validate::text(
            v,
            "organisation.description",
            &o.description,
            0,
            1_000,
            true,
        ),
    }
}

fn org_personal(p: &Principal, o: &Organisation, places: &[Place]) -> Personal {
    let own = super::own_organisation(p) == Some(o.id.as_str());
    if own || places.iter().any(|pl| super::staff_over(p, pl)) {
        Personal::Shown
    } else {
        Personal::Hidden
    }
}

/// An organisation as `p` may see it; a read that shows its liaison's contact is audited.
async fn org_wire(
    ctx: &Ctx,
    p: &Principal,
    o: &Organisation,
    places: &[Place],
    rpc: &str,
) -> pb::Organisation {
    let shown = org_personal(p, o, places);
    if shown == Personal::Shown && o.contact != crate::domain::Contact::default() {
        ctx.audit
            .record(p, minqing_kit::audit::READ_PERSONAL_DATA, &o.name(), rpc)
            .await;
    }
    convert::organisation(o, shown)
}

fn org_places(ctx: &Ctx, o: &Organisation) -> Vec<Place> {
    let mut v = FieldViolations::new();
    o.communities
        .iter()
        .filter_map(|c| validate::community(&mut v, "c", &ctx.gazetteer, c))
        .collect()
}

pub(super) async fn create_org(
    ctx: &Ctx,
    request: Request<pb::CreateOrganisationRequest>,
) -> Result<pb::Organisation, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let h = hash(&req);
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let f = org_fields(ctx, &mut v, &req.organisation.unwrap_or_default());
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    if !f.places.iter().any(|p| principal.covers_place(p.codes())) {
        return Err(Error::Denied(
            "OUT_OF_SCOPE",
            "none of its communities is within your place scope".into(),
        ));
    }
    let now = ctx.clock.now_micros();
    let org = Organisation {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: req.request_id,
        created_by: principal.actor(),
        display_name: f.display_name,
        kind: f.kind,
        communities: f.communities,
        contact: f.contact,
        skills: f.skills,
        description: f.description,
        state: BodyState::Active,
        create_time: now,
        update_time: now,
        version: 1,
    };
    let mut tx = ctx.db.begin().await?;
    match store::bodies::insert_org(&mut tx, &org, &f.places, &h).await? {
        Inserted::New => {
            let event = pb::OrganisationRegistered {
                organisation: Some(convert::organisation(&org, Personal::Hidden)),
            };
            ops::emit(&mut tx, &principal.actor(), &org.name(), &event, now).await?;
            tx.commit().await?;
            Ok(org_wire(
                ctx,
                &principal,
                &org,
                &f.places,
                "minqing.matching.v1.Volunteers/CreateOrganisation",
            )
            .await)
        }
        Inserted::Existing {
            request_hash,
            value,
        } => {
            tx.rollback().await?;
            if request_hash == h {
                let places = org_places(ctx, &value);
                Ok(org_wire(
                    ctx,
                    &principal,
                    &value,
                    &places,
                    "minqing.matching.v1.Volunteers/CreateOrganisation",
                )
                .await)
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

pub(super) async fn get_org(
    ctx: &Ctx,
    request: Request<pb::GetOrganisationRequest>,
) -> Result<pb::Organisation, Error> {
    let principal = caller(&request)?.clone();
    may_read(&principal)?;
    let name = &request.get_ref().name;
    let mut v = FieldViolations::new();
    let Some(id) = validate::name(&mut v, "name", name, "organisations") else {
        return Err(Error::Invalid(v));
    };
    let org = store::bodies::get_org(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("organisation", name.clone()))?;
    let places = org_places(ctx, &org);
    Ok(org_wire(
        ctx,
        &principal,
        &org,
        &places,
        "minqing.matching.v1.Volunteers/GetOrganisation",
    )
    .await)
}

pub(super) async fn list_orgs(
    ctx: &Ctx,
    request: Request<pb::ListOrganisationsRequest>,
) -> Result<pb::ListOrganisationsResponse, Error> {
    let principal = caller(&request)?.clone();
    may_read(&principal)?;
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let place = place_filter(ctx, &mut v, "place", &req.place);
    let after = page_token(&mut v, &req.page_token);
    let kind = match req.kind {
        0 => None,
        k => {
            v.check(
                OrganisationKind::from_wire(k).is_none(),
                "kind",
                "unknown kind",
            );
            Some(i64::from(k))
        }
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let mut orgs = store::bodies::list_orgs(
        ctx.db.pool(),
        place,
        scope_filter(ctx, &principal),
        kind,
        after,
        limit + 1,
    )
    .await?;
    let next = if orgs.len() as i64 > limit {
        orgs.truncate(limit as usize);
        orgs.last().map(|o| o.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let mut organisations = Vec::with_capacity(orgs.len());
    for o in &orgs {
        let places = org_places(ctx, o);
        organisations.push(
            org_wire(
                ctx,
                &principal,
                o,
                &places,
                "minqing.matching.v1.Volunteers/ListOrganisations",
            )
            .await,
        );
    }
    Ok(pb::ListOrganisationsResponse {
        organisations,
        next_page_token: next,
    })
}

pub(super) async fn update_org(
    ctx: &Ctx,
    request: Request<pb::UpdateOrganisationRequest>,
) -> Result<pb::Organisation, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let given = req.organisation.unwrap_or_default();
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "organisation.name", &given.name, "organisations");
    v.check(paths.is_empty(), "update_mask", "name the fields to change");
    let allowed = [
        "display_name",
        "kind",
        "communities",
        "contact",
        "skills",
        "description",
    ];
    for (i, p) in paths.iter().enumerate() {
        v.check(
            !allowed.contains(&p.as_str()),
            format!("update_mask.paths[{i}]"),
            format!("{p} cannot be changed"),
        );
    }
    let Some(id) = id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let (org, places) = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut org = store::bodies::get_org(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("organisation", given.name.clone()))?;
        let old_places = org_places(ctx, &org);
        if !old_places.iter().any(|p| principal.covers_place(p.codes())) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the organisation partners with no community in your scope".into(),
            ));
        }
        let mut merged = convert::organisation(&org, Personal::Shown);
        for p in &paths {
            match p.as_str() {
                "display_name" => merged.display_name = given.display_name.clone(),
                "kind" => merged.kind = given.kind,
                "communities" => merged.communities = given.communities.clone(),
                "contact" => merged.contact = given.contact.clone(),
                "skills" => merged.skills = given.skills.clone(),
                _ => merged.description = given.description.clone(),
            }
        }
        let mut v = FieldViolations::new();
        let f = org_fields(ctx, &mut v, &merged);
        if !v.is_empty() {
            return Err(Error::Invalid(v));
        }
        let expected = org.version;
        org.display_name = f.display_name;
        org.kind = f.kind;
        org.communities = f.communities;
        org.contact = f.contact;
        org.skills = f.skills;
        org.description = f.description;
        org.update_time = now;
        org.version += 1;
        if !store::bodies::update_org(&mut tx, &org, Some(&f.places), expected).await? {
            return Err(Error::Conflict);
        }
        let event = pb::OrganisationUpdated {
            organisation: Some(convert::organisation(&org, Personal::Hidden)),
            changed_fields: paths.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &org.name(), &event, now).await?;
        tx.commit().await?;
        Ok((org, f.places))
    })?;
    Ok(org_wire(
        ctx,
        &principal,
        &org,
        &places,
        "minqing.matching.v1.Volunteers/UpdateOrganisation",
    )
    .await)
}

pub(super) async fn retire_org(
    ctx: &Ctx,
    request: Request<pb::RetireOrganisationRequest>,
) -> Result<pb::Organisation, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 0, 500, false);
    let Some(id) =
        validate::name(&mut v, "name", &req.name, "organisations").filter(|_| v.is_empty())
    else {
        return Err(Error::Invalid(v));
    };
    let org = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut org = store::bodies::get_org(tx.conn(), &id)
            .await?
            .ok_or_else(|| Error::NotFound("organisation", req.name.clone()))?;
        if !org_places(ctx, &org)
            .iter()
            .any(|p| principal.covers_place(p.codes()))
        {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the organisation partners with no community in your scope".into(),
            ));
        }
        if org.state == BodyState::Retired {
            return Ok(org);
        }
        let expected = org.version;
        org.state = BodyState::Retired;
        org.update_time = now;
        org.version += 1;
        if !store::bodies::update_org(&mut tx, &org, None, expected).await? {
            return Err(Error::Conflict);
        }
        let event = pb::OrganisationRetired {
            organisation: Some(convert::organisation(&org, Personal::Hidden)),
            reason: reason.clone(),
        };
        ops::emit(&mut tx, &principal.actor(), &org.name(), &event, now).await?;
        tx.commit().await?;
        Ok(org)
    })?;
    let places = org_places(ctx, &org);
    Ok(org_wire(
        ctx,
        &principal,
        &org,
        &places,
        "minqing.matching.v1.Volunteers/RetireOrganisation",
    )
    .await)
}
