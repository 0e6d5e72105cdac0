//! Matching: FindCandidates (online, best k with reasons) and PlanAssignments (batch optimum).

use std::{collections::HashSet, sync::Arc, time::Instant};

use tonic::Request;

use super::{STAFF, convert, place_filter, scope_filter, staff_over, validate};
use crate::{
    domain::{AssigneeKind, AssignmentOrigin, NeedState},
    error::Error,
    ops::{self, Ctx},
    plan::{self, PlanNeed},
    rank, store,
};
use minqing_kit::{
    auth::{Role, caller},
    error::FieldViolations,
};
use minqing_proto::minqing::matching::v1 as pb;

fn candidate(
    e: &rank::Entry,
    fit: &rank::Fit,
    reasons: Vec<crate::domain::Reason>,
) -> pb::Candidate {
    pb::Candidate {
        volunteer: format!("volunteers/{}", e.id),
        display_name: e.display_name.clone(),
        score: fit.score,
        reasons: convert::reasons(&reasons),
        distance_meters: fit
            .distance_m
            .map_or(-1, |d| d.round().min(f64::from(i32::MAX)) as i32),
        available_minutes: fit.free_minutes.min(i32::MAX as u32) as i32,
        open_tasks: e.load.open_tasks as i32,
        week_minutes: fit.week_minutes as i32,
        offers_last_30_days: fit.recent_offers as i32,
    }
}

pub(super) async fn find(
    ctx: &Ctx,
    request: Request<pb::FindCandidatesRequest>,
) -> Result<pb::FindCandidatesResponse, Error> {
    let principal = caller(&request)?
        .require(&[Role::CommunityStaff, Role::GridWorker, Role::Service])?
        .clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let id = validate::name(&mut v, "need", &req.need, "needs");
    v.check(
        !(0..=100).contains(&req.max_candidates),
        "max_candidates",
        "must be 0 to 100",
    );
    let Some(id) = id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let k = if req.max_candidates == 0 {
        10
    } else {
        req.max_candidates as usize
    };
    let need = store::needs::get(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("need", req.need.clone()))?;
    if !principal.covers_place(need.spec.place.codes()) {
        return Err(Error::Denied(
            "OUT_OF_SCOPE",
            "the need is outside your place scope".into(),
        ));
    }
    if !matches!(
        need.state,
        NeedState::Draft | NeedState::Open | NeedState::Filled
    ) {
        return Err(Error::precondition(
            "NEED_CLOSED",
            need.name(),
            "the need is done or cancelled",
        ));
    }
    if !need.spec.open_to(AssigneeKind::Volunteer) {
        return Err(Error::precondition(
            "NOT_OPEN_TO_VOLUNTEERS",
            need.name(),
            "the need is not open to individual volunteers",
        ));
    }
    let asked = store::needs::asked(ctx.db.pool(), &id).await?;
    let rules = ctx.rules(ctx.clock.now_micros());
    let response = ctx.index.read(|pool| {
        let view = ctx.view(&need, &asked);
        let ranked = pool.rank(&view, &rules, k);
        pb::FindCandidatesResponse {
            need: need.name(),
            candidates: ranked
                .top
                .iter()
                .filter_map(|(slot, fit)| {
                    let e = pool.entry(*slot)?;
                    Some(candidate(e, fit, rank::explain(e, &view, fit, &rules)))
                })
                .collect(),
            eligible_count: ranked.eligible as i32,
            considered_count: ranked.considered as i32,
            exclusions: ranked
                .exclusions
                .iter()
                .map(|(x, n)| pb::ExclusionCount {
                    reason: *x as i32,
                    count: *n as i32,
                })
                .collect(),
        }
    });
    Ok(response)
}

