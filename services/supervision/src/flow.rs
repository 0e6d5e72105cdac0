//! Clocks from the feeds: consumers of intake's and routing's events start, pause, resume,
//! reschedule and close each case's clock (matching's add volunteers' work to its history), exactly once (the consumer's cursor commits with
//! the clocks, their timers and supervision's own events).

use std::sync::Arc;

use prost::{Message, Name};

use crate::{
    app::Ctx,
    clock::{self, Acceptance, Clock, Close, Pause, Place, State},
    error::Error,
    grpc::convert,
    replies, store,
};
use minqing_kit::{
    db::Tx,
    feed::{Apply, EventMeta, EventRow},
    time::{Micros, from_timestamp, to_timestamp},
};
use minqing_proto::minqing::{
    events::v1 as events_pb, intake::v1 as ipb, matching::v1 as mpb, routing::v1 as rpb,
    supervision::v1 as pb, r#type::v1 as tpb,
};

/// What a change leaves to do in its transaction: events to append, and timers to queue.
#[derive(Debug, Default)]
pub struct Pending {
    /// Supervision's events.
    pub rows: Vec<EventRow>,
    /// `(fire_time, id)` of timers scheduled.
    pub hints: Vec<(Micros, i64)>,
}

/// Queues an event about the clock's case.
pub fn event<M: Message + Name>(
    out: &mut Pending,
    meta: &EventMeta,
    clock: &Clock,
    message: &M,
    now: Micros,
) {
    out.rows.push(EventRow::new(
        meta,
        &format!("cases/{}", clock.case_id),
        message,
        now,
    ));
}

/// Saves a changed clock and re-derives its timers. A clock changed underneath (by the timer
/// worker or a calendar's re-plan) is a conflict: the whole batch is tried again.
///
/// The clock is marked planned with its calendar's version in force only when its deadline is
/// the one that calendar gives: a deadline counted on a calendar edited since (read before
/// the edit, saved after it) keeps the older mark, so the re-plan still finds it.
pub async fn save(
    ctx: &Ctx,
    tx: &mut Tx,
    clock: &mut Clock,
    out: &mut Pending,
) -> Result<(), Error> {
    let cal = ctx
        .calendars
        .for_district(&clock.place.district, &ctx.config.default_city);
    if clock.due_agrees(&cal.calendar) {
        clock.calendar_version = cal.version;
    }
    if !store::clocks::save(tx, clock).await? {
        return Err(Error::Conflict);
    }
    let timers = clock::timers(clock, &cal.calendar, &ctx.policy);
    store::clocks::set_timers(tx, &clock.case_id, &timers).await?;
    out.hints.extend(timers.iter().map(|t| (t.fire, t.id)));
    Ok(())
}

/// Appends the queued events.
pub async fn finish(tx: &mut Tx, out: &mut Pending) -> Result<(), Error> {
    let rows = std::mem::take(&mut out.rows);
    if !rows.is_empty() {
        minqing_kit::feed::append_rows(tx, rows).await?;
    }
    Ok(())
}

/// A ladder level's name, for people.
pub fn level_name(level: i32) -> &'static str {
    match level {
        1 => "district",
        2 => "street",
        3 => "community",
        4 => "grid",
        5 => "building",
        _ => "city",
    }
}

/// The acceptance window ran out: the unit's superior level is told.
pub fn acceptance_overdue(clock: &mut Clock, meta: &EventMeta, out: &mut Pending, now: Micros) {
    let level = clock.escalation_level(1);
    let to_place = clock.place.at(level);
    let Some(a) = clock.acceptance.as_mut() else {
        return;
    };
    a.overdue = true;
    let window = convert::acceptance(a);
    clock.note(
        now,
        &pb::AcceptanceOverdue::full_name(),
        format!(
            "{} did not accept in time; the {} ({to_place}) is told",
            window.unit,
            level_name(level)
        ),
    );
    let e = pb::AcceptanceOverdue {
        clock: Some(convert::clock(clock, false)),
        acceptance: Some(window),
        to_level: level,
        to_place,
    };
    event(out, meta, clock, &e, now);
}

fn case_id(name: &str) -> Option<&str> {
    name.strip_prefix("cases/").filter(|id| !id.is_empty())
}

fn place_of(p: Option<&tpb::Place>) -> Place {
    let p = p.cloned().unwrap_or_default();
    Place {
        district: p.district,
        street: p.street,
        community: p.community,
        grid: p.grid,
        building: p.building,
    }
}

