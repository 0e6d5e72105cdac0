//! Routes: ExplainRoute, GetCaseRoute, ListCaseRoutes, ListAssignments.

use tonic::{Request, Response, Status};

use super::{
    READ_ROLES, check_scope, knowledge_status, units::after, units::hash, units::token, validate,
};
use crate::{
    app::App,
    convert,
    domain::{AssignmentState, CaseFacts, Channel, Disposition, Level, Place, RouteState, Urgency},
    store::{self, RouteFilter},
};
use minqing_kit::{
    auth::{Principal, caller},
    error::{FieldViolations, not_found, permission_denied},
    time::from_timestamp,
};
use minqing_proto::minqing::routing::v1 as pb;

/// Loads a route the caller may see.
pub(super) async fn visible_route(
    app: &App,
    principal: &Principal,
    field: &str,
    name: &str,
) -> Result<crate::domain::Route, Status> {
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, field, "cases", name);
    v.finish()?;
    let route = store::get_route(app.db.pool(), &id.unwrap_or_default())
        .await?
        .ok_or_else(|| not_found("case route", name))?;
    check_scope(principal, &route)?;
    Ok(route)
}

pub(super) async fn explain(
    app: &App,
    request: Request<pb::ExplainRouteRequest>,
) -> Result<Response<pb::RouteDecision>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?.clone();
    match request.into_inner().subject {
        Some(pb::explain_route_request::Subject::Case(name)) => {
            let route = visible_route(app, &principal, "case", &name).await?;
            Ok(Response::new(convert::decision(
                &route.decision,
                &route.facts,
            )))
        }
        Some(pb::explain_route_request::Subject::Facts(f)) => {
            let k = app.knowledge.get().await.map_err(knowledge_status)?;
            let mut v = FieldViolations::new();
            v.check(f.category.is_empty(), "facts.category", "required");
            let item = k.items.get(&f.category);
            v.check(
                !f.category.is_empty() && item.is_none(),
                "facts.category",
                format!("unknown catalogue item {:?}", f.category),
            );
            let p = f.place.clone().unwrap_or_default();
            let given = Place {
                district: p.district,
                street: p.street,
                community: p.community,
                grid: p.grid,
                building: p.building,
                address: p.address,
                location_e6: None,
            };
            let place = match k.complete(&given) {
                Ok(place) => place,
                Err(e) => {
                    v.add("facts.place", e);
                    given
                }
            };
            let channel = match f.channel {
                0 => Channel::Hotline,
                n => Channel::from_wire(n).unwrap_or_else(|| {
                    v.add("facts.channel", "unknown channel");
                    Channel::Hotline
                }),
            };
            let urgency = match f.urgency {
                0 => Urgency::Normal,
                n => Urgency::from_wire(n).unwrap_or_else(|| {
                    v.add("facts.urgency", "unknown urgency");
                    Urgency::Normal
                }),
            };
            let title = validate::text(&mut v, "facts.title", &f.title, 0, 200, false);
            let description =
                validate::text(&mut v, "facts.description", &f.description, 0, 4000, true);
            let now = app.clock.now_micros();
            let submit_time = match &f.submit_time {
                None => now,
                Some(ts) => from_timestamp(ts).unwrap_or_else(|| {
                    v.add("facts.submit_time", "not a valid timestamp");
                    now
                }),
            };
            v.finish()?;
            if !principal.covers_place(place.codes()) {
                return Err(permission_denied(
                    "OUT_OF_SCOPE",
                    "the place is outside your place scope",
                ));
            }
            let facts = CaseFacts {
                case_id: String::new(),
                category: f.category.clone(),
                place,
                channel,
                urgency,
                title,
                description,
                submit_time,
                volunteer_suitable: item.is_some_and(|i| i.volunteer_suitable),
                category_name: item.map(|i| i.name.clone()).unwrap_or_default(),
                liaison_station: String::new(),
                deputy: String::new(),
                cluster: String::new(),
                attachments: Vec::new(),
            };
            let outcome = app.decide(&facts, &[], &k, now);
            Ok(Response::new(convert::decision(&outcome.decision, &facts)))
        }
        None => Err(FieldViolations::new_with("subject", "give a case or facts")),
    }
}

trait NewWith {
    fn new_with(field: &str, description: &str) -> Status;
}

impl NewWith for FieldViolations {
    fn new_with(field: &str, description: &str) -> Status {
        let mut v = FieldViolations::new();
        v.add(field, description);
        v.into_status()
    }
}

pub(super) async fn get(
    app: &App,
    request: Request<pb::GetCaseRouteRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?;
    let route = visible_route(app, principal, "case", &request.get_ref().case).await?;
    let assignments = store::case_assignments(app.db.pool(), &route.case_id).await?;
    let wire = assignments
        .iter()
        .map(|a| convert::assignment(a, &route.facts, None))
        .collect();
    Ok(Response::new(convert::route(&route, wire)))
}

