//! Units: CreateUnit, GetUnit, ListUnits, UpdateUnit, ImportUnits.

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{ADMIN_ROLES, READ_ROLES, knowledge_status, validate};
use crate::{app::App, convert, domain::Unit, domain::UnitKind, store};
use minqing_kit::{
    auth::{Role, caller},
    db::Tx,
    error::{FieldViolations, already_exists, failed_precondition, not_found},
    feed::{self, EventMeta},
    time::Micros,
};
use minqing_proto::minqing::routing::v1 as pb;

pub(super) fn hash<M: Message>(m: &M) -> String {
    hex::encode(Sha256::digest(m.encode_to_vec()))
}

/// A page token binding the page to the request it came from.
pub(super) fn token(fingerprint: &str, last: &str) -> String {
    format!("{}.{last}", &fingerprint[..16])
}

/// The last key of a page token, if it belongs to `fingerprint`.
pub(super) fn after<'a>(
    v: &mut FieldViolations,
    fingerprint: &str,
    token: &'a str,
) -> Option<&'a str> {
    if token.is_empty() {
        return None;
    }
    match token.split_once('.') {
        Some((fp, last)) if fp == &fingerprint[..16] && !last.is_empty() => Some(last),
        _ => {
            v.add(
                "page_token",
                "not a token from a previous page of this same request",
            );
            None
        }
    }
}

async fn emit_unit(
    tx: &mut Tx,
    actor: &str,
    unit: &Unit,
    created: bool,
    now: Micros,
) -> Result<(), Status> {
    let event = pb::UnitChanged {
        unit: Some(convert::unit(unit)),
        created,
    };
    feed::append(tx, &EventMeta::current(actor), &unit.name(), &event, now).await?;
    Ok(())
}

pub(super) async fn create(
    app: &App,
    request: Request<pb::CreateUnitRequest>,
) -> Result<Response<pb::Unit>, Status> {
    let principal = caller(&request)?.require(ADMIN_ROLES)?.clone();
    let req = request.into_inner();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let unit = match &req.unit {
        Some(u) => validate::unit(&mut v, "unit.", u, &k),
        None => {
            v.add("unit", "required");
            None
        }
    };
    v.finish()?;
    let Some(mut unit) = unit else {
        return Err(Status::invalid_argument("unit"));
    };
    let now = app.clock.now_micros();
    unit.create_time = now;
    unit.update_time = now;
    unit.version = 1;
    let hash = hash(&req);
    let mut tx = app.db.begin().await?;
    if let Some((earlier, resource)) = store::claim_request(
        &mut tx,
        &principal.actor(),
        &req.request_id,
        &hash,
        &unit.name(),
        now,
    )
    .await?
    {
        tx.rollback().await?;
        if earlier != hash {
            return Err(already_exists(
                "request",
                &req.request_id,
                "request_id was already used for a different request",
            ));
        }
        let id = resource.strip_prefix("units/").unwrap_or(&resource);
        let existing = store::get_unit(app.db.pool(), id)
            .await?
            .ok_or_else(|| not_found("unit", &resource))?;
        return Ok(Response::new(convert::unit(&existing)));
    }
    if !store::insert_unit(&mut tx, &unit).await? {
        return Err(already_exists(
            "unit",
            &unit.name(),
            format!("{} already exists", unit.name()),
        ));
    }
    emit_unit(&mut tx, &principal.actor(), &unit, true, now).await?;
    tx.commit().await?;
    app.refresh_directory().await?;
    Ok(Response::new(convert::unit(&unit)))
}

pub(super) async fn get(
    app: &App,
    request: Request<pb::GetUnitRequest>,
) -> Result<Response<pb::Unit>, Status> {
    let mut roles = READ_ROLES.to_vec();
    roles.push(Role::PartnerUnit);
    caller(&request)?.require(&roles)?;
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "name", "units", &request.get_ref().name);
    v.finish()?;
    let id = id.unwrap_or_default();
    let unit = store::get_unit(app.db.pool(), &id)
        .await?
        .ok_or_else(|| not_found("unit", &request.get_ref().name))?;
    Ok(Response::new(convert::unit(&unit)))
}