/// The consumer of routing's feed.
pub const FROM_ROUTING: &str = "supervision-from-routing";
/// The consumer of intake's feed.
pub const FROM_INTAKE: &str = "supervision-from-intake";

/// Routing's event kinds followed.
pub fn routing_kinds() -> Vec<String> {
    vec![
        rpb::CaseRouted::full_name(),
        rpb::AssignmentAccepted::full_name(),
        rpb::AssignmentAcceptanceOverdue::full_name(),
        rpb::AssignmentResolved::full_name(),
        rpb::SupplementRequested::full_name(),
        rpb::CaseResumed::full_name(),
        rpb::CaseEscalated::full_name(),
        rpb::EscalationApproved::full_name(),
        rpb::EscalationRefused::full_name(),
        rpb::CaseReferred::full_name(),
        rpb::RoutingCancelled::full_name(),
        rpb::UnitChanged::full_name(),
    ]
}

/// Intake's event kinds followed.
pub fn intake_kinds() -> Vec<String> {
    vec![
        ipb::CaseSubmitted::full_name(),
        ipb::CaseSupplemented::full_name(),
        ipb::CaseWithdrawn::full_name(),
        ipb::CaseClustered::full_name(),
        ipb::CaseUnclustered::full_name(),
    ]
}

/// The consumer of matching's feed.
pub const FROM_MATCHING: &str = "supervision-from-matching";

/// Matching's event kinds followed: volunteers taking up and doing work on a case.
pub fn matching_kinds() -> Vec<String> {
    vec![
        mpb::AssignmentAccepted::full_name(),
        mpb::AssignmentCompleted::full_name(),
    ]
}

/// Applies matching's events: work by volunteers on a case shows in its clock's history.
#[derive(Debug, Clone)]
pub struct FromMatching(pub Arc<Ctx>);

impl Apply for FromMatching {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let ctx = &self.0;
        let mut out = Pending::default();
        for e in events {
            let Some(payload) = &e.payload else { continue };
            let now = event_time(ctx, e);
            let (assignment, summary) = if e.kind == mpb::AssignmentAccepted::full_name() {
                let m = mpb::AssignmentAccepted::decode(payload.value.as_slice())?;
                let a = m.assignment.unwrap_or_default();
                let who = a.assignee_display_name.clone();
                (a, format!("volunteer {who} took it up"))
            } else if e.kind == mpb::AssignmentCompleted::full_name() {
                let m = mpb::AssignmentCompleted::decode(payload.value.as_slice())?;
                let a = m.assignment.unwrap_or_default();
                let who = a.assignee_display_name.clone();
                (a, format!("served by volunteer {who}"))
            } else {
                continue;
            };
            let Some(id) = case_id(&assignment.case) else {
                continue;
            };
            let Some(mut clock) = store::clocks::get(tx.conn(), id).await? else {
                continue;
            };
            clock.note(now, &e.kind, summary);
            save(ctx, tx, &mut clock, &mut out).await?;
        }
        finish(tx, &mut out).await?;
        ctx.timers.push(out.hints);
        Ok(())
    }
}

/// Applies routing's events.
#[derive(Debug, Clone)]
pub struct FromRouting(pub Arc<Ctx>);

/// Applies intake's events.
#[derive(Debug, Clone)]
pub struct FromIntake(pub Arc<Ctx>);

fn event_time(ctx: &Ctx, e: &events_pb::Event) -> Micros {
    e.create_time
        .as_ref()
        .and_then(from_timestamp)
        .unwrap_or_else(|| ctx.clock.now_micros())
}

impl Apply for FromRouting {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let ctx = &self.0;
        let mut out = Pending::default();
        for e in events {
            let Some(payload) = &e.payload else { continue };
            let now = event_time(ctx, e);
            let meta = EventMeta {
                actor: format!("system:{FROM_ROUTING}"),
                traceparent: e.traceparent.clone(),
                tracestate: e.tracestate.clone(),
            };
            let step = Step {
                ctx,
                meta: &meta,
                now,
                kind: &e.kind,
            };
            routing_event(&step, tx, &mut out, &payload.value).await?;
        }
        finish(tx, &mut out).await?;
        ctx.timers.push(out.hints);
        Ok(())
    }
}

