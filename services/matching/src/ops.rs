//! The life of needs and assignments: offers, claims, answers, completion, ratings,
//! cancellations — each a change to the assignment, the need's counts, the assignee's load
//! and the events that tell of them, all in one transaction. Shared by the gRPC handlers,
//! the offer-expiry sweep and the consumer of routing's feed.

use std::{collections::HashSet, sync::Arc};

use prost::Name;

use crate::{
    calendar::Calendar,
    config::MatchingConfig,
    domain::{
        Assignee, AssigneeKind, Assignment, AssignmentOrigin, AssignmentState, Need, NeedState,
        Volunteer,
    },
    error::Error,
    grpc::convert,
    index::{Index, locate},
    rank::{self, Exclusion, Fit, NeedView, Point, Purpose, Rules},
    store,
};
use minqing_intake::places::Gazetteer;
use minqing_kit::{
    db::{Db, Tx},
    feed::{self, EventMeta},
    time::{Clock, Micros},
};
use minqing_proto::minqing::matching::v1 as pb;

/// What every operation shares.
#[derive(Debug)]
pub struct Ctx {
    /// The database.
    pub db: Db,
    /// The volunteer pool.
    pub index: Arc<Index>,
    /// Places.
    pub gazetteer: Arc<Gazetteer>,
    /// Settings.
    pub config: Arc<MatchingConfig>,
    /// Local calendar.
    pub calendar: Calendar,
    /// Clock.
    pub clock: Clock,
    /// Where reads of personal data are recorded.
    pub audit: minqing_kit::audit::AuditLog,
}

impl Ctx {
    /// The rules at `now`.
    pub fn rules(&self, now: Micros) -> Rules {
        Rules {
            weights: self.config.weights,
            max_distance_m: f64::from(self.config.max_distance_meters),
            calendar: self.calendar,
            now,
        }
    }

    /// Where a need's work is.
    pub fn need_point(&self, need: &Need) -> Option<Point> {
        locate(&self.gazetteer, &need.spec.place, need.spec.location)
    }

    /// The pool's view of a need.
    pub fn view<'a>(&self, need: &'a Need, asked: &'a HashSet<String>) -> NeedView<'a> {
        NeedView {
            spec: &need.spec,
            point: self.need_point(need),
            asked,
            week: self.calendar.week(need.spec.start),
        }
    }
}

/// Appends an event in `tx`.
pub async fn emit<M: prost::Message + Name>(
    tx: &mut Tx,
    actor: &str,
    subject: &str,
    event: &M,
    now: Micros,
) -> Result<(), Error> {
    feed::append(tx, &EventMeta::current(actor), subject, event, now).await?;
    Ok(())
}

/// The words for why a volunteer may not take a need.
pub fn describe(x: Exclusion) -> &'static str {
    match x {
        Exclusion::NotActive => {
            "the volunteer is paused or retired, or has not consented to offers"
        }
        Exclusion::Skill => "the volunteer lacks a skill the need requires",
        Exclusion::Credential => {
            "the volunteer lacks a credential the need requires, or it expires before the window ends"
        }
        Exclusion::Language => "the volunteer speaks none of the need's languages",
        Exclusion::Availability => "the volunteer is not free long enough within the need's window",
        Exclusion::Capacity => {
            "the volunteer has no room: too many open tasks or minutes that week"
        }
        Exclusion::Distance => "the volunteer lives too far from the need, outside its community",
        Exclusion::AlreadyAsked => "the volunteer was already asked for this need",
        Exclusion::PartyMembersOnly => "the need is for party members only",
    }
}

/// `(pending, accepted, done)` people an assignment in `state` counts towards its need.
fn contribution(state: AssignmentState, people: u32) -> (u32, u32, u32) {
    match state {
        AssignmentState::Pending | AssignmentState::Offered => (people, 0, 0),
        AssignmentState::Accepted => (0, people, 0),
        AssignmentState::Done => (0, people, people),
        _ => (0, 0, 0),
    }
}

/// Moves `people` of `need`'s counts from `from` to `to`, and settles its state.
pub fn shift(
    need: &mut Need,
    from: Option<AssignmentState>,
    to: AssignmentState,
    people: u32,
    now: Micros,
) {
    if let Some(from) = from {
        let (p, a, d) = contribution(from, people);
        need.people_pending = need.people_pending.saturating_sub(p);
        need.people_accepted = need.people_accepted.saturating_sub(a);
        need.people_done = need.people_done.saturating_sub(d);
    }
    let (p, a, d) = contribution(to, people);
    need.people_pending += p;
    need.people_accepted += a;
    need.people_done += d;
    need.state = need.settled_state();
    need.update_time = now;
    need.version += 1;
}

