//! Staff actions on a case: TransferCase, ReassignCase, RerouteCase, EscalateCase,
//! DecideEscalation, ReferCase. Each reads the route, changes it in memory and writes it at
//! the version read, retrying from the start when the case changed meanwhile.

use tonic::{Request, Response, Status};

use super::{RETRIES, STAFF_ROLES, check_scope, flow_status, knowledge_status, validate};
use crate::{
    app::App,
    convert,
    domain::{
        AssignmentState, Disposition, Escalation, Referral, Route, RouteState, Unit, UnitKind,
    },
    flow::{self, Coordination, Emit, FlowError},
    store,
};
use minqing_kit::{
    auth::{Principal, caller},
    db::Tx,
    error::{FieldViolations, failed_precondition, not_found, permission_denied},
    feed::EventMeta,
    time::Micros,
};
use minqing_proto::minqing::routing::v1 as pb;

struct Loaded {
    tx: Tx,
    route: Route,
    version: i64,
    now: Micros,
}

/// Opens a transaction and reads the case's route, checking scope, unit and etag.
async fn load(
    app: &App,
    principal: &Principal,
    id: &str,
    name: &str,
    etag: &str,
) -> Result<Loaded, Status> {
    let now = app.clock.now_micros();
    let mut tx = app.db.begin().await?;
    let route = store::get_route(tx.conn(), id)
        .await?
        .ok_or_else(|| not_found("case route", name))?;
    check_scope(principal, &route)?;
    if !etag.is_empty() && etag != route.version.to_string() {
        return Err(failed_precondition(
            "ETAG_MISMATCH",
            name,
            "the case's routing changed since it was read; read it again",
        ));
    }
    Ok(Loaded {
        tx,
        version: route.version,
        route,
        now,
    })
}

/// Writes the route and its emits; `None` when the case changed meanwhile (retry).
async fn save(
    mut l: Loaded,
    emits: Vec<Emit>,
    meta: &EventMeta,
) -> Result<Option<pb::CaseRoute>, Status> {
    match flow::finish(&mut l.tx, &mut l.route, Some(l.version), emits, l.now, meta).await {
        Ok(()) => {
            l.tx.commit().await?;
            Ok(Some(convert::route(&l.route, Vec::new())))
        }
        Err(FlowError::Conflict) => Ok(None),
        Err(e) => Err(flow_status(e)),
    }
}

fn kept_changing() -> Status {
    Status::aborted("the case kept changing; retry")
}