impl Apply for FromIntake {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let ctx = &self.0;
        let mut out = Pending::default();
        for e in events {
            let Some(payload) = &e.payload else { continue };
            let now = event_time(ctx, e);
            let meta = EventMeta {
                actor: format!("system:{FROM_INTAKE}"),
                traceparent: e.traceparent.clone(),
                tracestate: e.tracestate.clone(),
            };
            let step = Step {
                ctx,
                meta: &meta,
                now,
                kind: &e.kind,
            };
            intake_event(&step, tx, &mut out, &payload.value).await?;
        }
        finish(tx, &mut out).await?;
        ctx.timers.push(out.hints);
        Ok(())
    }
}

/// One event being applied.
pub(crate) struct Step<'a> {
    pub ctx: &'a Ctx,
    pub meta: &'a EventMeta,
    pub now: Micros,
    pub kind: &'a str,
}

impl Step<'_> {
    fn is<M: Name>(&self) -> bool {
        self.kind == M::full_name()
    }
}

async fn load(tx: &mut Tx, case: &str, now: Micros) -> Result<Option<Clock>, Error> {
    let Some(id) = case_id(case) else {
        return Ok(None);
    };
    Ok(Some(
        store::clocks::get(tx.conn(), id)
            .await?
            .unwrap_or_else(|| Clock::new(id, now)),
    ))
}

fn snapshot(c: &Clock) -> Option<pb::CaseClock> {
    Some(convert::clock(c, false))
}

/// Emits the events for a clock that just started, paused, resumed, moved its deadline or
/// closed, judging from where it stood before (a new clock closed at once — done on the
/// spot — gets both its start and its close).
fn emit_moved(s: &Step<'_>, out: &mut Pending, clock: &mut Clock, before: &Clock, why: &str) {
    let new = before.version == 0;
    let closed_now = clock.state == State::Closed && before.state != State::Closed;
    let mut kinds = Vec::new();
    if new {
        kinds.push(pb::ClockStarted::full_name());
    } else if clock.state == State::Paused && before.state != State::Paused {
        kinds.push(pb::ClockPaused::full_name());
    } else if clock.state == State::Running && before.state == State::Paused {
        kinds.push(pb::ClockResumed::full_name());
    } else if !closed_now && clock.due != before.due {
        kinds.push(pb::ClockRescheduled::full_name());
    }
    if closed_now {
        kinds.push(pb::ClockClosed::full_name());
    }
    if kinds.is_empty() {
        // Nothing a reader of the feed would notice changed.
        clock.note(s.now, s.kind, why);
        return;
    }
    let summary = match (clock.state, clock.due) {
        (State::Running, Some(due)) => format!(
            "{why}: due {}",
            minqing_kit::time::from_micros(due).to_rfc3339()
        ),
        (State::Paused, _) => format!("{why}: paused"),
        (State::Closed, _) => format!("{why}: closed"),
        _ => why.to_string(),
    };
    for kind in kinds {
        clock.note(s.now, &kind, summary.clone());
        let c = snapshot(clock);
        if kind == pb::ClockStarted::full_name() {
            event(out, s.meta, clock, &pb::ClockStarted { clock: c }, s.now);
        } else if kind == pb::ClockPaused::full_name() {
            event(out, s.meta, clock, &pb::ClockPaused { clock: c }, s.now);
        } else if kind == pb::ClockResumed::full_name() {
            event(out, s.meta, clock, &pb::ClockResumed { clock: c }, s.now);
        } else if kind == pb::ClockClosed::full_name() {
            event(out, s.meta, clock, &pb::ClockClosed { clock: c }, s.now);
        } else {
            let e = pb::ClockRescheduled {
                clock: c,
                previous_due_time: before.due.map(to_timestamp),
                ..Default::default()
            };
            event(out, s.meta, clock, &e, s.now);
        }
    }
}

fn calendar(s: &Step<'_>, clock: &mut Clock) -> Arc<crate::store::calendars::Stored> {
    let cal = s
        .ctx
        .calendars
        .for_district(&clock.place.district, &s.ctx.config.default_city);
    clock.city = cal.calendar.city.clone();
    cal
}

fn start_of(route: Option<&rpb::CaseRoute>, now: Micros) -> Micros {
    route
        .and_then(|r| r.clock_start_time.as_ref())
        .and_then(from_timestamp)
        .unwrap_or(now)
}

