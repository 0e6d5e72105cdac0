//! The public catalogue and gazetteer: ListCatalogueClasses, ListCatalogueItems,
//! GetCatalogueItem, ListPlaces. No token needed; all served from memory.

use tonic::{Request, Response, Status};

use super::{State, convert};
use crate::domain::Level;
use minqing_kit::error::{FieldViolations, not_found};
use minqing_proto::minqing::intake::v1 as pb;

pub(super) fn classes(
    state: &State,
    _request: Request<pb::ListCatalogueClassesRequest>,
) -> Result<Response<pb::ListCatalogueClassesResponse>, Status> {
    let c = &state.catalogue;
    Ok(Response::new(pb::ListCatalogueClassesResponse {
        version: c.version.clone(),
        modes: c
            .modes
            .iter()
            .map(|m| pb::CatalogueMode {
                id: m.id.clone(),
                name: m.name.clone(),
                name_en: m.name_en.clone(),
                description: m.description.clone(),
            })
            .collect(),
        subclasses: c
            .subclasses
            .iter()
            .map(|s| pb::CatalogueSubclass {
                id: s.id.clone(),
                mode: s.mode.clone(),
                name: s.name.clone(),
                name_en: s.name_en.clone(),
            })
            .collect(),
    }))
}

pub(super) fn items(
    state: &State,
    request: Request<pb::ListCatalogueItemsRequest>,
) -> Result<Response<pb::ListCatalogueItemsResponse>, Status> {
    let req = request.into_inner();
    let c = &state.catalogue;
    let mut v = FieldViolations::new();
    v.check(
        !(0..=500).contains(&req.page_size),
        "page_size",
        "must be 0 to 500",
    );
    v.check(
        !req.mode.is_empty() && !c.modes.iter().any(|m| m.id == req.mode),
        "mode",
        "unknown mode (onsite, errand or online)",
    );
    v.check(
        !req.subclass.is_empty() && !c.subclasses.iter().any(|s| s.id == req.subclass),
        "subclass",
        "unknown sub-class",
    );
    v.check(
        req.query.chars().count() > 100,
        "query",
        "at most 100 characters",
    );
    let start = if req.page_token.is_empty() {
        0
    } else {
        match c.position(&req.page_token) {
            Some(p) => p + 1,
            None => {
                v.add("page_token", "not a token from a previous page");
                0
            }
        }
    };
    v.finish()?;
    let limit = if req.page_size == 0 {
        100
    } else {
        req.page_size as usize
    };
    let query = req.query.trim().to_lowercase();
    let mut matching = c.items[start..]
        .iter()
        .filter(|i| req.mode.is_empty() || i.mode == req.mode)
        .filter(|i| req.subclass.is_empty() || i.subclass == req.subclass)
        .filter(|i| query.is_empty() || i.matches(&query));
    let items: Vec<_> = matching.by_ref().take(limit).collect();
    let next_page_token = match (items.last(), matching.next()) {
        (Some(last), Some(_)) => last.id.clone(),
        _ => String::new(),
    };
    Ok(Response::new(pb::ListCatalogueItemsResponse {
        items: items.into_iter().map(convert::item).collect(),
        next_page_token,
    }))
}

pub(super) fn item(
    state: &State,
    request: Request<pb::GetCatalogueItemRequest>,
) -> Result<Response<pb::CatalogueItem>, Status> {
    let id = &request.get_ref().id;
    if id.is_empty() {
        return Err(minqing_kit::error::invalid_field("id", "required"));
    }
    state
        .catalogue
        .item(id)
        .map(|i| Response::new(convert::item(i)))
        .ok_or_else(|| not_found("catalogue item", id))
}

pub(super) fn places(
    state: &State,
    request: Request<pb::ListPlacesRequest>,
) -> Result<Response<pb::ListPlacesResponse>, Status> {
    let req = request.into_inner();
    let g = &state.gazetteer;
    let mut v = FieldViolations::new();
    v.check(
        !(0..=1000).contains(&req.page_size),
        "page_size",
        "must be 0 to 1000",
    );
    let level = match req.level {
        0 => None,
        l => {
            let level = Level::from_wire(l);
            v.check(level.is_none(), "level", "unknown level");
            level
        }
    };
    v.check(
        !req.parent.is_empty() && req.parent != g.city.code && g.get(&req.parent).is_none(),
        "parent",
        "unknown place code",
    );
    v.check(
        !req.page_token.is_empty() && g.get(&req.page_token).is_none(),
        "page_token",
        "not a token from a previous page",
    );
    v.finish()?;
    let limit = if req.page_size == 0 {
        200
    } else {
        req.page_size as usize
    };
    let mut places = g.list(&req.parent, level, &req.page_token, limit + 1);
    let next_page_token = if places.len() > limit {
        places.truncate(limit);
        places.last().map(|p| p.code.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Response::new(pb::ListPlacesResponse {
        places: places.into_iter().map(convert::place).collect(),
        next_page_token,
    }))
}