/// Writes a need changed in memory (at `expected` in the database) and tells of a state change.
pub async fn save_need(
    tx: &mut Tx,
    need: &Need,
    expected: i64,
    before: NeedState,
    actor: &str,
    now: Micros,
) -> Result<(), Error> {
    if !store::needs::update(tx, need, expected).await? {
        return Err(Error::Conflict);
    }
    if need.state != before {
        let event = pb::NeedStateChanged {
            need: Some(convert::need(need)),
            previous_state: before.wire(),
        };
        emit(tx, actor, &need.name(), &event, now).await?;
    }
    Ok(())
}

/// Writes an assignment changed in memory (at `expected` in the database).
pub async fn save_assignment(tx: &mut Tx, a: &Assignment, expected: i64) -> Result<(), Error> {
    if store::assignments::update(tx, a, expected).await? {
        Ok(())
    } else {
        Err(Error::Conflict)
    }
}

/// Bumps a volunteer assignee's version (their load changed), refusing a concurrent change.
pub async fn touch_assignee(tx: &mut Tx, assignee: &Assignee) -> Result<(), Error> {
    if assignee.kind != AssigneeKind::Volunteer {
        return Ok(());
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT version FROM volunteers WHERE id = $1")
        .bind(&assignee.id)
        .fetch_optional(tx.conn())
        .await
        .map_err(minqing_kit::error::StoreError::from)?;
    match version {
        Some(v) if store::volunteers::bump(tx, &assignee.id, v).await? => Ok(()),
        Some(_) => Err(Error::Conflict),
        None => Ok(()),
    }
}

/// Checks a volunteer against a need with what the transaction sees now. `holding` is an
/// open assignment of theirs for this need to leave out of their load (an acceptance).
pub async fn check_volunteer(
    ctx: &Ctx,
    tx: &mut Tx,
    volunteer_id: &str,
    need: &Need,
    purpose: Purpose,
    holding: Option<&Assignment>,
    now: Micros,
) -> Result<(Volunteer, Fit, Vec<crate::domain::Reason>), Error> {
    let name = format!("volunteers/{volunteer_id}");
    let v = store::volunteers::get(tx.conn(), volunteer_id)
        .await?
        .ok_or_else(|| Error::NotFound("volunteer", name.clone()))?;
    let mut load = store::volunteers::load(tx.conn(), volunteer_id, &ctx.calendar, now).await?;
    if let Some(a) = holding {
        load.open_tasks = load.open_tasks.saturating_sub(1);
        let week = ctx.calendar.week(a.start);
        if let Some(slot) = load.weeks.iter_mut().find(|(w, _)| *w == week) {
            slot.1 = slot.1.saturating_sub(a.effort_minutes);
        }
    }
    let asked: HashSet<String> = match (purpose, holding) {
        (_, Some(_)) => HashSet::new(),
        (Purpose::Offer, None) => store::needs::asked(tx.conn(), &need.id).await?,
        (Purpose::Claim, None) => store::assignments::open_for_need(tx.conn(), &need.id)
            .await?
            .into_iter()
            .filter(|a| a.assignee.kind == AssigneeKind::Volunteer)
            .map(|a| a.assignee.id)
            .collect(),
    };
    let entry = ctx.index.entry_for(&v, load);
    let view = ctx.view(need, &asked);
    let rules = ctx.rules(now);
    match rank::evaluate(&entry, &view, &rules, purpose) {
        Ok(fit) => {
            let reasons = rank::explain(&entry, &view, &fit, &rules);
            Ok((v, fit, reasons))
        }
        Err(x) => Err(Error::precondition("NOT_ELIGIBLE", name, describe(x))),
    }
}

/// A new assignment of `need` (its snapshot fields filled in).
pub fn new_assignment(
    need: &Need,
    assignee: Assignee,
    display_name: String,
    origin: AssignmentOrigin,
    state: AssignmentState,
    actor: &str,
    now: Micros,
) -> Assignment {
    Assignment {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: String::new(),
        need_id: need.id.clone(),
        case: need.case.clone(),
        place: need.spec.place.clone(),
        need_title: need.spec.title.clone(),
        start: need.spec.start,
        end: need.spec.end,
        assignee,
        assignee_display_name: display_name,
        team: None,
        organisation: None,
        origin,
        state,
        people: 1,
        effort_minutes: need.spec.effort_minutes,
        score: 0.0,
        reasons: Vec::new(),
        previous: None,
        note: String::new(),
        created_by: actor.to_string(),
        offer_expire_time: None,
        create_time: now,
        respond_time: None,
        complete_time: None,
        minutes: 0,
        participants: 0,
        completion_note: String::new(),
        rating: None,
        end_reason: String::new(),
        update_time: now,
        version: 1,
    }
}

/// How an offer comes about.
#[derive(Debug, Clone)]
pub struct Making<'a> {
    /// Staff, plan or reassignment.
    pub origin: AssignmentOrigin,
    /// The assignment it replaces.
    pub previous: Option<String>,
    /// A note for the volunteer.
    pub note: &'a str,
    /// Who makes it.
    pub actor: &'a str,
    /// When.
    pub now: Micros,
}