async fn routing_event(
    s: &Step<'_>,
    tx: &mut Tx,
    out: &mut Pending,
    bytes: &[u8],
) -> Result<(), Error> {
    let now = s.now;
    let decode_err = |e: prost::DecodeError| Error::Decode(e.to_string());
    if s.is::<rpb::UnitChanged>() {
        let u = rpb::UnitChanged::decode(bytes).map_err(decode_err)?;
        if let Some(unit) = u.unit {
            store::clocks::set_unit_level(tx, &unit.name, unit.level).await?;
        }
        return Ok(());
    }
    if s.is::<rpb::CaseRouted>() {
        let r = rpb::CaseRouted::decode(bytes).map_err(decode_err)?;
        let route = r.route.as_ref();
        let case = if r.case.is_empty() {
            route.map(|r| r.case.clone()).unwrap_or_default()
        } else {
            r.case.clone()
        };
        let Some(mut clock) = load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            clock.note(
                now,
                s.kind,
                "routed again after closing; the clock stays closed",
            );
            return save(s.ctx, tx, &mut clock, out).await;
        }
        let before = clock.clone();
        let facts = route.and_then(|r| r.facts.as_ref());
        clock.place = place_of(facts.and_then(|f| f.place.as_ref()));
        clock.category = if r.category.is_empty() {
            facts.map(|f| f.category.clone()).unwrap_or_default()
        } else {
            r.category.clone()
        };
        clock.unit = r.unit.clone();
        clock.unit_level = store::clocks::unit_level(tx, &r.unit).await?;
        clock.disposition = r.disposition;
        let cal = calendar(s, &mut clock);
        clock.acceptance = r.assignment.as_ref().and_then(|a| {
            let by = a.accept_by.as_ref().and_then(from_timestamp)?;
            (a.state == rpb::AssignmentState::Pending as i32).then(|| Acceptance {
                assignment: a.name.clone(),
                unit: a.unit.clone(),
                accept_by: by,
                accept_time: None,
                overdue: false,
                warned: false,
            })
        });
        let days = if r.time_limit_working_days > 0 {
            r.time_limit_working_days
        } else {
            route.map_or(0, |r| r.time_limit_working_days)
        };
        let why = format!("routed to {}", r.unit);
        match tpb::Disposition::try_from(r.disposition).unwrap_or_default() {
            tpb::Disposition::Committed => {
                clock.run_days(&cal.calendar, start_of(route, now), days);
            }
            tpb::Disposition::Supplement => {
                clock.limit_days = days;
                clock.pause(Pause::Papers, now);
            }
            tpb::Disposition::Escalated => {
                clock.limit_days = days;
                clock.pause(Pause::Approval, now);
            }
            tpb::Disposition::Immediate => {
                clock.close(Close::Immediate, now);
            }
            tpb::Disposition::Emergency => {
                let minutes = i32::try_from(s.ctx.config.emergency_minutes).unwrap_or(60);
                clock.run_minutes(start_of(route, now), minutes);
            }
            // The referral itself (CaseReferred, in the same transaction) closes the clock.
            tpb::Disposition::Referred | tpb::Disposition::Unspecified => {
                clock.limit_days = days;
            }
        }
        emit_moved(s, out, &mut clock, &before, &why);
        save(s.ctx, tx, &mut clock, out).await?;
        if r.disposition == tpb::Disposition::Supplement as i32 {
            let docs = route
                .map(|r| r.missing_documents.join(", "))
                .unwrap_or_default();
            replies::on_answer(s, tx, out, &clock, replies::Trigger::NeedsPapers, &docs).await?;
        }
        return Ok(());
    }
    if s.is::<rpb::AssignmentAccepted>() {
        let a = rpb::AssignmentAccepted::decode(bytes).map_err(decode_err)?;
        let assignment = a.assignment.unwrap_or_default();
        let Some(mut clock) = load(tx, &assignment.case, now).await? else {
            return Ok(());
        };
        if clock.version == 0 {
            return Ok(());
        }
        if let Some(w) = clock.acceptance.as_mut()
            && w.assignment == assignment.name
        {
            w.accept_time = Some(now);
            clock.note(
                now,
                s.kind,
                format!("{} accepted the case", assignment.unit),
            );
            save(s.ctx, tx, &mut clock, out).await?;
        }
        return Ok(());
    }
    if s.is::<rpb::AssignmentAcceptanceOverdue>() {
        let a = rpb::AssignmentAcceptanceOverdue::decode(bytes).map_err(decode_err)?;
        let assignment = a.assignment.unwrap_or_default();
        let Some(mut clock) = load(tx, &assignment.case, now).await? else {
            return Ok(());
        };
        // Routing noticed first: the window's overdue notice goes out once, here or by the
        // timer, whichever comes first.
        if clock.acceptance_pending()
            && clock
                .acceptance
                .as_ref()
                .is_some_and(|w| w.assignment == assignment.name)
        {
            acceptance_overdue(&mut clock, s.meta, out, now);
            save(s.ctx, tx, &mut clock, out).await?;
        }
        return Ok(());
    }
    if s.is::<rpb::AssignmentResolved>() {
        let r = rpb::AssignmentResolved::decode(bytes).map_err(decode_err)?;
        let case = r
            .assignment
            .as_ref()
            .map(|a| a.case.clone())
            .unwrap_or_default();
        let Some(mut clock) = load(tx, &case, now).await? else {
            return Ok(());
        };
        let before = clock.clone();
        if !clock.closed() {
            clock.close(Close::Resolved, now);
            emit_moved(s, out, &mut clock, &before, "resolved");
        }
        save(s.ctx, tx, &mut clock, out).await?;
        replies::on_answer(s, tx, out, &clock, replies::Trigger::Resolved, &r.result).await?;
        return Ok(());
    }
    if s.is::<rpb::SupplementRequested>() {
        let r = rpb::SupplementRequested::decode(bytes).map_err(decode_err)?;
        let case = r.route.as_ref().map(|r| r.case.clone()).unwrap_or_default();
        let Some(mut clock) = load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        clock.pause(Pause::Papers, now);
        emit_moved(s, out, &mut clock, &before, "papers asked for");
        save(s.ctx, tx, &mut clock, out).await?;
        let docs = r.documents.join(", ");
        replies::on_answer(s, tx, out, &clock, replies::Trigger::NeedsPapers, &docs).await?;
        return Ok(());
    }
    if s.is::<rpb::CaseResumed>() {
        let r = rpb::CaseResumed::decode(bytes).map_err(decode_err)?;
        let route = r.route.as_ref();
        let case = route.map(|r| r.case.clone()).unwrap_or_default();
        let Some(mut clock) = load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        let cal = calendar(s, &mut clock);
        clock.disposition = tpb::Disposition::Committed as i32;
        let days = if r.time_limit_working_days > 0 {
            r.time_limit_working_days
        } else {
            clock.limit_days
        };
        clock.run_days(&cal.calendar, start_of(route, now), days);
        emit_moved(
            s,
            out,
            &mut clock,
            &before,
            "papers arrived; handling resumes",
        );
        return save(s.ctx, tx, &mut clock, out).await;
    }
    if s.is::<rpb::CaseEscalated>() {
        let r = rpb::CaseEscalated::decode(bytes).map_err(decode_err)?;
        let Some(mut clock) = load(tx, &r.case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        clock.disposition = tpb::Disposition::Escalated as i32;
        clock.pause(Pause::Approval, now);
        emit_moved(
            s,
            out,
            &mut clock,
            &before,
            &format!("reported up to {}", r.approver),
        );
        save(s.ctx, tx, &mut clock, out).await?;
        let reason = r.escalation.map(|e| e.reason).unwrap_or_default();
        replies::on_answer(s, tx, out, &clock, replies::Trigger::Escalated, &reason).await?;
        return Ok(());
    }
    if s.is::<rpb::EscalationApproved>() || s.is::<rpb::EscalationRefused>() {
        let (case, at, unit, verdict) = if s.is::<rpb::EscalationApproved>() {
            let r = rpb::EscalationApproved::decode(bytes).map_err(decode_err)?;
            (r.case, r.approve_time, r.answering_unit, "approved")
        } else {
            let r = rpb::EscalationRefused::decode(bytes).map_err(decode_err)?;
            (r.case, r.refuse_time, r.answering_unit, "refused")
        };
        let Some(mut clock) = load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        let cal = calendar(s, &mut clock);
        if !unit.is_empty() {
            clock.unit_level = store::clocks::unit_level(tx, &unit).await?;
            clock.unit = unit;
        }
        let start = at.as_ref().and_then(from_timestamp).unwrap_or(now);
        // The resident is answered within 3 working days of the decision.
        clock.run_days(&cal.calendar, start, 3);
        emit_moved(
            s,
            out,
            &mut clock,
            &before,
            &format!("escalation {verdict}"),
        );
        return save(s.ctx, tx, &mut clock, out).await;
    }
    if s.is::<rpb::CaseReferred>() {
        let r = rpb::CaseReferred::decode(bytes).map_err(decode_err)?;
        let Some(mut clock) = load(tx, &r.case, now).await? else {
            return Ok(());
        };
        let before = clock.clone();
        if !clock.closed() {
            if clock.place.district.is_empty() {
                let facts = r.route.as_ref().and_then(|r| r.facts.as_ref());
                clock.place = place_of(facts.and_then(|f| f.place.as_ref()));
                calendar(s, &mut clock);
            }
            clock.disposition = tpb::Disposition::Referred as i32;
            clock.close(Close::Referred, now);
            emit_moved(
                s,
                out,
                &mut clock,
                &before,
                "referred to the competent body",
            );
        }
        save(s.ctx, tx, &mut clock, out).await?;
        let text = r
            .referral
            .map(|f| format!("{}: {}", f.competent_body, f.reason))
            .unwrap_or_default();
        replies::on_answer(s, tx, out, &clock, replies::Trigger::Referred, &text).await?;
        return Ok(());
    }
    if s.is::<rpb::RoutingCancelled>() {
        let r = rpb::RoutingCancelled::decode(bytes).map_err(decode_err)?;
        let case = r.route.as_ref().map(|r| r.case.clone()).unwrap_or_default();
        return withdraw(s, tx, out, &case).await;
    }
    Ok(())
}