pub(super) async fn plan(
    ctx: &Ctx,
    request: Request<pb::PlanAssignmentsRequest>,
) -> Result<pb::PlanAssignmentsResponse, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let started = Instant::now();
    let mut v = FieldViolations::new();
    v.check(req.needs.len() > 5_000, "needs", "at most 5000");
    v.check(
        !(0..=5_000).contains(&req.max_needs),
        "max_needs",
        "must be 0 to 5000",
    );
    let mut f = store::needs::Filter {
        states: vec![i64::from(NeedState::Open.wire())],
        scope: scope_filter(ctx, &principal),
        ..Default::default()
    };
    for (i, n) in req.needs.iter().enumerate() {
        if let Some(id) = validate::name(&mut v, &format!("needs[{i}]"), n, "needs") {
            f.ids.push(id);
        }
    }
    if f.ids.is_empty() {
        f.place = place_filter(ctx, &mut v, "place", &req.place);
    }
    let ws = validate::time(&mut v, "window_start", &req.window_start, false);
    let we = validate::time(&mut v, "window_end", &req.window_end, false);
    if ws.is_some() || we.is_some() {
        f.window = Some((ws.unwrap_or(i64::MIN / 2), we.unwrap_or(i64::MAX / 2)));
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let max = if req.max_needs == 0 {
        5_000
    } else {
        i64::from(req.max_needs)
    };
    let mut needs = store::needs::list(ctx.db.pool(), &f, max).await?;
    needs.retain(|n| {
        n.spec.open_to(AssigneeKind::Volunteer)
            && n.places_left() > 0
            && staff_over(&principal, &n.spec.place)
    });
    needs.sort_by_key(|n| (std::cmp::Reverse(n.spec.urgency.wire()), n.spec.start));
    let mut planned_needs = Vec::with_capacity(needs.len());
    for n in needs {
        let asked = store::needs::asked(ctx.db.pool(), &n.id).await?;
        planned_needs.push(PlanNeed {
            point: ctx.need_point(&n),
            places: n.places_left(),
            need: n,
            asked,
        });
    }
    let now = ctx.clock.now_micros();
    let rules = ctx.rules(now);
    let index = Arc::clone(&ctx.index);
    let planned_needs = Arc::new(planned_needs);
    let for_plan = Arc::clone(&planned_needs);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // CPU work off the async runtime's threads.
    let (result, names) = tokio::task::spawn_blocking(move || {
        index.read(|pool| {
            let result = plan::plan(pool, &for_plan, &rules, threads);
            let names: Vec<(String, String, Vec<crate::domain::Reason>)> = result
                .assignments
                .iter()
                .map(|p| {
                    let e = pool.entry(p.slot);
                    let asked = HashSet::new();
                    let view = rank::NeedView {
                        spec: &for_plan[p.need].need.spec,
                        point: for_plan[p.need].point,
                        asked: &asked,
                        week: rules.calendar.week(for_plan[p.need].need.spec.start),
                    };
                    (
                        e.map(|e| e.id.clone()).unwrap_or_default(),
                        e.map(|e| e.display_name.clone()).unwrap_or_default(),
                        e.map(|e| rank::explain(e, &view, &p.fit, &rules))
                            .unwrap_or_default(),
                    )
                })
                .collect();
            (result, names)
        })
    })
    .await
    .map_err(|e| Error::precondition("PLAN_FAILED", "", format!("planning stopped: {e}")))?;
    let compute = started.elapsed();
    let mut response = pb::PlanAssignmentsResponse {
        needs_considered: planned_needs.len() as i32,
        volunteers_considered: result.volunteers_considered as i32,
        places_requested: result.places_requested as i32,
        places_filled: result.assignments.len() as i32,
        total_score: result.assignments.iter().map(|p| p.fit.score).sum(),
        compute_time: Some(prost_types::Duration {
            seconds: compute.as_secs() as i64,
            nanos: compute.subsec_nanos() as i32,
        }),
        ..Default::default()
    };
    for (p, (id, display, reasons)) in result.assignments.iter().zip(&names) {
        response.assignments.push(pb::PlannedAssignment {
            need: planned_needs[p.need].need.name(),
            volunteer: format!("volunteers/{id}"),
            display_name: display.clone(),
            score: p.fit.score,
            reasons: convert::reasons(reasons),
        });
    }
    response.unfilled = result
        .unfilled
        .iter()
        .map(|(i, places, eligible)| pb::UnfilledNeed {
            need: planned_needs[*i].need.name(),
            places: *places as i32,
            eligible_count: *eligible as i32,
        })
        .collect();
    if req.make_offers && !result.assignments.is_empty() {
        let actor = principal.actor();
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let mut touched = Vec::new();
        let mut by_need: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
        for (p, (id, _, _)) in result.assignments.iter().zip(&names) {
            by_need.entry(p.need).or_default().push(id.clone());
        }
        for (i, ids) in by_need {
            let Some(mut need) = store::needs::get(tx.conn(), &planned_needs[i].need.id).await?
            else {
                continue;
            };
            for id in ids {
                // Each planned offer is checked again as things stand; one that no longer
                // fits is left out of the offers made.
                match ops::offer(
                    ctx,
                    &mut tx,
                    &mut need,
                    &id,
                    &ops::Making {
                        origin: AssignmentOrigin::Plan,
                        previous: None,
                        note: "",
                        actor: &actor,
                        now,
                    },
                )
                .await
                {
                    Ok(a) => {
                        touched.push(a.assignee.id.clone());
                        response.offers.push(convert::assignment(&a));
                    }
                    Err(Error::Precondition(..) | Error::NotFound(..)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        tx.commit().await?;
        ctx.index.reload(touched).await?;
    }
    Ok(response)
}
