//! `Replies`: a case's reply record, appointed visits, and recording a visit.

use tonic::Request;

use super::{READ_ROLES, VISIT_ROLES, check_scope, convert, place_filter, validate};
use crate::{app::Ctx, error::Error, replies::DeliveryState, store};
use minqing_kit::{
    auth::caller,
    error::FieldViolations,
    feed::{self, EventMeta},
};
use minqing_proto::minqing::supervision::v1 as pb;

/// `ListReplies`.
pub async fn list(
    ctx: &Ctx,
    r: Request<pb::ListRepliesRequest>,
) -> Result<pb::ListRepliesResponse, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "case", "cases", &r.get_ref().case);
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    if let Some(clock) = store::clocks::get(ctx.db.pool(), &id).await? {
        check_scope(&principal, &clock.place, &format!("cases/{id}"))?;
    } else if principal.place_scope.is_some() {
        // No clock yet: nothing to show, and nothing to say about where the case is.
        return Ok(pb::ListRepliesResponse::default());
    }
    let mut replies = Vec::new();
    for reply in store::replies::replies_for(ctx.db.pool(), &id).await? {
        let deliveries = store::replies::deliveries_of(ctx.db.pool(), &reply.id).await?;
        replies.push(convert::reply(&reply, &deliveries));
    }
    Ok(pb::ListRepliesResponse { replies })
}

async fn wire_appointment(
    ctx: &Ctx,
    a: &crate::replies::Appointment,
) -> Result<pb::Appointment, Error> {
    let delivery = store::replies::delivery_by_id(ctx.db.pool(), &a.delivery_id).await?;
    let reply_id = delivery.map(|d| d.reply_id).unwrap_or_default();
    let text = store::replies::reply(ctx.db.pool(), &reply_id)
        .await?
        .map(|r| r.text)
        .unwrap_or_default();
    Ok(convert::appointment(a, &reply_id, &text))
}

/// `ListAppointments`.
pub async fn appointments(
    ctx: &Ctx,
    r: Request<pb::ListAppointmentsRequest>,
) -> Result<pb::ListAppointmentsResponse, Error> {
    let principal = caller(&r)?.require(READ_ROLES)?.clone();
    let req = r.get_ref();
    let mut v = FieldViolations::new();
    v.check(
        !(0..=500).contains(&req.page_size),
        "page_size",
        "must be 0 to 500",
    );
    let mut place = place_filter(ctx, &mut v, "place", &req.place);
    if let Some((column, _)) = &place
        && !matches!(*column, "grid" | "community")
    {
        v.add("place", "must be a grid or a community");
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    if let Some(scope) = &principal.place_scope {
        match &place {
            Some((_, code)) if !ctx.gazetteer.is_within(code, scope) => {
                return Err(Error::Denied(
                    "OUT_OF_SCOPE",
                    format!("{code} is outside your place scope"),
                ));
            }
            Some(_) => {}
            None => {
                place = place_filter(ctx, &mut FieldViolations::new(), "place", scope)
                    .filter(|(c, _)| matches!(*c, "grid" | "community"));
                if place.is_none() {
                    v.add("place", "required for a scope above communities");
                    return Err(Error::Invalid(v));
                }
            }
        }
    }
    let size = if req.page_size == 0 {
        50
    } else {
        req.page_size
    };
    let list =
        store::replies::appointments(ctx.db.pool(), place, req.include_done, i64::from(size))
            .await?;
    let mut appointments = Vec::new();
    for a in &list {
        appointments.push(wire_appointment(ctx, a).await?);
    }
    Ok(pb::ListAppointmentsResponse { appointments })
}

/// `RecordVisit`.
pub async fn record_visit(
    ctx: &Ctx,
    r: Request<pb::RecordVisitRequest>,
) -> Result<pb::Appointment, Error> {
    let principal = caller(&r)?.require(VISIT_ROLES)?.clone();
    let req = r.get_ref();
    let now = ctx.clock.now_micros();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "name", "appointments", &req.name);
    let outcome = validate::text(&mut v, "outcome", &req.outcome, 1, 1_000, true);
    let visit_time = validate::optional_time(&mut v, "visit_time", &req.visit_time);
    if visit_time.is_some_and(|t| t > now) {
        v.add("visit_time", "must not be in the future");
    }
    let (Some(id), true) = (id, v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let mut a = store::replies::appointment_by_id(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("appointment", req.name.clone()))?;
    let place = crate::clock::Place {
        grid: a.grid.clone(),
        community: a.community.clone(),
        ..Default::default()
    };
    let in_scope = match &principal.place_scope {
        None => true,
        Some(scope) => place.codes().any(|c| ctx.gazetteer.is_within(c, scope)),
    };
    if !in_scope {
        return Err(Error::Denied(
            "OUT_OF_SCOPE",
            format!("{} is outside your place scope", req.name),
        ));
    }
    if a.done {
        return Err(Error::precondition(
            "ALREADY_VISITED",
            req.name.clone(),
            "the visit was already recorded",
        ));
    }
    let mut d = store::replies::delivery_by_id(ctx.db.pool(), &a.delivery_id)
        .await?
        .ok_or_else(|| Error::NotFound("delivery", a.delivery_id.clone()))?;
    a.done = true;
    a.visit_time = visit_time.unwrap_or(now);
    a.visited_by = principal.actor();
    a.outcome = outcome;
    d.state = DeliveryState::Delivered;
    d.delivered_time = a.visit_time;
    d.attempts = d.attempts.max(1);
    d.update_time = now;
    let mut tx = ctx.db.begin().await?;
    if !store::replies::complete_appointment(&mut tx, &a).await?
        || !store::replies::update_delivery(&mut tx, &d).await?
    {
        return Err(Error::Conflict);
    }
    let wire = wire_appointment(ctx, &a).await?;
    let meta = EventMeta::current(principal.actor());
    let subject = format!("cases/{}", a.case_id);
    let recorded = pb::VisitRecorded {
        appointment: Some(wire.clone()),
    };
    feed::append(&mut tx, &meta, &subject, &recorded, now).await?;
    let delivered = pb::ReplyDelivered {
        reply: wire.reply.clone(),
        case: subject.clone(),
        method: d.method,
        attempts: d.attempts,
    };
    feed::append(&mut tx, &meta, &subject, &delivered, now).await?;
    tx.commit().await?;
    Ok(wire)
}
