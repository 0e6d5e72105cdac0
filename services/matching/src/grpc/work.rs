//! Claims and the assignment lifecycle: ClaimNeed, ConfirmClaim, RejectClaim, OfferNeed,
//! GetAssignment, ListAssignments, AcceptAssignment, DeclineAssignment, WithdrawAssignment,
//! ReassignAssignment, CompleteAssignment, RateAssignment.

use tonic::Request;

use super::{
    MENU_READERS, RATERS, STAFF, convert, hash, own_organisation, own_volunteer, place_filter,
    scope_filter, speaks_for, staff_over, validate,
};
use crate::{
    domain::{
        Assignee, AssigneeKind, Assignment, AssignmentOrigin, AssignmentState, BodyState,
        ClaimPolicy, Need, NeedState, Rating, RatingChannel, Satisfaction,
    },
    error::Error,
    ops::{self, Ctx},
    rank::Purpose,
    store::{self, Inserted},
};
use minqing_kit::{
    auth::{Principal, Role, caller},
    db::Tx,
    error::FieldViolations,
};
use minqing_proto::minqing::matching::v1 as pb;

async fn load(tx: &mut Tx, id: &str, name: &str) -> Result<(Assignment, Need), Error> {
    let a = store::assignments::get(tx.conn(), id)
        .await?
        .ok_or_else(|| Error::NotFound("assignment", name.to_string()))?;
    let need = store::needs::get(tx.conn(), &a.need_id)
        .await?
        .ok_or_else(|| Error::NotFound("need", format!("needs/{}", a.need_id)))?;
    Ok((a, need))
}

fn assignment_id(name: &str) -> Result<String, Error> {
    let mut v = FieldViolations::new();
    validate::name(&mut v, "name", name, "assignments").ok_or(Error::Invalid(v))
}

fn wrong_state(a: &Assignment, want: &str) -> Error {
    Error::precondition(
        "WRONG_STATE",
        a.name(),
        format!("the assignment is {:?}; it must be {want}", a.state),
    )
}

/// Checks a team or organisation claiming or taking `need`.
async fn check_body(
    ctx: &Ctx,
    tx: &mut Tx,
    assignee: &Assignee,
    need: &Need,
) -> Result<(String, Option<String>, Option<String>), Error> {
    let missing = |skills: &[String]| {
        need.spec
            .skills
            .iter()
            .find(|s| !skills.contains(&s.skill))
            .map(|s| s.skill.clone())
    };
    match assignee.kind {
        AssigneeKind::Team => {
            let t = store::bodies::get_team(tx.conn(), &assignee.id)
                .await?
                .ok_or_else(|| Error::NotFound("team", assignee.name()))?;
            if t.state != BodyState::Active {
                return Err(Error::precondition(
                    "RETIRED",
                    t.name(),
                    "the team is retired",
                ));
            }
            if let Some(s) = missing(&t.skills) {
                return Err(Error::precondition(
                    "NOT_ELIGIBLE",
                    t.name(),
                    format!("the team does not list the required skill {s}"),
                ));
            }
            Ok((t.display_name.clone(), Some(t.id.clone()), None))
        }
        AssigneeKind::Organisation => {
            let o = store::bodies::get_org(tx.conn(), &assignee.id)
                .await?
                .ok_or_else(|| Error::NotFound("organisation", assignee.name()))?;
            if o.state != BodyState::Active {
                return Err(Error::precondition(
                    "RETIRED",
                    o.name(),
                    "the organisation is retired",
                ));
            }
            if let Some(s) = missing(&o.skills) {
                return Err(Error::precondition(
                    "NOT_ELIGIBLE",
                    o.name(),
                    format!("the organisation does not list the required skill {s}"),
                ));
            }
            let _ = ctx;
            Ok((o.display_name.clone(), None, Some(o.id.clone())))
        }
        AssigneeKind::Volunteer => Err(Error::Conflict),
    }
}