/// Offers `need` (in memory, at its database version) to a volunteer after checking them.
pub async fn offer(
    ctx: &Ctx,
    tx: &mut Tx,
    need: &mut Need,
    volunteer_id: &str,
    how: &Making<'_>,
) -> Result<Assignment, Error> {
    let Making {
        origin,
        ref previous,
        note,
        actor,
        now,
    } = *how;
    let previous = previous.clone();
    if need.state != NeedState::Open || need.places_left() == 0 {
        return Err(Error::precondition(
            "NEED_NOT_OPEN",
            need.name(),
            "the need has no open places",
        ));
    }
    if !need.spec.open_to(AssigneeKind::Volunteer) {
        return Err(Error::precondition(
            "NOT_OPEN_TO_VOLUNTEERS",
            need.name(),
            "the need is not open to individual volunteers",
        ));
    }
    let (v, fit, reasons) =
        check_volunteer(ctx, tx, volunteer_id, need, Purpose::Offer, None, now).await?;
    let mut a = new_assignment(
        need,
        Assignee {
            kind: AssigneeKind::Volunteer,
            id: v.id.clone(),
        },
        v.public_name(),
        origin,
        AssignmentState::Offered,
        actor,
        now,
    );
    a.organisation = v.profile.organisation.clone();
    a.score = fit.score;
    a.reasons = reasons;
    a.previous = previous;
    a.note = note.to_string();
    a.offer_expire_time = Some(now + i64::from(ctx.config.offer_ttl_hours) * 3_600_000_000);
    store::assignments::insert(tx, &a, "").await?;
    if !store::volunteers::bump(tx, &v.id, v.version).await? {
        return Err(Error::Conflict);
    }
    let (expected, before) = (need.version, need.state);
    shift(need, None, AssignmentState::Offered, 1, now);
    let event = pb::AssignmentOffered {
        assignment: Some(convert::assignment(&a)),
        need: Some(convert::need(need)),
    };
    emit(tx, actor, &a.name(), &event, now).await?;
    save_need(tx, need, expected, before, actor, now).await?;
    Ok(a)
}