pub(super) async fn list(
    app: &App,
    request: Request<pb::ListUnitsRequest>,
) -> Result<Response<pb::ListUnitsResponse>, Status> {
    caller(&request)?.require(READ_ROLES)?;
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 100, 1000) as usize;
    let kinds: Vec<UnitKind> = req
        .kinds
        .iter()
        .filter_map(|k| UnitKind::from_wire(*k))
        .collect();
    v.check(kinds.len() != req.kinds.len(), "kinds", "unknown unit kind");
    let fingerprint = hash(&pb::ListUnitsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let after = after(&mut v, &fingerprint, &req.page_token).map(str::to_owned);
    // Places related to the filter: the place itself, those above it, and those below it.
    let related = if req.place.is_empty() {
        None
    } else {
        let k = app.knowledge.get().await.map_err(knowledge_status)?;
        if !k.knows_place(&req.place) {
            v.add("place", format!("unknown place code {}", req.place));
        }
        Some(k)
    };
    v.finish()?;
    let covers = |u: &Unit| match &related {
        None => true,
        Some(k) => u
            .places
            .iter()
            .any(|p| p == &req.place || is_above(k, p, &req.place) || is_above(k, &req.place, p)),
    };
    let all = store::all_units(app.db.pool()).await?;
    let mut units: Vec<&Unit> = all
        .iter()
        .filter(|u| after.as_deref().is_none_or(|a| u.id.as_str() > a))
        .filter(|u| req.include_inactive || u.active)
        .filter(|u| kinds.is_empty() || kinds.contains(&u.kind))
        .filter(|u| req.category.is_empty() || u.handles(&req.category))
        .filter(|u| covers(u))
        .take(limit + 1)
        .collect();
    let next_page_token = if units.len() > limit {
        units.truncate(limit);
        units
            .last()
            .map(|u| token(&fingerprint, &u.id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Response::new(pb::ListUnitsResponse {
        units: units.into_iter().map(convert::unit).collect(),
        next_page_token,
    }))
}

/// Whether `upper` is an ancestor of `lower` in the gazetteer (the city is above all).
fn is_above(k: &crate::knowledge::Knowledge, upper: &str, lower: &str) -> bool {
    if upper == k.city {
        return true;
    }
    let mut code = lower;
    for _ in 0..8 {
        match k.places.get(code) {
            Some(p) if p.parent == upper => return true,
            Some(p) => code = &p.parent,
            None => return false,
        }
    }
    false
}

pub(super) async fn update(
    app: &App,
    request: Request<pb::UpdateUnitRequest>,
) -> Result<Response<pb::Unit>, Status> {
    let principal = caller(&request)?.require(ADMIN_ROLES)?.clone();
    let req = request.into_inner();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let mut v = FieldViolations::new();
    let Some(given) = &req.unit else {
        v.add("unit", "required");
        return Err(v.into_status());
    };
    let id = validate::name(&mut v, "unit.name", "units", &given.name);
    v.finish()?;
    let id = id.unwrap_or_default();
    let now = app.clock.now_micros();
    let mut tx = app.db.begin().await?;
    let current = store::get_unit(tx.conn(), &id)
        .await?
        .ok_or_else(|| not_found("unit", &given.name))?;
    if !req.etag.is_empty() && req.etag != current.version.to_string() {
        return Err(failed_precondition(
            "ETAG_MISMATCH",
            &given.name,
            "the unit changed since it was read; read it again",
        ));
    }
    // Start from the stored unit on the wire, overwrite the masked fields, check the whole.
    let mut v = FieldViolations::new();
    let mut merged = convert::unit(&current);
    let paths: Vec<String> = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    const WRITABLE: [&str; 11] = [
        "kind",
        "display_name",
        "display_name_en",
        "places",
        "categories",
        "emergency_line",
        "working_hours",
        "contacts",
        "acceptance_window_minutes",
        "needs_reporter_contact",
        "active",
    ];
    let all: Vec<String> = WRITABLE
        .iter()
        .map(|s| s.to_string())
        .chain(["description".to_string()])
        .collect();
    let paths = if paths.is_empty() { all } else { paths };
    for (i, p) in paths.iter().enumerate() {
        match p.as_str() {
            "kind" => merged.kind = given.kind,
            "display_name" => merged.display_name = given.display_name.clone(),
            "display_name_en" => merged.display_name_en = given.display_name_en.clone(),
            "places" => merged.places = given.places.clone(),
            "categories" => merged.categories = given.categories.clone(),
            "emergency_line" => merged.emergency_line = given.emergency_line,
            "working_hours" => merged.working_hours = given.working_hours.clone(),
            "contacts" => merged.contacts = given.contacts.clone(),
            "acceptance_window_minutes" => {
                merged.acceptance_window_minutes = given.acceptance_window_minutes
            }
            "needs_reporter_contact" => {
                merged.needs_reporter_contact = given.needs_reporter_contact
            }
            "active" => merged.active = given.active,
            "description" => merged.description = given.description.clone(),
            other => v.add(
                format!("update_mask.paths[{i}]"),
                format!("{other:?} is not a writable field"),
            ),
        }
    }
    let unit = validate::unit(&mut v, "unit.", &merged, &k);
    v.finish()?;
    let Some(mut unit) = unit else {
        return Err(Status::invalid_argument("unit"));
    };
    unit.create_time = current.create_time;
    unit.update_time = now;
    unit.version = current.version + 1;
    if !store::update_unit(&mut tx, &unit, current.version).await? {
        return Err(Status::aborted("the unit changed meanwhile; retry"));
    }
    emit_unit(&mut tx, &principal.actor(), &unit, false, now).await?;
    tx.commit().await?;
    app.refresh_directory().await?;
    Ok(Response::new(convert::unit(&unit)))
}

pub(super) async fn import(
    app: &App,
    request: Request<pb::ImportUnitsRequest>,
) -> Result<Response<pb::ImportUnitsResponse>, Status> {
    let principal = caller(&request)?.require(ADMIN_ROLES)?.clone();
    let req = request.into_inner();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let mut v = FieldViolations::new();
    v.check(
        req.units.is_empty() || req.units.len() > 500,
        "units",
        "1 to 500 units",
    );
    let mut units = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, u) in req.units.iter().enumerate() {
        if let Some(unit) = validate::unit(&mut v, &format!("units[{i}]."), u, &k) {
            if !seen.insert(unit.id.clone()) {
                v.add(
                    format!("units[{i}].name"),
                    "the same unit appears twice in this import",
                );
            }
            units.push(unit);
        }
    }
    v.finish()?;
    let counts = import_units(app, &principal.actor(), units, req.validate_only).await?;
    Ok(Response::new(counts))
}

/// Creates or replaces `units` in one transaction (shared with the start-up seed).
pub(crate) async fn import_units(
    app: &App,
    actor: &str,
    units: Vec<Unit>,
    validate_only: bool,
) -> Result<pb::ImportUnitsResponse, Status> {
    let now = app.clock.now_micros();
    let mut out = pb::ImportUnitsResponse::default();
    let mut tx = app.db.begin().await?;
    for mut unit in units {
        match store::get_unit(tx.conn(), &unit.id).await? {
            Some(current) if current.same_content(&unit) => out.unchanged += 1,
            Some(current) => {
                unit.create_time = current.create_time;
                unit.update_time = now;
                unit.version = current.version + 1;
                if !validate_only {
                    if !store::update_unit(&mut tx, &unit, current.version).await? {
                        return Err(Status::aborted("a unit changed meanwhile; retry"));
                    }
                    emit_unit(&mut tx, actor, &unit, false, now).await?;
                }
                out.updated += 1;
            }
            None => {
                unit.create_time = now;
                unit.update_time = now;
                unit.version = 1;
                if !validate_only {
                    store::insert_unit(&mut tx, &unit).await?;
                    emit_unit(&mut tx, actor, &unit, true, now).await?;
                }
                out.created += 1;
            }
        }
    }
    if validate_only {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        app.refresh_directory().await?;
    }
    Ok(out)
}