pub(super) async fn claim(
    ctx: &Ctx,
    request: Request<pb::ClaimNeedRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?
        .require(&[Role::CommunityStaff, Role::Volunteer, Role::PartnerUnit])?
        .clone();
    let req = request.into_inner();
    let h = hash(&req);
    let mut v = FieldViolations::new();
    validate::request_id(&mut v, "request_id", &req.request_id);
    let need_id = validate::name(&mut v, "need", &req.need, "needs");
    let claimant = validate::assignee(&mut v, "claimant", &req.claimant);
    let team = if req.team.is_empty() {
        None
    } else {
        validate::name(&mut v, "team", &req.team, "teams")
    };
    let plan = validate::text(&mut v, "plan", &req.plan, 0, 1_000, true);
    let people = if req.people == 0 { 1 } else { req.people };
    v.check(!(1..=100).contains(&people), "people", "must be 1 to 100");
    if let Some(c) = &claimant {
        v.check(
            c.kind == AssigneeKind::Volunteer && people != 1,
            "people",
            "a volunteer claims for one person",
        );
        v.check(
            c.kind != AssigneeKind::Volunteer && team.is_some(),
            "team",
            "only a volunteer names a team to credit",
        );
    }
    let (Some(need_id), Some(claimant)) = (need_id, claimant) else {
        return Err(Error::Invalid(v));
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let staff = principal.is(STAFF);
    if !staff && !speaks_for(ctx, &principal, &claimant).await? {
        return Err(Error::Denied(
            "NOT_YOURS",
            "you may claim only for yourself, a team you lead, or your organisation".into(),
        ));
    }
    let (a, touched) = crate::retry!({
        let now = ctx.clock.now_micros();
        let actor = principal.actor();
        let mut tx = ctx.db.begin().await?;
        // A retry returns what the first request made, whatever has changed since.
        if let Some((earlier, existing)) =
            store::assignments::by_request(tx.conn(), &actor, &req.request_id).await?
        {
            tx.rollback().await?;
            return if earlier == h {
                Ok((existing, vec![]))
            } else {
                Err(Error::precondition(
                    "REQUEST_ID_REUSED",
                    existing.name(),
                    "request_id was already used for a different request",
                ))
            };
        }
        let mut need = store::needs::get(tx.conn(), &need_id)
            .await?
            .ok_or_else(|| Error::NotFound("need", req.need.clone()))?;
        if staff && !principal.covers_place(need.spec.place.codes()) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        if need.state != NeedState::Open {
            return Err(Error::precondition(
                "NEED_NOT_OPEN",
                need.name(),
                "the need is not open for claims",
            ));
        }
        if !need.spec.open_to(claimant.kind) {
            return Err(Error::precondition(
                "NOT_OPEN_TO_CLAIMANT",
                need.name(),
                "the need is not open to this kind of claimant",
            ));
        }
        if need.places_left() < people as u32 {
            return Err(Error::precondition(
                "NO_PLACES",
                need.name(),
                format!("only {} places are left", need.places_left()),
            ));
        }
        let (display, team_credit, org_credit) = match claimant.kind {
            AssigneeKind::Volunteer => {
                let (vol, _, _) = ops::check_volunteer(
                    ctx,
                    &mut tx,
                    &claimant.id,
                    &need,
                    Purpose::Claim,
                    None,
                    now,
                )
                .await?;
                if let Some(t) = &team
                    && !vol.profile.teams.contains(t)
                {
                    return Err(Error::precondition(
                        "NOT_A_MEMBER",
                        vol.name(),
                        "the volunteer is not a member of that team",
                    ));
                }
                (
                    vol.public_name(),
                    team.clone(),
                    vol.profile.organisation.clone(),
                )
            }
            _ => check_body(ctx, &mut tx, &claimant, &need).await?,
        };
        let state = match need.spec.claim_policy {
            ClaimPolicy::FirstCome => AssignmentState::Accepted,
            ClaimPolicy::Confirm => AssignmentState::Pending,
        };
        let mut a = ops::new_assignment(
            &need,
            claimant.clone(),
            display,
            AssignmentOrigin::Claim,
            state,
            &actor,
            now,
        );
        a.request_id = req.request_id.clone();
        a.people = people as u32;
        a.team = team_credit;
        a.organisation = org_credit;
        a.note = plan.clone();
        if state == AssignmentState::Accepted {
            a.respond_time = Some(now);
        }
        match store::assignments::insert(&mut tx, &a, &h).await? {
            Inserted::Existing {
                request_hash,
                value,
            } => {
                tx.rollback().await?;
                return if request_hash == h {
                    Ok((*value, vec![]))
                } else {
                    Err(Error::precondition(
                        "REQUEST_ID_REUSED",
                        value.name(),
                        "request_id was already used for a different request",
                    ))
                };
            }
            Inserted::New => {}
        }
        ops::touch_assignee(&mut tx, &a.assignee).await?;
        let (expected, before) = (need.version, need.state);
        ops::shift(&mut need, None, state, a.people, now);
        let event = pb::NeedClaimed {
            assignment: Some(convert::assignment(&a)),
            need: Some(convert::need(&need)),
        };
        ops::emit(&mut tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(&mut tx, &need, expected, before, &actor, now).await?;
        tx.commit().await?;
        let touched = if claimant.kind == AssigneeKind::Volunteer {
            vec![claimant.id.clone()]
        } else {
            vec![]
        };
        Ok((a, touched))
    })?;
    ctx.index.reload(touched).await?;
    Ok(convert::assignment(&a))
}

/// Runs a change to one assignment: loads it and its need, runs the body (which checks and
/// changes them, returning the ids of volunteers touched), commits, and refreshes the pool.
macro_rules! change {
    ($ctx:expr, $name:expr, |$tx:ident, $a:ident, $need:ident, $now:ident| $body:block) => {{
        let ctx: &Ctx = $ctx;
        let name: &str = $name;
        let id = assignment_id(name)?;
        let (assignment, touched) = crate::retry!({
            let $now = ctx.clock.now_micros();
            let mut tx = ctx.db.begin().await?;
            let (mut a, mut need) = load(&mut tx, &id, name).await?;
            let touched: Vec<String> = {
                let $tx = &mut tx;
                let $a = &mut a;
                let $need = &mut need;
                crate::error::typed(async { $body }).await?
            };
            tx.commit().await?;
            Ok((a, touched))
        })?;
        ctx.index.reload(touched).await?;
        assignment
    }};
}

pub(super) async fn confirm(
    ctx: &Ctx,
    request: Request<pb::ConfirmClaimRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let actor = principal.actor();
    let a = change!(ctx, &request.get_ref().name, |tx, a, need, now| {
        if !staff_over(&principal, &need.spec.place) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        if a.state != AssignmentState::Pending {
            return Err(wrong_state(a, "PENDING"));
        }
        let ea = a.version;
        a.state = AssignmentState::Accepted;
        a.respond_time = Some(now);
        a.update_time = now;
        a.version += 1;
        ops::save_assignment(tx, a, ea).await?;
        ops::touch_assignee(tx, &a.assignee).await?;
        let (expected, before) = (need.version, need.state);
        ops::shift(
            need,
            Some(AssignmentState::Pending),
            AssignmentState::Accepted,
            a.people,
            now,
        );
        let event = pb::ClaimConfirmed {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        Ok(vec![a.assignee.id.clone()])
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn reject(
    ctx: &Ctx,
    request: Request<pb::RejectClaimRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 500, false);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let actor = principal.actor();
    let a = change!(ctx, &req.name, |tx, a, need, now| {
        if !staff_over(&principal, &need.spec.place) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        if a.state != AssignmentState::Pending {
            return Err(wrong_state(a, "PENDING"));
        }
        let (expected, before) =
            ops::end(tx, a, need, AssignmentState::Rejected, &reason, now).await?;
        let event = pb::ClaimRejected {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
            reason: reason.clone(),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        Ok(vec![a.assignee.id.clone()])
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn offer(
    ctx: &Ctx,
    request: Request<pb::OfferNeedRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let need_id = validate::name(&mut v, "need", &req.need, "needs");
    let volunteer = if req.volunteer.is_empty() {
        None
    } else {
        validate::name(&mut v, "volunteer", &req.volunteer, "volunteers")
    };
    let note = validate::text(&mut v, "note", &req.note, 0, 1_000, true);
    let Some(need_id) = need_id.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let a = crate::retry!({
        let now = ctx.clock.now_micros();
        let actor = principal.actor();
        let mut tx = ctx.db.begin().await?;
        let mut need = store::needs::get(tx.conn(), &need_id)
            .await?
            .ok_or_else(|| Error::NotFound("need", req.need.clone()))?;
        if !staff_over(&principal, &need.spec.place) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        let a = match &volunteer {
            Some(vid) => {
                ops::offer(
                    ctx,
                    &mut tx,
                    &mut need,
                    vid,
                    &ops::Making {
                        origin: AssignmentOrigin::Offer,
                        previous: None,
                        note: &note,
                        actor: &actor,
                        now,
                    },
                )
                .await?
            }
            None => {
                if need.state != NeedState::Open || need.places_left() == 0 {
                    return Err(Error::precondition(
                        "NEED_NOT_OPEN",
                        need.name(),
                        "the need has no open places",
                    ));
                }
                ops::offer_best(
                    ctx,
                    &mut tx,
                    &mut need,
                    &ops::Making {
                        origin: AssignmentOrigin::Offer,
                        previous: None,
                        note: &note,
                        actor: &actor,
                        now,
                    },
                )
                .await?
                .ok_or_else(|| {
                    Error::precondition(
                        "NO_CANDIDATE",
                        need.name(),
                        "no volunteer is eligible for this need",
                    )
                })?
            }
        };
        tx.commit().await?;
        Ok(a)
    })?;
    ctx.index.reload([a.assignee.id.clone()]).await?;
    Ok(convert::assignment(&a))
}

/// Whether the caller may read `a`: staff over its place, readers of the menu who are not
/// volunteers or partners, or its assignee.
async fn may_read(ctx: &Ctx, p: &Principal, a: &Assignment) -> Result<bool, Error> {
    if matches!(p.role, Role::Volunteer | Role::PartnerUnit) {
        return speaks_for(ctx, p, &a.assignee).await;
    }
    Ok(p.is(MENU_READERS) && p.covers_place(a.place.codes()))
}

pub(super) async fn get(
    ctx: &Ctx,
    request: Request<pb::GetAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(MENU_READERS)?.clone();
    let name = &request.get_ref().name;
    let id = assignment_id(name)?;
    let a = store::assignments::get(ctx.db.pool(), &id)
        .await?
        .ok_or_else(|| Error::NotFound("assignment", name.clone()))?;
    if !may_read(ctx, &principal, &a).await? {
        // Not revealing whether someone else's offer exists.
        return Err(Error::NotFound("assignment", name.clone()));
    }
    Ok(convert::assignment(&a))
}

pub(super) async fn list(
    ctx: &Ctx,
    request: Request<pb::ListAssignmentsRequest>,
) -> Result<pb::ListAssignmentsResponse, Error> {
    let principal = caller(&request)?.require(MENU_READERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let limit = validate::page_size(&mut v, req.page_size, 50, 500);
    let mut f = store::assignments::Filter {
        place: place_filter(ctx, &mut v, "place", &req.place),
        ..Default::default()
    };
    if !req.need.is_empty() {
        f.need = validate::name(&mut v, "need", &req.need, "needs");
    }
    if !req.assignee.is_empty() {
        f.assignee = validate::assignee(&mut v, "assignee", &req.assignee).map(|a| a.name());
    }
    for (i, s) in req.states.iter().enumerate() {
        match AssignmentState::from_wire(*s) {
            Some(s) => f.states.push(i64::from(s.wire())),
            None => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    if !req.case.is_empty() {
        f.case = validate::name(&mut v, "case", &req.case, "cases").map(|id| format!("cases/{id}"));
    }
    if !req.page_token.is_empty() {
        v.check(
            uuid::Uuid::parse_str(&req.page_token).is_err(),
            "page_token",
            "not a token from a previous page",
        );
        f.before_id = Some(req.page_token.clone());
    }
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    // A volunteer's or partner's token sees only its own assignments, whatever it asks.
    let own = own_volunteer(&principal)
        .map(|id| format!("volunteers/{id}"))
        .or_else(|| own_organisation(&principal).map(|id| format!("organisations/{id}")));
    match (principal.role, own) {
        (Role::Volunteer | Role::PartnerUnit, Some(me)) => {
            let asked_for_team = f
                .assignee
                .as_ref()
                .and_then(|a| Assignee::parse(a))
                .filter(|a| a.kind == AssigneeKind::Team);
            match asked_for_team {
                Some(team) if speaks_for(ctx, &principal, &team).await? => {}
                _ => f.assignee = Some(me),
            }
        }
        (Role::Volunteer | Role::PartnerUnit, None) => {
            return Err(Error::Denied(
                "NO_UNIT",
                "this token names no volunteer or organisation".into(),
            ));
        }
        _ => f.scope = scope_filter(ctx, &principal),
    }
    let mut rows = store::assignments::list(ctx.db.pool(), &f, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|a| a.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListAssignmentsResponse {
        assignments: rows.iter().map(convert::assignment).collect(),
        next_page_token: next,
    })
}

/// The assignee, or staff over the need for bodies (teams, organisations) when `staff_for_bodies`.
async fn check_actor(
    ctx: &Ctx,
    p: &Principal,
    a: &Assignment,
    need: &Need,
    staff_for_bodies: bool,
    staff_for_all: bool,
) -> Result<(), Error> {
    if speaks_for(ctx, p, &a.assignee).await? {
        return Ok(());
    }
    let staff = staff_over(p, &need.spec.place);
    if staff && (staff_for_all || (staff_for_bodies && a.assignee.kind != AssigneeKind::Volunteer))
    {
        return Ok(());
    }
    Err(Error::Denied(
        "NOT_YOURS",
        "only the assignee may do this".into(),
    ))
}

pub(super) async fn accept(
    ctx: &Ctx,
    request: Request<pb::AcceptAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.clone();
    let actor = principal.actor();
    let a = change!(ctx, &request.get_ref().name, |tx, a, need, now| {
        check_actor(ctx, &principal, a, need, true, false).await?;
        if a.state != AssignmentState::Offered {
            return Err(wrong_state(a, "OFFERED"));
        }
        if a.offer_expire_time.is_some_and(|t| t <= now) {
            return Err(Error::precondition(
                "OFFER_EXPIRED",
                a.name(),
                "the offer was not answered in time",
            ));
        }
        if a.assignee.kind == AssigneeKind::Volunteer {
            // The rules again, as things stand now (the offer itself left out of the load).
            ops::check_volunteer(ctx, tx, &a.assignee.id, need, Purpose::Claim, Some(a), now)
                .await?;
        }
        let ea = a.version;
        a.state = AssignmentState::Accepted;
        a.respond_time = Some(now);
        a.offer_expire_time = None;
        a.update_time = now;
        a.version += 1;
        ops::save_assignment(tx, a, ea).await?;
        ops::touch_assignee(tx, &a.assignee).await?;
        let (expected, before) = (need.version, need.state);
        ops::shift(
            need,
            Some(AssignmentState::Offered),
            AssignmentState::Accepted,
            a.people,
            now,
        );
        let event = pb::AssignmentAccepted {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        Ok(vec![a.assignee.id.clone()])
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn decline(
    ctx: &Ctx,
    request: Request<pb::DeclineAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 0, 500, false);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let actor = principal.actor();
    let a = change!(ctx, &req.name, |tx, a, need, now| {
        check_actor(ctx, &principal, a, need, true, false).await?;
        if a.state != AssignmentState::Offered {
            return Err(wrong_state(a, "OFFERED"));
        }
        let (expected, before) =
            ops::end(tx, a, need, AssignmentState::Declined, &reason, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        let next = if ctx.config.auto_reoffer {
            ops::offer_best(
                ctx,
                tx,
                need,
                &ops::Making {
                    origin: AssignmentOrigin::Offer,
                    previous: Some(a.id.clone()),
                    note: "",
                    actor: "system:matching",
                    now,
                },
            )
            .await?
        } else {
            None
        };
        let event = pb::AssignmentDeclined {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
            reason: reason.clone(),
            next: next.as_ref().map(|n| n.name()).unwrap_or_default(),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        let mut touched = vec![a.assignee.id.clone()];
        touched.extend(next.map(|n| n.assignee.id));
        Ok(touched)
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn withdraw(
    ctx: &Ctx,
    request: Request<pb::WithdrawAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 500, false);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let actor = principal.actor();
    let a = change!(ctx, &req.name, |tx, a, need, now| {
        check_actor(ctx, &principal, a, need, true, false).await?;
        if !matches!(
            a.state,
            AssignmentState::Pending | AssignmentState::Accepted
        ) {
            return Err(wrong_state(a, "PENDING or ACCEPTED"));
        }
        let (expected, before) =
            ops::end(tx, a, need, AssignmentState::Withdrawn, &reason, now).await?;
        let event = pb::AssignmentWithdrawn {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
            reason: reason.clone(),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        Ok(vec![a.assignee.id.clone()])
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn reassign(
    ctx: &Ctx,
    request: Request<pb::ReassignAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(STAFF)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let to = validate::assignee(&mut v, "assignee", &req.assignee);
    let reason = validate::text(&mut v, "reason", &req.reason, 1, 500, false);
    let note = validate::text(&mut v, "note", &req.note, 0, 1_000, true);
    let Some(to) = to.filter(|_| v.is_empty()) else {
        return Err(Error::Invalid(v));
    };
    let id = assignment_id(&req.name)?;
    let actor = principal.actor();
    let (replacement, touched) = crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let (mut a, mut need) = load(&mut tx, &id, &req.name).await?;
        if !staff_over(&principal, &need.spec.place) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        if !a.state.is_open() {
            return Err(wrong_state(&a, "PENDING, OFFERED or ACCEPTED"));
        }
        if a.assignee == to {
            return Err(Error::precondition(
                "SAME_ASSIGNEE",
                a.name(),
                "it is already theirs",
            ));
        }
        let (expected, before) = ops::end(
            &mut tx,
            &mut a,
            &mut need,
            AssignmentState::Reassigned,
            &reason,
            now,
        )
        .await?;
        ops::save_need(&mut tx, &need, expected, before, &actor, now).await?;
        let replacement = match to.kind {
            AssigneeKind::Volunteer => {
                let mut r = ops::offer(
                    ctx,
                    &mut tx,
                    &mut need,
                    &to.id,
                    &ops::Making {
                        origin: AssignmentOrigin::Reassignment,
                        previous: Some(a.id.clone()),
                        note: &note,
                        actor: &actor,
                        now,
                    },
                )
                .await?;
                r.people = 1;
                r
            }
            _ => {
                if !need.spec.open_to(to.kind) {
                    return Err(Error::precondition(
                        "NOT_OPEN_TO_CLAIMANT",
                        need.name(),
                        "the need is not open to this kind of assignee",
                    ));
                }
                let (display, team, org) = check_body(ctx, &mut tx, &to, &need).await?;
                let mut r = ops::new_assignment(
                    &need,
                    to.clone(),
                    display,
                    AssignmentOrigin::Reassignment,
                    AssignmentState::Offered,
                    &actor,
                    now,
                );
                r.people = a.people;
                r.team = team;
                r.organisation = org;
                r.previous = Some(a.id.clone());
                r.note = note.clone();
                r.offer_expire_time =
                    Some(now + i64::from(ctx.config.offer_ttl_hours) * 3_600_000_000);
                store::assignments::insert(&mut tx, &r, "").await?;
                let (expected, before) = (need.version, need.state);
                ops::shift(&mut need, None, AssignmentState::Offered, r.people, now);
                let event = pb::AssignmentOffered {
                    assignment: Some(convert::assignment(&r)),
                    need: Some(convert::need(&need)),
                };
                ops::emit(&mut tx, &actor, &r.name(), &event, now).await?;
                ops::save_need(&mut tx, &need, expected, before, &actor, now).await?;
                r
            }
        };
        let event = pb::AssignmentReassigned {
            assignment: Some(convert::assignment(&a)),
            replacement: Some(convert::assignment(&replacement)),
            need: Some(convert::need(&need)),
            reason: reason.clone(),
        };
        ops::emit(&mut tx, &actor, &a.name(), &event, now).await?;
        tx.commit().await?;
        Ok((
            replacement.clone(),
            vec![a.assignee.id.clone(), replacement.assignee.id.clone()],
        ))
    })?;
    ctx.index.reload(touched).await?;
    Ok(convert::assignment(&replacement))
}

pub(super) async fn complete(
    ctx: &Ctx,
    request: Request<pb::CompleteAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    v.check(
        !(1..=100_000).contains(&req.minutes),
        "minutes",
        "must be 1 to 100000",
    );
    v.check(
        !(0..=1_000).contains(&req.participants),
        "participants",
        "must be 0 to 1000",
    );
    let note = validate::text(&mut v, "note", &req.note, 0, 1_000, true);
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let actor = principal.actor();
    let a = change!(ctx, &req.name, |tx, a, need, now| {
        check_actor(ctx, &principal, a, need, true, true).await?;
        if a.state != AssignmentState::Accepted {
            return Err(wrong_state(a, "ACCEPTED"));
        }
        let ea = a.version;
        a.state = AssignmentState::Done;
        a.complete_time = Some(now);
        a.minutes = req.minutes as u32;
        a.participants = if req.participants == 0 {
            a.people
        } else {
            req.participants as u32
        };
        a.completion_note = note.clone();
        a.update_time = now;
        a.version += 1;
        ops::save_assignment(tx, a, ea).await?;
        ops::touch_assignee(tx, &a.assignee).await?;
        let (expected, before) = (need.version, need.state);
        ops::shift(
            need,
            Some(AssignmentState::Accepted),
            AssignmentState::Done,
            a.people,
            now,
        );
        let event = pb::AssignmentCompleted {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        ops::save_need(tx, need, expected, before, &actor, now).await?;
        Ok(vec![a.assignee.id.clone()])
    });
    Ok(convert::assignment(&a))
}

pub(super) async fn rate(
    ctx: &Ctx,
    request: Request<pb::RateAssignmentRequest>,
) -> Result<pb::Assignment, Error> {
    let principal = caller(&request)?.require(RATERS)?.clone();
    let req = request.into_inner();
    let mut v = FieldViolations::new();
    let satisfaction = Satisfaction::from_wire(req.satisfaction);
    v.check(
        satisfaction.is_none(),
        "satisfaction",
        "required: 1 (very dissatisfied) to 5 (very satisfied)",
    );
    let comment = validate::text(&mut v, "comment", &req.comment, 0, 1_000, true);
    let channel = match req.channel {
        0 => Some(RatingChannel::CallBack),
        c => RatingChannel::from_wire(c),
    };
    v.check(channel.is_none(), "channel", "unknown channel");
    let (Some(satisfaction), Some(channel)) = (satisfaction, channel) else {
        return Err(Error::Invalid(v));
    };
    if !v.is_empty() {
        return Err(Error::Invalid(v));
    }
    let actor = principal.actor();
    let a = change!(ctx, &req.name, |tx, a, need, now| {
        if !principal.covers_place(need.spec.place.codes()) {
            return Err(Error::Denied(
                "OUT_OF_SCOPE",
                "the need is outside your place scope".into(),
            ));
        }
        if a.state != AssignmentState::Done {
            return Err(wrong_state(a, "DONE"));
        }
        let replaced = a.rating.is_some();
        let ea = a.version;
        a.rating = Some(Rating {
            satisfaction,
            comment: comment.clone(),
            channel,
            rated_by: actor.clone(),
            rate_time: now,
        });
        a.update_time = now;
        a.version += 1;
        ops::save_assignment(tx, a, ea).await?;
        let event = pb::AssignmentRated {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
            replaced,
        };
        ops::emit(tx, &actor, &a.name(), &event, now).await?;
        Ok(vec![])
    });
    Ok(convert::assignment(&a))
}