fn level_column(level: Level) -> &'static str {
    match level {
        Level::District => "district",
        Level::Street => "street",
        Level::Community => "community",
        Level::Grid => "grid",
        Level::Building => "building",
    }
}

pub(super) async fn list(
    app: &App,
    request: Request<pb::ListCaseRoutesRequest>,
) -> Result<Response<pb::ListCaseRoutesResponse>, Status> {
    let principal = caller(&request)?.require(READ_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let mut filter = RouteFilter::default();
    for (i, s) in req.states.iter().enumerate() {
        match RouteState::from_wire(*s) {
            Some(s) => filter.states.push(s),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    for (i, d) in req.dispositions.iter().enumerate() {
        match Disposition::from_wire(*d) {
            Some(d) => filter.dispositions.push(d.wire()),
            None => v.add(format!("dispositions[{i}]"), "unknown disposition"),
        }
    }
    if !req.handling_unit.is_empty() {
        filter.handling_unit = validate::name(&mut v, "handling_unit", "units", &req.handling_unit);
    }
    if !req.coordinating_unit.is_empty() {
        filter.coordinating_unit =
            validate::name(&mut v, "coordinating_unit", "units", &req.coordinating_unit);
    }
    if !req.liaison_station.is_empty() {
        filter.station =
            validate::name(&mut v, "liaison_station", "stations", &req.liaison_station);
    }
    let needs_places = !req.place.is_empty() || principal.place_scope.is_some();
    if needs_places {
        let k = app.knowledge.get().await.map_err(knowledge_status)?;
        if !req.place.is_empty() {
            match k.places.get(&req.place) {
                Some(p) => filter.place = Some((level_column(p.level), req.place.clone())),
                None => v.add("place", format!("unknown place code {}", req.place)),
            }
        }
        if let Some(scope) = &principal.place_scope {
            let column = k
                .places
                .get(scope)
                .map_or("building", |p| level_column(p.level));
            filter.scope = Some((column, scope.clone()));
        }
    }
    let fingerprint = hash(&pb::ListCaseRoutesRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    filter.below = after(&mut v, &fingerprint, &req.page_token).map(str::to_owned);
    v.finish()?;
    let mut routes = store::list_routes(app.db.pool(), &filter, limit + 1).await?;
    let next_page_token = if routes.len() as i64 > limit {
        routes.truncate(limit as usize);
        routes
            .last()
            .map(|r| token(&fingerprint, &r.case_id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Response::new(pb::ListCaseRoutesResponse {
        routes: routes
            .iter()
            .map(|r| convert::route(r, Vec::new()))
            .collect(),
        next_page_token,
    }))
}

pub(super) async fn list_assignments(
    app: &App,
    request: Request<pb::ListAssignmentsRequest>,
) -> Result<Response<pb::ListAssignmentsResponse>, Status> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let unit = if req.unit.is_empty() {
        None
    } else {
        validate::name(&mut v, "unit", "units", &req.unit)
    };
    let case_id = if req.case.is_empty() {
        None
    } else {
        validate::uuid_name(&mut v, "case", "cases", &req.case)
    };
    let states: Vec<AssignmentState> = req
        .states
        .iter()
        .filter_map(|s| AssignmentState::from_wire(*s))
        .collect();
    v.check(states.len() != req.states.len(), "states", "unknown state");
    let fingerprint = hash(&pb::ListAssignmentsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let below = after(&mut v, &fingerprint, &req.page_token).map(str::to_owned);
    v.finish()?;
    // Readers see everything in their place scope; a unit-scoped caller sees only its own.
    match (&principal.unit_scope, &unit) {
        (Some(own), Some(u)) if own == u => {}
        (Some(_), _)
            if !principal.is(READ_ROLES)
                || principal.role == minqing_kit::auth::Role::PartnerUnit =>
        {
            return Err(permission_denied(
                "NOT_YOUR_UNIT",
                "a unit lists only its own assignments: pass unit = units/<your unit>",
            ));
        }
        _ => {
            principal.require(READ_ROLES)?;
        }
    }
    let mut items = store::list_assignments(
        app.db.pool(),
        unit.as_deref(),
        &states,
        case_id.as_deref(),
        below.as_deref(),
        limit + 1,
    )
    .await?;
    let next_page_token = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|a| token(&fingerprint, &a.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut out = Vec::with_capacity(items.len());
    for a in &items {
        if let Some(route) = store::get_route(app.db.pool(), &a.case_id).await?
            && principal.covers_place(route.facts.place.codes())
        {
            out.push(convert::assignment(a, &route.facts, None));
        }
    }
    Ok(Response::new(pb::ListAssignmentsResponse {
        assignments: out,
        next_page_token,
    }))
}