/// A unit-scoped caller acts only on cases its unit coordinates or handles.
fn check_unit(principal: &Principal, route: &Route) -> Result<(), Status> {
    match &principal.unit_scope {
        Some(u) if u != &route.coordinating_unit && u != &route.handling_unit => {
            Err(permission_denied(
                "NOT_YOUR_UNIT",
                format!(
                    "{} is neither coordinated nor handled by your unit",
                    route.case_name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn check_open(route: &Route, name: &str) -> Result<(), Status> {
    if route.state.is_open() {
        Ok(())
    } else {
        Err(failed_precondition(
            "CASE_CLOSED",
            name,
            format!(
                "the case is {}; its routing can no longer change",
                route.state.slug()
            ),
        ))
    }
}

/// An active unit named by `field`.
fn target_unit(app: &App, v: &mut FieldViolations, field: &str, name: &str) -> Option<Unit> {
    let id = validate::name(v, field, "units", name)?;
    match app.directory.current().get(&id) {
        Some(u) if u.active => Some((**u).clone()),
        Some(_) => {
            v.add(field, format!("{name} is inactive"));
            None
        }
        None => {
            v.add(field, format!("no unit {name}"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn move_case(
    app: &App,
    principal: &Principal,
    case: &str,
    unit_name: &str,
    reason: &str,
    disposition: i32,
    etag: &str,
    handed_over: bool,
) -> Result<Response<pb::CaseRoute>, Status> {
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "case", "cases", case);
    let unit = target_unit(app, &mut v, "unit", unit_name);
    let reason = validate::text(&mut v, "reason", reason, 1, 1000, true);
    let disposition = match disposition {
        0 => None,
        n => {
            let d = Disposition::from_wire(n);
            v.check(d.is_none(), "disposition", "unknown disposition");
            v.check(
                matches!(
                    d,
                    Some(Disposition::Emergency | Disposition::Referred | Disposition::Escalated)
                ),
                "disposition",
                "use ReferCase or EscalateCase for those; emergencies are routed by the rules",
            );
            d
        }
    };
    v.finish()?;
    let (id, unit) = (id.unwrap_or_default(), unit.ok_or_else(kept_changing)?);
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let meta = EventMeta::current(principal.actor());
    for _ in 0..RETRIES {
        let mut l = load(app, principal, &id, case, etag).await?;
        check_unit(principal, &l.route)?;
        check_open(&l.route, case)?;
        if l.route.handling_unit == unit.id {
            return Err(failed_precondition(
                "SAME_UNIT",
                case,
                format!("{} already handles the case", unit_name),
            ));
        }
        let from = l.route.handling_unit.clone();
        let verb = if handed_over {
            "transferred"
        } else {
            "reassigned"
        };
        let mut emits = vec![Emit::Transferred {
            from: from.clone(),
            to: unit.id.clone(),
            reason: reason.clone(),
            handed_over,
        }];
        flow::end_current(
            &mut l.tx,
            &l.route,
            AssignmentState::Superseded,
            &format!("{verb} to {}: {reason}", unit.display_name),
            l.now,
            &mut emits,
        )
        .await
        .map_err(flow_status)?;
        let d = flow::staff_decision(
            &l.route,
            &unit,
            disposition.unwrap_or(l.route.disposition),
            &format!("{verb} by staff: {reason}"),
            &k,
            app,
            l.now,
        );
        let escalation = l.route.escalation.clone();
        let outcome = crate::rules::Outcome {
            decision: d,
            create: Vec::new(),
        };
        let (coordination, cause) = if handed_over {
            (Coordination::Take, pb::RouteCause::Transferred)
        } else {
            (Coordination::Keep, pb::RouteCause::Reassigned)
        };
        flow::assign(
            app,
            &mut l.tx,
            &mut l.route,
            outcome,
            coordination,
            cause,
            &from,
            l.now,
            &meta,
            &mut emits,
        )
        .await
        .map_err(flow_status)?;
        if l.route.disposition == Disposition::Escalated {
            // The escalation in progress goes with the case; it is not asked for again.
            l.route.escalation = escalation;
            emits.retain(|e| !matches!(e, Emit::Escalated));
        }
        if let Some(r) = save(l, emits, &meta).await? {
            return Ok(Response::new(r));
        }
    }
    Err(kept_changing())
}

pub(super) async fn transfer(
    app: &App,
    request: Request<pb::TransferCaseRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let r = request.into_inner();
    move_case(
        app,
        &principal,
        &r.case,
        &r.unit,
        &r.reason,
        r.disposition,
        &r.etag,
        true,
    )
    .await
}

pub(super) async fn reassign(
    app: &App,
    request: Request<pb::ReassignCaseRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let r = request.into_inner();
    move_case(
        app, &principal, &r.case, &r.unit, &r.reason, 0, &r.etag, false,
    )
    .await
}

pub(super) async fn reroute(
    app: &App,
    request: Request<pb::RerouteCaseRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "case", "cases", &req.case);
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 1000, true);
    v.check(
        req.exclude_units.len() > 100,
        "exclude_units",
        "at most 100 units",
    );
    let exclude: Vec<String> = req
        .exclude_units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| validate::name(&mut v, &format!("exclude_units[{i}]"), "units", u))
        .collect();
    v.finish()?;
    let id = id.unwrap_or_default();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let meta = EventMeta::current(principal.actor());
    for _ in 0..RETRIES {
        let mut l = load(app, &principal, &id, &req.case, "").await?;
        check_unit(&principal, &l.route)?;
        check_open(&l.route, &req.case)?;
        let mut all = l.route.refused_by.clone();
        all.extend(exclude.iter().cloned());
        let outcome = app.decide(&l.route.facts, &all, &k, l.now);
        let from = l.route.handling_unit.clone();
        let mut emits = Vec::new();
        flow::end_current(
            &mut l.tx,
            &l.route,
            AssignmentState::Superseded,
            &format!("routed again: {reason}"),
            l.now,
            &mut emits,
        )
        .await
        .map_err(flow_status)?;
        flow::assign(
            app,
            &mut l.tx,
            &mut l.route,
            outcome,
            Coordination::Keep,
            pb::RouteCause::Rerouted,
            &from,
            l.now,
            &meta,
            &mut emits,
        )
        .await
        .map_err(flow_status)?;
        if let Some(r) = save(l, emits, &meta).await? {
            return Ok(Response::new(r));
        }
    }
    Err(kept_changing())
}

/// The unit above the coordinating unit that covers the case's place, climbing.
fn approver_for(app: &App, route: &Route) -> Option<Unit> {
    let directory = app.directory.current();
    let start = directory
        .get(&route.coordinating_unit)
        .map(|u| u.kind)
        .unwrap_or(UnitKind::Community);
    let mut chain: Vec<&str> = route.facts.place.codes().collect();
    chain.reverse();
    let mut next = start.above().or(Some(UnitKind::StreetOffice));
    while let Some(k) = next {
        if let Some(u) = directory.lowest(k, &chain, |_| true, |_| true) {
            return Some((**u).clone());
        }
        next = k.above();
    }
    None
}

pub(super) async fn escalate(
    app: &App,
    request: Request<pb::EscalateCaseRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "case", "cases", &req.case);
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 2000, true);
    let named = if req.approver.is_empty() {
        None
    } else {
        target_unit(app, &mut v, "approver", &req.approver)
    };
    v.finish()?;
    let id = id.unwrap_or_default();
    let meta = EventMeta::current(principal.actor());
    for _ in 0..RETRIES {
        let mut l = load(app, &principal, &id, &req.case, &req.etag).await?;
        check_unit(&principal, &l.route)?;
        if !matches!(l.route.state, RouteState::Assigned | RouteState::InProgress) {
            return Err(failed_precondition(
                "WRONG_STATE",
                &req.case,
                format!(
                    "only a case being handled can be reported up (it is {})",
                    l.route.state.slug()
                ),
            ));
        }
        let approver = match named.clone().or_else(|| approver_for(app, &l.route)) {
            Some(a) => a,
            None => {
                return Err(failed_precondition(
                    "NO_APPROVER",
                    &req.case,
                    "no unit above covers the case's place: name the approver",
                ));
            }
        };
        let mut emits = Vec::new();
        if let Some(mut a) = store::get_assignment(l.tx.conn(), &l.route.current_assignment).await?
        {
            if a.state == AssignmentState::Accepted {
                a.state = AssignmentState::AwaitingApproval;
            }
            a.disposition = Disposition::Escalated;
            a.due_time = None;
            a.version += 1;
            store::update_assignment(&mut l.tx, &a).await?;
            emits.push(Emit::Desk(
                a,
                pb::DeskItemKind::Updated,
                format!("reported up to {} for approval", approver.display_name),
            ));
        }
        l.route.disposition = Disposition::Escalated;
        l.route.state = RouteState::AwaitingApproval;
        l.route.due_time = None;
        l.route.clock_start_time = None;
        l.route.escalation = Some(Escalation {
            approver: approver.id.clone(),
            approver_display_name: approver.display_name.clone(),
            reason: reason.clone(),
            requested_by: principal.actor(),
            request_time: l.now,
            ..Default::default()
        });
        emits.push(Emit::Escalated);
        if let Some(r) = save(l, emits, &meta).await? {
            return Ok(Response::new(r));
        }
    }
    Err(kept_changing())
}

pub(super) async fn decide(
    app: &App,
    request: Request<pb::DecideEscalationRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "case", "cases", &req.case);
    let note = validate::text(
        &mut v,
        "note",
        &req.note,
        usize::from(!req.approved),
        2000,
        true,
    );
    let answering = if req.answering_unit.is_empty() {
        None
    } else {
        target_unit(app, &mut v, "answering_unit", &req.answering_unit)
    };
    v.finish()?;
    let id = id.unwrap_or_default();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let meta = EventMeta::current(principal.actor());
    for _ in 0..RETRIES {
        let mut l = load(app, &principal, &id, &req.case, "").await?;
        if l.route.state != RouteState::AwaitingApproval {
            return Err(failed_precondition(
                "NOT_AWAITING_APPROVAL",
                &req.case,
                format!(
                    "the case is not waiting for approval (it is {})",
                    l.route.state.slug()
                ),
            ));
        }
        let mut escalation = l.route.escalation.clone().unwrap_or_default();
        if let Some(u) = &principal.unit_scope
            && u != &escalation.approver
        {
            return Err(permission_denied(
                "NOT_THE_APPROVER",
                "only the approving unit records its decision",
            ));
        }
        let answer_due = app.local.add_working_days(l.now, 3);
        escalation.approved = req.approved;
        escalation.decision_note = note.clone();
        escalation.decide_time = Some(l.now);
        escalation.answer_due_time = Some(answer_due);
        let mut emits = Vec::new();
        match answering.as_ref().filter(|u| u.id != l.route.handling_unit) {
            Some(unit) => {
                let from = l.route.handling_unit.clone();
                flow::end_current(
                    &mut l.tx,
                    &l.route,
                    AssignmentState::Superseded,
                    &format!("the answer goes to {}", unit.display_name),
                    l.now,
                    &mut emits,
                )
                .await
                .map_err(flow_status)?;
                let mut d = flow::staff_decision(
                    &l.route,
                    unit,
                    Disposition::Escalated,
                    "answers the resident after the escalation's decision",
                    &k,
                    app,
                    l.now,
                );
                d.due_time = Some(answer_due);
                d.time_limit_working_days = 3;
                let outcome = crate::rules::Outcome {
                    decision: d,
                    create: Vec::new(),
                };
                flow::assign(
                    app,
                    &mut l.tx,
                    &mut l.route,
                    outcome,
                    Coordination::Keep,
                    pb::RouteCause::EscalationDecided,
                    &from,
                    l.now,
                    &meta,
                    &mut emits,
                )
                .await
                .map_err(flow_status)?;
                emits.retain(|e| !matches!(e, Emit::Escalated));
            }
            None => {
                if let Some(mut a) =
                    store::get_assignment(l.tx.conn(), &l.route.current_assignment).await?
                {
                    if a.state == AssignmentState::AwaitingApproval
                        || a.state == AssignmentState::Pending
                    {
                        a.state = if a.accept_time.is_some() {
                            AssignmentState::Accepted
                        } else {
                            AssignmentState::Pending
                        };
                    }
                    a.due_time = Some(answer_due);
                    a.version += 1;
                    store::update_assignment(&mut l.tx, &a).await?;
                    let what = if req.approved { "approved" } else { "refused" };
                    emits.push(Emit::Desk(
                        a,
                        pb::DeskItemKind::Updated,
                        format!(
                            "the escalation was {what}: answer the resident within 3 working days"
                        ),
                    ));
                }
            }
        }
        l.route.escalation = Some(escalation);
        l.route.state = RouteState::AnswerDue;
        l.route.due_time = Some(answer_due);
        l.route.time_limit_working_days = 3;
        l.route.clock_start_time = Some(l.now);
        emits.push(Emit::EscalationDecided);
        if let Some(r) = save(l, emits, &meta).await? {
            return Ok(Response::new(r));
        }
    }
    Err(kept_changing())
}

pub(super) async fn refer(
    app: &App,
    request: Request<pb::ReferCaseRequest>,
) -> Result<Response<pb::CaseRoute>, Status> {
    let principal = caller(&request)?.require(STAFF_ROLES)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "case", "cases", &req.case);
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 2000, true);
    let unit = if req.unit.is_empty() {
        None
    } else {
        target_unit(app, &mut v, "unit", &req.unit)
    };
    let body = validate::text(
        &mut v,
        "competent_body",
        &req.competent_body,
        usize::from(req.unit.is_empty()),
        200,
        false,
    );
    v.finish()?;
    let id = id.unwrap_or_default();
    let k = app.knowledge.get().await.map_err(knowledge_status)?;
    let meta = EventMeta::current(principal.actor());
    for _ in 0..RETRIES {
        let mut l = load(app, &principal, &id, &req.case, "").await?;
        check_unit(&principal, &l.route)?;
        check_open(&l.route, &req.case)?;
        let mut emits = Vec::new();
        match &unit {
            Some(unit) if unit.id != l.route.handling_unit => {
                let from = l.route.handling_unit.clone();
                flow::end_current(
                    &mut l.tx,
                    &l.route,
                    AssignmentState::Superseded,
                    &format!("referred to {}: {reason}", unit.display_name),
                    l.now,
                    &mut emits,
                )
                .await
                .map_err(flow_status)?;
                let mut d = flow::staff_decision(
                    &l.route,
                    unit,
                    Disposition::Referred,
                    &format!("referred by staff: {reason}"),
                    &k,
                    app,
                    l.now,
                );
                d.referral_reason = reason.clone();
                d.competent_body = if body.is_empty() {
                    unit.display_name.clone()
                } else {
                    body.clone()
                };
                let outcome = crate::rules::Outcome {
                    decision: d,
                    create: Vec::new(),
                };
                flow::assign(
                    app,
                    &mut l.tx,
                    &mut l.route,
                    outcome,
                    Coordination::Keep,
                    pb::RouteCause::Referred,
                    &from,
                    l.now,
                    &meta,
                    &mut emits,
                )
                .await
                .map_err(flow_status)?;
            }
            _ => {
                // Referred by name: the handling unit explains it to the resident.
                let handling = app
                    .directory
                    .current()
                    .get(&l.route.handling_unit)
                    .map(|u| (**u).clone());
                let d = match &handling {
                    Some(h) => flow::staff_decision(
                        &l.route,
                        h,
                        Disposition::Referred,
                        &reason,
                        &k,
                        app,
                        l.now,
                    ),
                    None => {
                        return Err(failed_precondition(
                            "NO_HANDLING_UNIT",
                            &req.case,
                            "the case has no handling unit to explain the referral",
                        ));
                    }
                };
                if let Some(mut a) =
                    store::get_assignment(l.tx.conn(), &l.route.current_assignment).await?
                {
                    a.disposition = Disposition::Referred;
                    a.due_time = d.due_time;
                    a.version += 1;
                    store::update_assignment(&mut l.tx, &a).await?;
                    emits.push(Emit::Desk(
                        a,
                        pb::DeskItemKind::Updated,
                        format!("referred to {body}: explain it to the resident"),
                    ));
                }
                l.route.disposition = Disposition::Referred;
                l.route.state = RouteState::Referred;
                l.route.due_time = d.due_time;
                l.route.time_limit_working_days = d.time_limit_working_days;
                l.route.clock_start_time = Some(l.now);
                l.route.referral = Some(Referral {
                    unit: unit.as_ref().map(|u| u.id.clone()).unwrap_or_default(),
                    competent_body: if body.is_empty() {
                        unit.as_ref()
                            .map(|u| u.display_name.clone())
                            .unwrap_or_default()
                    } else {
                        body.clone()
                    },
                    reason: reason.clone(),
                    refer_time: l.now,
                });
                emits.push(Emit::Referred);
            }
        }
        if let Some(r) = save(l, emits, &meta).await? {
            return Ok(Response::new(r));
        }
    }
    Err(kept_changing())
}
