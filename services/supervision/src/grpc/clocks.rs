//! `Clocks`: a case's clock with its history, and lists of clocks by deadline.

use tonic::Request;

use super::{READ_ROLES, check_scope, convert, place_filter, validate};
use crate::{app::Ctx, clock::State, error::Error, store};
use minqing_kit::{auth::caller, error::FieldViolations};
use minqing_proto::minqing::supervision::v1 as pb;

/// `GetClock`.
pub async fn get(ctx: &Ctx, r: Request<pb::GetClockRequest>) -> Result<pb::CaseClock, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let name = &r.get_ref().name;
    let mut v = FieldViolations::new();
    let id = if name.starts_with("cases/") {
        validate::name(&mut v, "name", "cases", name)
    } else {
        validate::name(&mut v, "name", "clocks", name)
    };
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let clock = store::clocks::get(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("clock", format!("clocks/{id}")))?;
    check_scope(&principal, &clock.place, &format!("clocks/{id}"))?;
    Ok(convert::clock(&clock, true))
}

/// `ListClocks`.
pub async fn list(
    ctx: &Ctx,
    r: Request<pb::ListClocksRequest>,
) -> Result<pb::ListClocksResponse, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    v.check(
        !(0..=500).contains(&req.page_size),
        "page_size",
        "must be 0 to 500",
    );
    let mut states = Vec::new();
    for (i, s) in req.states.iter().enumerate() {
        match State::from_wire(*s) {
            Some(s) => states.push(i64::from(s.wire())),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    if states.is_empty() {
        states = [State::Running, State::Paused, State::Overdue]
            .iter()
            .map(|s| i64::from(s.wire()))
            .collect();
    }
    let place = place_filter(ctx, &mut v, "place", &req.place);
    if !req.unit.is_empty() {
        validate::name(&mut v, "unit", "units", &req.unit);
    }
    let after = if req.page_token.is_empty() {
        None
    } else {
        let parsed = req
            .page_token
            .split_once('|')
            .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.to_string())));
        v.check(parsed.is_none(), "page_token", "not a token from this list");
        parsed
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    // The caller's scope narrows the list; a place outside it is refused.
    let place = match (&principal.place_scope, place) {
        (Some(scope), Some((column, code))) => {
            let inside = ctx.gazetteer.is_within(&code, scope);
            if !inside {
                return Err(Error::Denied(
                    "OUT_OF_SCOPE",
                    format!("{code} is outside your place scope"),
                ));
            }
            Some((column, code))
        }
        (Some(scope), None) => place_filter(ctx, &mut FieldViolations::new(), "place", scope),
        (None, p) => p,
    };
    let size = if req.page_size == 0 {
        50
    } else {
        req.page_size
    };
    let filter = store::clocks::Filter {
        states,
        place,
        unit: (!req.unit.is_empty()).then(|| req.unit.clone()),
        after,
    };
    let rows = store::clocks::list(ctx.db.pool(), &filter, i64::from(size) + 1).await?;
    let more = rows.len() > size as usize;
    let rows: Vec<_> = rows.into_iter().take(size as usize).collect();
    let next_page_token = match (more, rows.last()) {
        (true, Some((key, c))) => format!("{key}|{}", c.case_id),
        _ => String::new(),
    };
    Ok(pb::ListClocksResponse {
        clocks: rows.iter().map(|(_, c)| convert::clock(c, false)).collect(),
        next_page_token,
    })
}