async fn withdraw(s: &Step<'_>, tx: &mut Tx, out: &mut Pending, case: &str) -> Result<(), Error> {
    let Some(mut clock) = load(tx, case, s.now).await? else {
        return Ok(());
    };
    if clock.version == 0 || clock.closed() {
        return Ok(());
    }
    let before = clock.clone();
    clock.close(Close::Withdrawn, s.now);
    emit_moved(s, out, &mut clock, &before, "withdrawn by the resident");
    save(s.ctx, tx, &mut clock, out).await
}

async fn intake_event(
    s: &Step<'_>,
    tx: &mut Tx,
    out: &mut Pending,
    bytes: &[u8],
) -> Result<(), Error> {
    let decode_err = |e: prost::DecodeError| Error::Decode(e.to_string());
    if s.is::<ipb::CaseSubmitted>() {
        let e = ipb::CaseSubmitted::decode(bytes).map_err(decode_err)?;
        if let Some(case) = e.case {
            replies::remember_case(tx, &case, s.now).await?;
        }
        return Ok(());
    }
    if s.is::<ipb::CaseClustered>() {
        let e = ipb::CaseClustered::decode(bytes).map_err(decode_err)?;
        if let Some(cluster) = e.cluster {
            replies::set_cluster(tx, &cluster.cases, &cluster.name).await?;
        }
        return Ok(());
    }
    if s.is::<ipb::CaseUnclustered>() {
        let e = ipb::CaseUnclustered::decode(bytes).map_err(decode_err)?;
        replies::set_cluster(tx, std::slice::from_ref(&e.case), "").await?;
        return Ok(());
    }
    if s.is::<ipb::CaseWithdrawn>() {
        let e = ipb::CaseWithdrawn::decode(bytes).map_err(decode_err)?;
        let case = e.case.map(|c| c.name).unwrap_or_default();
        return withdraw(s, tx, out, &case).await;
    }
    if s.is::<ipb::CaseSupplemented>() {
        let e = ipb::CaseSupplemented::decode(bytes).map_err(decode_err)?;
        if e.previous_state != ipb::CaseState::AwaitingPapers as i32 {
            return Ok(());
        }
        let case = e.case.map(|c| c.name).unwrap_or_default();
        let Some(mut clock) = load(tx, &case, s.now).await? else {
            return Ok(());
        };
        // Papers arrived: the clock runs again at once; routing's CaseResumed, when it
        // comes, recounts from its own start (the same day, so normally the same deadline).
        if clock.state != State::Paused || clock.pause != Some(Pause::Papers) {
            return Ok(());
        }
        let before = clock.clone();
        let cal = calendar(s, &mut clock);
        let days = if clock.limit_days > 0 {
            clock.limit_days
        } else {
            i32::try_from(s.ctx.config.default_time_limit_working_days).unwrap_or(5)
        };
        clock.disposition = tpb::Disposition::Committed as i32;
        clock.run_days(&cal.calendar, s.now, days);
        emit_moved(s, out, &mut clock, &before, "papers arrived");
        return save(s.ctx, tx, &mut clock, out).await;
    }
    Ok(())
}