/// Offers `need` to the best candidates the pool knows, trying up to five until one passes
/// the checks in `tx`; `None` when nobody does.
pub async fn offer_best(
    ctx: &Ctx,
    tx: &mut Tx,
    need: &mut Need,
    how: &Making<'_>,
) -> Result<Option<Assignment>, Error> {
    let now = how.now;
    let asked = store::needs::asked(tx.conn(), &need.id).await?;
    let rules = ctx.rules(now);
    let ids: Vec<String> = ctx.index.read(|pool| {
        let view = ctx.view(need, &asked);
        pool.rank(&view, &rules, 5)
            .top
            .iter()
            .filter_map(|(slot, _)| pool.entry(*slot).map(|e| e.id.clone()))
            .collect()
    });
    for id in ids {
        match offer(ctx, tx, need, &id, how).await {
            Ok(a) => return Ok(Some(a)),
            Err(Error::Precondition(..) | Error::NotFound(..)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Ends an open assignment (declined, expired, withdrawn, rejected, cancelled, reassigned):
/// frees its place and the assignee's capacity. The caller emits the event.
pub async fn end(
    tx: &mut Tx,
    a: &mut Assignment,
    need: &mut Need,
    to: AssignmentState,
    reason: &str,
    now: Micros,
) -> Result<(i64, NeedState), Error> {
    let (expected_a, from) = (a.version, a.state);
    a.state = to;
    a.end_reason = reason.to_string();
    if matches!(to, AssignmentState::Declined | AssignmentState::Rejected) {
        a.respond_time = Some(now);
    }
    a.update_time = now;
    a.version += 1;
    save_assignment(tx, a, expected_a).await?;
    touch_assignee(tx, &a.assignee).await?;
    let (expected, before) = (need.version, need.state);
    shift(need, Some(from), to, a.people, now);
    Ok((expected, before))
}

/// Expires one overdue offer and re-offers its place; the ids of volunteers touched.
pub async fn expire(ctx: &Ctx, id: &str) -> Result<Vec<String>, Error> {
    crate::retry!({
        let now = ctx.clock.now_micros();
        let mut tx = ctx.db.begin().await?;
        let Some(mut a) = store::assignments::get(tx.conn(), id).await? else {
            return Ok(vec![]);
        };
        if a.state != AssignmentState::Offered || a.offer_expire_time.is_none_or(|t| t > now) {
            return Ok(vec![]);
        }
        let mut need = store::needs::get(tx.conn(), &a.need_id)
            .await?
            .ok_or_else(|| Error::NotFound("need", format!("needs/{}", a.need_id)))?;
        let actor = "system:matching";
        let (expected, before) = end(
            &mut tx,
            &mut a,
            &mut need,
            AssignmentState::Expired,
            "not answered in time",
            now,
        )
        .await?;
        save_need(&mut tx, &need, expected, before, actor, now).await?;
        let next = if ctx.config.auto_reoffer {
            offer_best(
                ctx,
                &mut tx,
                &mut need,
                &Making {
                    origin: AssignmentOrigin::Offer,
                    previous: Some(a.id.clone()),
                    note: "",
                    actor,
                    now,
                },
            )
            .await?
        } else {
            None
        };
        let event = pb::AssignmentExpired {
            assignment: Some(convert::assignment(&a)),
            need: Some(convert::need(&need)),
            next: next.as_ref().map(|n| n.name()).unwrap_or_default(),
        };
        emit(&mut tx, actor, &a.name(), &event, now).await?;
        tx.commit().await?;
        let mut touched = vec![a.assignee.id.clone()];
        touched.extend(next.map(|n| n.assignee.id));
        Ok(touched)
    })
}

/// Looks for overdue offers every `sweep_interval_seconds` until `shutdown`.
pub async fn sweep(ctx: Arc<Ctx>, shutdown: tokio_util::sync::CancellationToken) {
    let every = std::time::Duration::from_secs(ctx.config.sweep_interval_seconds);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = sweep_once(&ctx).await {
            tracing::warn!(error = %err, "offer expiry sweep failed");
        }
    }
}

/// Expires every overdue offer now; how many.
pub async fn sweep_once(ctx: &Ctx) -> Result<usize, Error> {
    let ids =
        store::assignments::expired_offers(ctx.db.pool(), ctx.clock.now_micros(), 500).await?;
    let mut touched = Vec::new();
    for id in &ids {
        touched.extend(expire(ctx, id).await?);
    }
    ctx.index.reload(touched).await?;
    Ok(ids.len())
}

/// Calls `need` off (in memory, at its database version): its open assignments are
/// cancelled with `assignment_reason`; the ids of volunteers touched.
pub async fn cancel_need(
    tx: &mut Tx,
    need: &mut Need,
    reason: &str,
    assignment_reason: &str,
    actor: &str,
    now: Micros,
) -> Result<Vec<String>, Error> {
    let expected = need.version;
    let mut ended = Vec::new();
    for mut a in store::assignments::open_for_need(tx.conn(), &need.id).await? {
        let ea = a.version;
        a.state = AssignmentState::Cancelled;
        a.end_reason = assignment_reason.to_string();
        a.update_time = now;
        a.version += 1;
        save_assignment(tx, &a, ea).await?;
        touch_assignee(tx, &a.assignee).await?;
        ended.push(a);
    }
    need.state = NeedState::Cancelled;
    need.people_pending = 0;
    need.people_accepted = need.people_done;
    need.cancel_reason = reason.to_string();
    need.update_time = now;
    need.version += 1;
    if !store::needs::update(tx, need, expected).await? {
        return Err(Error::Conflict);
    }
    for a in &ended {
        let event = pb::AssignmentCancelled {
            assignment: Some(convert::assignment(a)),
            need: Some(convert::need(need)),
            reason: a.end_reason.clone(),
        };
        emit(tx, actor, &a.name(), &event, now).await?;
    }
    let event = pb::NeedCancelled {
        need: Some(convert::need(need)),
        reason: reason.to_string(),
        cancelled_assignments: ended.iter().map(Assignment::name).collect(),
    };
    emit(tx, actor, &need.name(), &event, now).await?;
    Ok(ended
        .into_iter()
        .filter(|a| a.assignee.kind == AssigneeKind::Volunteer)
        .map(|a| a.assignee.id)
        .collect())
}
