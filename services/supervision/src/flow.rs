//! Clocks from the feeds: consumers of intake's and routing's events start, pause, resume,
//! reschedule and close each case's clock (matching's add volunteers' work to its history), exactly once (the consumer's cursor commits with
//! the clocks, their timers and supervision's own events).
//!
//! The three consumers share one path (`apply_batch`) that applies a whole batch with a few
//! statements, whatever its size: what the batch's events need is read up front (its clocks in
//! one statement, locked on PostgreSQL; its units' levels in one; for answers that may go to a
//! whole cluster, the clusters and their members in one), the events are applied in order to
//! that state in memory, and each table is written once at the end with multi-row statements
//! (the reporters' contact methods are read then, for the deliveries made, in one). The result is the same as applying
//! the events one by one, each in its own transaction.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use prost::{Message, Name};

use crate::{
    app::Ctx,
    clock::{self, Acceptance, Clock, Close, Pause, Place, State, Timer},
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

impl Apply for FromMatching {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        Ok(apply_batch(&self.0, FROM_MATCHING, tx, events).await?)
    }
}

impl Apply for FromRouting {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        Ok(apply_batch(&self.0, FROM_ROUTING, tx, events).await?)
    }
}

impl Apply for FromIntake {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        Ok(apply_batch(&self.0, FROM_INTAKE, tx, events).await?)
    }
}

/// Applies a batch of the feeds' events for the consumer `consumer`, with the same result as
/// applying them one by one, but a few statements for the whole batch: every clock the batch
/// touches is read (and on PostgreSQL locked) in one statement, and every unit level and
/// whatever its replies need in one more each; the events are applied in order to the clocks
/// in memory; at the end each table is written once (multi-row statements), the optimistic
/// version check kept: a clock changed underneath is a conflict, and the batch is tried again.
pub(crate) async fn apply_batch(
    ctx: &Ctx,
    consumer: &str,
    tx: &mut Tx,
    events: &[events_pb::Event],
) -> Result<(), Error> {
    let mut b = Batch::default();
    b.prefetch(tx, events).await?;
    let actor = format!("system:{consumer}");
    for e in events {
        let Some(payload) = &e.payload else { continue };
        let meta = EventMeta {
            actor: actor.clone(),
            traceparent: e.traceparent.clone(),
            tracestate: e.tracestate.clone(),
        };
        let step = Step {
            ctx,
            meta: &meta,
            now: event_time(ctx, e),
            kind: &e.kind,
        };
        if e.kind.starts_with(MATCHING_PACKAGE) {
            matching_event(&step, tx, &mut b, &payload.value).await?;
        } else if e.kind.starts_with(INTAKE_PACKAGE) {
            intake_event(&step, tx, &mut b, &payload.value).await?;
        } else {
            routing_event(&step, tx, &mut b, &payload.value).await?;
        }
    }
    b.flush(ctx, tx).await
}

const MATCHING_PACKAGE: &str = "minqing.matching.";
const INTAKE_PACKAGE: &str = "minqing.intake.";

/// A clock as a batch holds it.
#[derive(Debug, Default)]
struct Slot {
    /// The row version read (0: no row).
    read_version: i64,
    /// As last saved in the batch, else as read (`None`: no clock).
    clock: Option<Clock>,
    /// Its timers as of its last save (`None`: not saved in the batch).
    timers: Option<Vec<Timer>>,
}

/// One batch's state: the clocks, unit levels and replies read for it, as its events change
/// them, and the writes left to make at its end.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    clocks: HashMap<String, Slot>,
    units: HashMap<String, i32>,
    unit_writes: BTreeMap<String, i32>,
    replies: replies::Replies,
    out: Pending,
}

/// What an event needs read: its case's clock, units' levels, and whether it may answer the
/// reporters of its case's cluster together (a collective reply: resolved or referred).
#[derive(Debug, Default)]
struct Needs {
    case: String,
    units: Vec<String>,
    collective: Option<replies::Trigger>,
}

fn needs(kind: &str, bytes: &[u8]) -> Option<Needs> {
    let is = |n: String| kind == n;
    let mut need = Needs::default();
    if is(rpb::CaseRouted::full_name()) {
        let r = rpb::CaseRouted::decode(bytes).ok()?;
        need.case = if r.case.is_empty() {
            r.route.map(|r| r.case).unwrap_or_default()
        } else {
            r.case
        };
        need.units.push(r.unit);
    } else if is(rpb::AssignmentAccepted::full_name()) {
        let a = rpb::AssignmentAccepted::decode(bytes).ok()?;
        need.case = a.assignment?.case;
    } else if is(rpb::AssignmentAcceptanceOverdue::full_name()) {
        let a = rpb::AssignmentAcceptanceOverdue::decode(bytes).ok()?;
        need.case = a.assignment?.case;
    } else if is(rpb::AssignmentResolved::full_name()) {
        let r = rpb::AssignmentResolved::decode(bytes).ok()?;
        need.case = r.assignment?.case;
        need.collective = Some(replies::Trigger::Resolved);
    } else if is(rpb::SupplementRequested::full_name()) {
        let r = rpb::SupplementRequested::decode(bytes).ok()?;
        need.case = r.route?.case;
    } else if is(rpb::CaseResumed::full_name()) {
        need.case = rpb::CaseResumed::decode(bytes).ok()?.route?.case;
    } else if is(rpb::CaseEscalated::full_name()) {
        need.case = rpb::CaseEscalated::decode(bytes).ok()?.case;
    } else if is(rpb::EscalationApproved::full_name()) {
        let r = rpb::EscalationApproved::decode(bytes).ok()?;
        need.case = r.case;
        need.units.push(r.answering_unit);
    } else if is(rpb::EscalationRefused::full_name()) {
        let r = rpb::EscalationRefused::decode(bytes).ok()?;
        need.case = r.case;
        need.units.push(r.answering_unit);
    } else if is(rpb::CaseReferred::full_name()) {
        need.case = rpb::CaseReferred::decode(bytes).ok()?.case;
        need.collective = Some(replies::Trigger::Referred);
    } else if is(rpb::RoutingCancelled::full_name()) {
        need.case = rpb::RoutingCancelled::decode(bytes).ok()?.route?.case;
    } else if is(ipb::CaseWithdrawn::full_name()) {
        need.case = ipb::CaseWithdrawn::decode(bytes).ok()?.case?.name;
    } else if is(ipb::CaseSupplemented::full_name()) {
        need.case = ipb::CaseSupplemented::decode(bytes).ok()?.case?.name;
    } else if is(mpb::AssignmentAccepted::full_name()) {
        need.case = mpb::AssignmentAccepted::decode(bytes)
            .ok()?
            .assignment?
            .case;
    } else if is(mpb::AssignmentCompleted::full_name()) {
        need.case = mpb::AssignmentCompleted::decode(bytes)
            .ok()?
            .assignment?
            .case;
    } else {
        return None;
    }
    need.units.retain(|u| !u.is_empty());
    Some(need)
}

impl Batch {
    /// [`replies::on_answer`] for `clock`, with this batch's replies and events.
    async fn answer(
        &mut self,
        s: &Step<'_>,
        tx: &mut Tx,
        clock: &Clock,
        trigger: replies::Trigger,
        detail: &str,
    ) -> Result<(), Error> {
        replies::on_answer(
            s,
            tx,
            &mut self.replies,
            &mut self.out,
            clock,
            trigger,
            detail,
        )
        .await
    }

    /// Reads what the batch's events will need: their clocks (locked on PostgreSQL), their
    /// units' levels, and, for events that may answer a cluster's reporters together, the
    /// clusters and their members.
    async fn prefetch(&mut self, tx: &mut Tx, events: &[events_pb::Event]) -> Result<(), Error> {
        let mut cases = BTreeSet::new();
        let mut units = BTreeSet::new();
        let mut answers = Vec::new();
        for e in events {
            let Some(payload) = &e.payload else { continue };
            let Some(need) = needs(&e.kind, &payload.value) else {
                continue;
            };
            units.extend(need.units);
            if let Some(id) = case_id(&need.case) {
                if let Some(trigger) = need.collective {
                    answers.push((id.to_string(), trigger));
                }
                cases.insert(id.to_string());
            }
        }
        self.read_clocks(tx, cases.into_iter().collect()).await?;
        let units: Vec<String> = units.into_iter().collect();
        if !units.is_empty() {
            let found = store::clocks::unit_levels(tx, &units).await?;
            for u in units {
                let level = found.get(&u).copied().unwrap_or(0);
                self.units.insert(u, level);
            }
        }
        self.replies.prefetch(tx, &answers).await
    }

    /// Reads clocks not held yet, `ids` sorted.
    async fn read_clocks(&mut self, tx: &mut Tx, ids: Vec<String>) -> Result<(), Error> {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.clocks.contains_key(id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        for c in store::clocks::lock_many(tx, &ids).await? {
            let slot = Slot {
                read_version: c.version,
                clock: None,
                timers: None,
            };
            let id = c.case_id.clone();
            self.clocks.insert(
                id,
                Slot {
                    clock: Some(c),
                    ..slot
                },
            );
        }
        for id in ids {
            self.clocks.entry(id).or_default();
        }
        Ok(())
    }

    /// A case's clock as it stands in the batch, if it has one.
    async fn stored(&mut self, tx: &mut Tx, id: &str) -> Result<Option<Clock>, Error> {
        if !self.clocks.contains_key(id) {
            self.read_clocks(tx, vec![id.to_string()]).await?;
        }
        Ok(self.clocks.get(id).and_then(|s| s.clock.clone()))
    }

    /// A case's clock as it stands in the batch, or a new one; `None` for no case.
    async fn load(&mut self, tx: &mut Tx, case: &str, now: Micros) -> Result<Option<Clock>, Error> {
        let Some(id) = case_id(case) else {
            return Ok(None);
        };
        Ok(Some(
            self.stored(tx, id)
                .await?
                .unwrap_or_else(|| Clock::new(id, now)),
        ))
    }

    /// Saves a changed clock in the batch and re-derives its timers, as [`save`] does in the
    /// database; written at the batch's end.
    fn save(&mut self, ctx: &Ctx, clock: &mut Clock) {
        let cal = ctx
            .calendars
            .for_district(&clock.place.district, &ctx.config.default_city);
        if clock.due_agrees(&cal.calendar) {
            clock.calendar_version = cal.version;
        }
        clock.version += 1;
        let timers = clock::timers(clock, &cal.calendar, &ctx.policy);
        let slot = self.clocks.entry(clock.case_id.clone()).or_default();
        slot.clock = Some(clock.clone());
        slot.timers = Some(timers);
    }

    /// A unit's ladder level (0 unknown).
    async fn unit_level(&mut self, tx: &mut Tx, unit: &str) -> Result<i32, Error> {
        if let Some(level) = self.units.get(unit) {
            return Ok(*level);
        }
        let level = store::clocks::unit_level(tx, unit).await?;
        self.units.insert(unit.to_string(), level);
        Ok(level)
    }

    fn set_unit_level(&mut self, unit: &str, level: i32) {
        self.units.insert(unit.to_string(), level);
        self.unit_writes.insert(unit.to_string(), level);
    }

    /// Writes what the batch changed, each table once.
    async fn flush(self, ctx: &Ctx, tx: &mut Tx) -> Result<(), Error> {
        let Batch {
            clocks,
            unit_writes,
            replies,
            mut out,
            ..
        } = self;
        let levels: Vec<(String, i32)> = unit_writes.into_iter().collect();
        store::clocks::set_unit_levels(tx, &levels).await?;
        let mut saved: Vec<(&String, &Slot)> =
            clocks.iter().filter(|(_, s)| s.timers.is_some()).collect();
        saved.sort_by(|a, b| a.0.cmp(b.0));
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        let mut cases = Vec::new();
        let mut timers = Vec::new();
        for (id, slot) in saved {
            let Some(clock) = slot.clock.as_ref() else {
                continue;
            };
            if slot.read_version == 0 {
                new.push(clock);
            } else {
                changed.push((clock, slot.read_version));
            }
            cases.push(id.clone());
            timers.extend(slot.timers.iter().flatten().cloned());
        }
        if store::clocks::insert_new(tx, &new).await? != new.len() as u64 {
            return Err(Error::Conflict);
        }
        if store::clocks::update_many(tx, &changed).await? != changed.len() as u64 {
            return Err(Error::Conflict);
        }
        store::clocks::replace_timers(tx, &cases, &timers).await?;
        out.hints.extend(timers.iter().map(|t| (t.fire, t.id)));
        let queued = replies.flush(tx, &mut out).await?;
        finish(tx, &mut out).await?;
        if queued {
            ctx.deliveries_ready.notify_one();
        }
        ctx.timers.push(out.hints);
        Ok(())
    }
}

async fn matching_event(
    s: &Step<'_>,
    tx: &mut Tx,
    b: &mut Batch,
    bytes: &[u8],
) -> Result<(), Error> {
    let decode_err = |e: prost::DecodeError| Error::Decode(e.to_string());
    let (assignment, summary) = if s.is::<mpb::AssignmentAccepted>() {
        let m = mpb::AssignmentAccepted::decode(bytes).map_err(decode_err)?;
        let a = m.assignment.unwrap_or_default();
        let who = a.assignee_display_name.clone();
        (a, format!("volunteer {who} took it up"))
    } else if s.is::<mpb::AssignmentCompleted>() {
        let m = mpb::AssignmentCompleted::decode(bytes).map_err(decode_err)?;
        let a = m.assignment.unwrap_or_default();
        let who = a.assignee_display_name.clone();
        (a, format!("served by volunteer {who}"))
    } else {
        return Ok(());
    };
    let Some(id) = case_id(&assignment.case) else {
        return Ok(());
    };
    let Some(mut clock) = b.stored(tx, id).await? else {
        return Ok(());
    };
    clock.note(s.now, s.kind, summary);
    b.save(s.ctx, &mut clock);
    Ok(())
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
    b: &mut Batch,
    bytes: &[u8],
) -> Result<(), Error> {
    let now = s.now;
    let decode_err = |e: prost::DecodeError| Error::Decode(e.to_string());
    if s.is::<rpb::UnitChanged>() {
        let u = rpb::UnitChanged::decode(bytes).map_err(decode_err)?;
        if let Some(unit) = u.unit {
            b.set_unit_level(&unit.name, unit.level);
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
        let Some(mut clock) = b.load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            clock.note(
                now,
                s.kind,
                "routed again after closing; the clock stays closed",
            );
            b.save(s.ctx, &mut clock);
            return Ok(());
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
        clock.unit_level = b.unit_level(tx, &r.unit).await?;
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
        emit_moved(s, &mut b.out, &mut clock, &before, &why);
        b.save(s.ctx, &mut clock);
        if r.disposition == tpb::Disposition::Supplement as i32 {
            let docs = route
                .map(|r| r.missing_documents.join(", "))
                .unwrap_or_default();
            b.answer(s, tx, &clock, replies::Trigger::NeedsPapers, &docs)
                .await?;
        }
        return Ok(());
    }
    if s.is::<rpb::AssignmentAccepted>() {
        let a = rpb::AssignmentAccepted::decode(bytes).map_err(decode_err)?;
        let assignment = a.assignment.unwrap_or_default();
        let Some(mut clock) = b.load(tx, &assignment.case, now).await? else {
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
            b.save(s.ctx, &mut clock);
        }
        return Ok(());
    }
    if s.is::<rpb::AssignmentAcceptanceOverdue>() {
        let a = rpb::AssignmentAcceptanceOverdue::decode(bytes).map_err(decode_err)?;
        let assignment = a.assignment.unwrap_or_default();
        let Some(mut clock) = b.load(tx, &assignment.case, now).await? else {
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
            acceptance_overdue(&mut clock, s.meta, &mut b.out, now);
            b.save(s.ctx, &mut clock);
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
        let Some(mut clock) = b.load(tx, &case, now).await? else {
            return Ok(());
        };
        let before = clock.clone();
        if !clock.closed() {
            clock.close(Close::Resolved, now);
            emit_moved(s, &mut b.out, &mut clock, &before, "resolved");
        }
        b.save(s.ctx, &mut clock);
        b.answer(s, tx, &clock, replies::Trigger::Resolved, &r.result)
            .await?;
        return Ok(());
    }
    if s.is::<rpb::SupplementRequested>() {
        let r = rpb::SupplementRequested::decode(bytes).map_err(decode_err)?;
        let case = r.route.as_ref().map(|r| r.case.clone()).unwrap_or_default();
        let Some(mut clock) = b.load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        clock.pause(Pause::Papers, now);
        emit_moved(s, &mut b.out, &mut clock, &before, "papers asked for");
        b.save(s.ctx, &mut clock);
        let docs = r.documents.join(", ");
        b.answer(s, tx, &clock, replies::Trigger::NeedsPapers, &docs)
            .await?;
        return Ok(());
    }
    if s.is::<rpb::CaseResumed>() {
        let r = rpb::CaseResumed::decode(bytes).map_err(decode_err)?;
        let route = r.route.as_ref();
        let case = route.map(|r| r.case.clone()).unwrap_or_default();
        let Some(mut clock) = b.load(tx, &case, now).await? else {
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
            &mut b.out,
            &mut clock,
            &before,
            "papers arrived; handling resumes",
        );
        b.save(s.ctx, &mut clock);
        return Ok(());
    }
    if s.is::<rpb::CaseEscalated>() {
        let r = rpb::CaseEscalated::decode(bytes).map_err(decode_err)?;
        let Some(mut clock) = b.load(tx, &r.case, now).await? else {
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
            &mut b.out,
            &mut clock,
            &before,
            &format!("reported up to {}", r.approver),
        );
        b.save(s.ctx, &mut clock);
        let reason = r.escalation.map(|e| e.reason).unwrap_or_default();
        b.answer(s, tx, &clock, replies::Trigger::Escalated, &reason)
            .await?;
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
        let Some(mut clock) = b.load(tx, &case, now).await? else {
            return Ok(());
        };
        if clock.closed() {
            return Ok(());
        }
        let before = clock.clone();
        let cal = calendar(s, &mut clock);
        if !unit.is_empty() {
            clock.unit_level = b.unit_level(tx, &unit).await?;
            clock.unit = unit;
        }
        let start = at.as_ref().and_then(from_timestamp).unwrap_or(now);
        // The resident is answered within 3 working days of the decision.
        clock.run_days(&cal.calendar, start, 3);
        emit_moved(
            s,
            &mut b.out,
            &mut clock,
            &before,
            &format!("escalation {verdict}"),
        );
        b.save(s.ctx, &mut clock);
        return Ok(());
    }
    if s.is::<rpb::CaseReferred>() {
        let r = rpb::CaseReferred::decode(bytes).map_err(decode_err)?;
        let Some(mut clock) = b.load(tx, &r.case, now).await? else {
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
                &mut b.out,
                &mut clock,
                &before,
                "referred to the competent body",
            );
        }
        b.save(s.ctx, &mut clock);
        let text = r
            .referral
            .map(|f| format!("{}: {}", f.competent_body, f.reason))
            .unwrap_or_default();
        b.answer(s, tx, &clock, replies::Trigger::Referred, &text)
            .await?;
        return Ok(());
    }
    if s.is::<rpb::RoutingCancelled>() {
        let r = rpb::RoutingCancelled::decode(bytes).map_err(decode_err)?;
        let case = r.route.as_ref().map(|r| r.case.clone()).unwrap_or_default();
        return withdraw(s, tx, b, &case).await;
    }
    Ok(())
}

async fn withdraw(s: &Step<'_>, tx: &mut Tx, b: &mut Batch, case: &str) -> Result<(), Error> {
    let Some(mut clock) = b.load(tx, case, s.now).await? else {
        return Ok(());
    };
    if clock.version == 0 || clock.closed() {
        return Ok(());
    }
    let before = clock.clone();
    clock.close(Close::Withdrawn, s.now);
    emit_moved(
        s,
        &mut b.out,
        &mut clock,
        &before,
        "withdrawn by the resident",
    );
    b.save(s.ctx, &mut clock);
    Ok(())
}

async fn intake_event(s: &Step<'_>, tx: &mut Tx, b: &mut Batch, bytes: &[u8]) -> Result<(), Error> {
    let decode_err = |e: prost::DecodeError| Error::Decode(e.to_string());
    if s.is::<ipb::CaseSubmitted>() {
        let e = ipb::CaseSubmitted::decode(bytes).map_err(decode_err)?;
        if let Some(case) = e.case {
            b.replies.remember_case(&case, s.now);
        }
        return Ok(());
    }
    if s.is::<ipb::CaseClustered>() {
        let e = ipb::CaseClustered::decode(bytes).map_err(decode_err)?;
        // Every case that joins has its own event: the one named is the one to record.
        if let Some(cluster) = e.cluster {
            b.replies
                .set_cluster(std::slice::from_ref(&e.case), &cluster.name);
        }
        return Ok(());
    }
    if s.is::<ipb::CaseUnclustered>() {
        let e = ipb::CaseUnclustered::decode(bytes).map_err(decode_err)?;
        b.replies.set_cluster(std::slice::from_ref(&e.case), "");
        return Ok(());
    }
    if s.is::<ipb::CaseWithdrawn>() {
        let e = ipb::CaseWithdrawn::decode(bytes).map_err(decode_err)?;
        let case = e.case.map(|c| c.name).unwrap_or_default();
        return withdraw(s, tx, b, &case).await;
    }
    if s.is::<ipb::CaseSupplemented>() {
        let e = ipb::CaseSupplemented::decode(bytes).map_err(decode_err)?;
        if e.previous_state != ipb::CaseState::AwaitingPapers as i32 {
            return Ok(());
        }
        let case = e.case.map(|c| c.name).unwrap_or_default();
        let Some(mut clock) = b.load(tx, &case, s.now).await? else {
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
        emit_moved(s, &mut b.out, &mut clock, &before, "papers arrived");
        b.save(s.ctx, &mut clock);
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use prost::{Message, Name};
    use sqlx::Row;

    use super::FromRouting;
    use crate::{
        config::SupervisionConfig,
        outlets::{LogOutlet, Outlets},
        store,
    };
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        feed::Apply,
        testing::TestDatabase,
        time::{self, Micros, to_timestamp},
    };
    use minqing_proto::minqing::{
        events::v1 as events_pb, intake::v1 as ipb, matching::v1 as mpb, routing::v1 as rpb,
        supervision::v1 as pb, r#type::v1 as tpb,
    };

    async fn ctx(db: &Db, clock: &time::Clock) -> Arc<crate::app::Ctx> {
        crate::context(
            db.clone(),
            SupervisionConfig::default(),
            clock.clone(),
            Outlets::all(Arc::new(LogOutlet)),
        )
        .await
        .unwrap()
    }

    /// Monday 2026-11-23 10:00 in Lanzhou.
    fn start() -> chrono::DateTime<chrono::Utc> {
        chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    /// Builds the feed's events, each a minute after the one before.
    struct Feed {
        at: Micros,
        events: Vec<events_pb::Event>,
    }

    impl Feed {
        fn push<M: Message + Name>(&mut self, m: &M) {
            self.at += 60_000_000;
            self.events.push(events_pb::Event {
                id: format!("e{}", self.events.len()),
                kind: M::full_name(),
                create_time: Some(to_timestamp(self.at)),
                payload: Some(prost_types::Any {
                    type_url: M::type_url(),
                    value: m.encode_to_vec(),
                }),
                ..Default::default()
            });
        }
    }

    fn place() -> tpb::Place {
        tpb::Place {
            district: "620102".into(),
            street: "620102001".into(),
            community: "620102001001".into(),
            grid: "620102001001-g01".into(),
            ..Default::default()
        }
    }

    fn submitted(id: &str, method: i32, cluster: &str) -> ipb::CaseSubmitted {
        ipb::CaseSubmitted {
            case: Some(ipb::Case {
                name: format!("cases/{id}"),
                reporter: Some(ipb::Reporter {
                    anonymous: false,
                    contact: Some(tpb::Contact {
                        name: format!("reporter of {id}"),
                        phone: "13800000000".into(),
                        preferred_method: method,
                        ..Default::default()
                    }),
                }),
                place: Some(place()),
                cluster: cluster.into(),
                recorded_by: "users/clerk".into(),
                ..Default::default()
            }),
        }
    }

    fn route(id: &str) -> rpb::CaseRoute {
        rpb::CaseRoute {
            case: format!("cases/{id}"),
            facts: Some(rpb::CaseFacts {
                case: format!("cases/{id}"),
                category: "streetlight".into(),
                place: Some(place()),
                ..Default::default()
            }),
            time_limit_working_days: 5,
            missing_documents: vec!["an ID card".into()],
            ..Default::default()
        }
    }

    fn assignment(id: &str, accept_by: Micros) -> rpb::Assignment {
        rpb::Assignment {
            name: format!("assignments/{id}-1"),
            case: format!("cases/{id}"),
            unit: "units/u1".into(),
            state: rpb::AssignmentState::Pending as i32,
            accept_by: Some(to_timestamp(accept_by)),
            ..Default::default()
        }
    }

    fn routed(id: &str, disposition: tpb::Disposition, accept_by: Micros) -> rpb::CaseRouted {
        rpb::CaseRouted {
            route: Some(route(id)),
            assignment: Some(assignment(id, accept_by)),
            case: format!("cases/{id}"),
            disposition: disposition as i32,
            unit: "units/u1".into(),
            ..Default::default()
        }
    }

    fn volunteer(id: &str) -> mpb::Assignment {
        mpb::Assignment {
            case: format!("cases/{id}"),
            assignee_display_name: "Li".into(),
            ..Default::default()
        }
    }

    /// Every kind the consumers follow; cases several times each.
    fn k1() -> ipb::Cluster {
        ipb::Cluster {
            name: "clusters/k1".into(),
            ..Default::default()
        }
    }

    /// `case` ("cases/…") joins cluster k1, then of `size` reports.
    fn clustered(case: &str, by_staff: bool, size: i32) -> ipb::CaseClustered {
        ipb::CaseClustered {
            cluster: Some(k1()),
            case: case.into(),
            by_staff,
            size,
        }
    }

    fn first_events() -> Vec<events_pb::Event> {
        let t0 = start().timestamp_micros();
        let hour = 3_600_000_000;
        let mut f = Feed {
            at: t0,
            events: Vec::new(),
        };
        for (id, method, cluster) in [
            ("a", 1, ""),
            ("b", 2, "clusters/k1"),
            ("c", 3, ""),
            ("d", 1, ""),
            ("e", 2, ""),
            ("f", 3, ""),
        ] {
            f.push(&submitted(id, method, cluster));
        }
        // A second submission of a case keeps the first contact.
        f.push(&submitted("a", 3, ""));
        // Each case that joins has its own event (z, with no contact, joins too).
        for (case, size) in [("cases/a", 2), ("cases/z", 3)] {
            f.push(&clustered(case, false, size));
        }
        f.push(&rpb::UnitChanged {
            unit: Some(rpb::Unit {
                name: "units/u1".into(),
                level: 3,
                ..Default::default()
            }),
            created: true,
        });
        f.push(&rpb::UnitChanged {
            unit: Some(rpb::Unit {
                name: "units/u2".into(),
                level: 2,
                ..Default::default()
            }),
            created: true,
        });
        f.push(&routed("a", tpb::Disposition::Committed, t0 + hour));
        f.push(&rpb::AssignmentAccepted {
            assignment: Some(assignment("a", t0 + hour)),
            ..Default::default()
        });
        f.push(&mpb::AssignmentAccepted {
            assignment: Some(volunteer("a")),
            ..Default::default()
        });
        f.push(&routed("b", tpb::Disposition::Committed, t0 + hour));
        f.push(&rpb::AssignmentAcceptanceOverdue {
            assignment: Some(assignment("b", t0 + hour)),
            ..Default::default()
        });
        f.push(&mpb::AssignmentCompleted {
            assignment: Some(volunteer("a")),
            ..Default::default()
        });
        f.push(&rpb::AssignmentResolved {
            assignment: Some(assignment("a", t0 + hour)),
            result: "fixed".into(),
            ..Default::default()
        });
        // x joins the cluster after its resolution was made (in the same batch, when the
        // batch is whole).
        f.push(&clustered("cases/x", false, 4));
        // The cluster's reply went out with a's: none for b, and x is added to it.
        f.push(&rpb::AssignmentResolved {
            assignment: Some(assignment("b", t0 + hour)),
            result: "fixed too".into(),
            ..Default::default()
        });
        f.push(&routed("c", tpb::Disposition::Supplement, t0 + hour));
        f.push(&ipb::CaseSupplemented {
            case: Some(ipb::Case {
                name: "cases/c".into(),
                ..Default::default()
            }),
            previous_state: ipb::CaseState::AwaitingPapers as i32,
            ..Default::default()
        });
        f.push(&rpb::CaseResumed {
            route: Some(route("c")),
            time_limit_working_days: 4,
            ..Default::default()
        });
        f.push(&rpb::SupplementRequested {
            route: Some(route("c")),
            documents: vec!["a photo".into()],
            ..Default::default()
        });
        f.push(&routed("d", tpb::Disposition::Committed, t0 + hour));
        f.push(&rpb::CaseEscalated {
            case: "cases/d".into(),
            approver: "units/u2".into(),
            escalation: Some(rpb::Escalation {
                reason: "beyond our means".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        f.push(&rpb::EscalationApproved {
            case: "cases/d".into(),
            answering_unit: "units/u2".into(),
            ..Default::default()
        });
        f.push(&routed("e", tpb::Disposition::Committed, t0 + hour));
        f.push(&rpb::CaseReferred {
            case: "cases/e".into(),
            referral: Some(rpb::Referral {
                competent_body: "the power company".into(),
                reason: "their cable".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        f.push(&routed("f", tpb::Disposition::Committed, t0 + hour));
        f.push(&ipb::CaseWithdrawn {
            case: Some(ipb::Case {
                name: "cases/f".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        f.push(&routed("g", tpb::Disposition::Immediate, t0 + hour));
        f.push(&routed("h", tpb::Disposition::Emergency, t0 + hour));
        f.push(&routed("i", tpb::Disposition::Escalated, t0 + hour));
        f.push(&rpb::EscalationRefused {
            case: "cases/i".into(),
            answering_unit: "units/unknown".into(),
            ..Default::default()
        });
        f.push(&routed("j", tpb::Disposition::Committed, t0 + hour));
        f.push(&rpb::RoutingCancelled {
            route: Some(route("j")),
            ..Default::default()
        });
        // Nothing to do: no clock yet (accepted, withdrawn, volunteers) or no case.
        f.push(&rpb::AssignmentAccepted {
            assignment: Some(assignment("k", t0 + hour)),
            ..Default::default()
        });
        f.push(&ipb::CaseWithdrawn {
            case: Some(ipb::Case {
                name: "cases/k".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        f.push(&mpb::AssignmentAccepted {
            assignment: Some(volunteer("k")),
            ..Default::default()
        });
        f.push(&rpb::CaseRouted::default());
        f.push(&ipb::CaseUnclustered {
            case: "cases/z".into(),
            ..Default::default()
        });
        f.events
    }

    /// Events for clocks stored by an earlier batch: updates, and replies given already.
    fn later_events() -> Vec<events_pb::Event> {
        let t0 = start().timestamp_micros() + 10 * 3_600_000_000;
        let mut f = Feed {
            at: t0,
            events: Vec::new(),
        };
        f.push(&routed("a", tpb::Disposition::Committed, t0));
        f.push(&rpb::AssignmentResolved {
            assignment: Some(assignment("b", t0)),
            result: "again".into(),
            ..Default::default()
        });
        f.push(&submitted("y", 1, "clusters/k1"));
        f.push(&routed(
            "y",
            tpb::Disposition::Committed,
            t0 + 3_600_000_000,
        ));
        f.push(&rpb::CaseReferred {
            case: "cases/y".into(),
            ..Default::default()
        });
        // z leaves the cluster and comes back: the cluster's resolution reached it before,
        // so it is not reached again.
        f.push(&ipb::CaseUnclustered {
            cluster: Some(k1()),
            case: "cases/z".into(),
        });
        f.push(&clustered("cases/z", true, 5));
        // a is resolved again after y joined: the cluster's resolution (made in the earlier
        // batch, before y) now reaches y too, and only y.
        f.push(&rpb::AssignmentResolved {
            assignment: Some(assignment("a", t0)),
            result: "fixed for good".into(),
            ..Default::default()
        });
        f.push(&ipb::CaseSupplemented {
            case: Some(ipb::Case {
                name: "cases/c".into(),
                ..Default::default()
            }),
            previous_state: ipb::CaseState::AwaitingPapers as i32,
            ..Default::default()
        });
        f.push(&rpb::AssignmentAcceptanceOverdue {
            assignment: Some(assignment("d", t0)),
            ..Default::default()
        });
        f.push(&mpb::AssignmentCompleted {
            assignment: Some(volunteer("d")),
            ..Default::default()
        });
        f.push(&rpb::CaseEscalated {
            case: "cases/h".into(),
            approver: "units/u2".into(),
            ..Default::default()
        });
        f.push(&rpb::UnitChanged {
            unit: Some(rpb::Unit {
                name: "units/u2".into(),
                level: 1,
                ..Default::default()
            }),
            created: false,
        });
        f.push(&rpb::EscalationApproved {
            case: "cases/h".into(),
            answering_unit: "units/u2".into(),
            ..Default::default()
        });
        f.events
    }

    /// Applies `events` in batches of `size`, through routing's consumer (intake's and
    /// matching's share its path; the consumer's name shows in the events' actor, so one is
    /// used throughout).
    async fn apply(ctx: &Arc<crate::app::Ctx>, events: &[events_pb::Event], size: usize) {
        for chunk in events.chunks(size) {
            let mut tx = ctx.db.begin().await.unwrap();
            FromRouting(ctx.clone())
                .apply(&mut tx, chunk)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    /// Asserts two dumps are the same, naming the first line that differs.
    fn same(batched: &[String], single: &[String]) {
        for (i, (b, s)) in batched.iter().zip(single).enumerate() {
            assert_eq!(b, s, "line {i} differs");
        }
        assert_eq!(batched.len(), single.len());
    }

    /// Everything the consumers write, in a stable order, with the random ids left out.
    async fn dump(db: &Db) -> Vec<String> {
        let mut out = Vec::new();
        let rows =
            |sql: &'static str| async move { sqlx::query(sql).fetch_all(db.pool()).await.unwrap() };
        for r in rows(
            "SELECT case_id, state, unit, district, street, community, grid, building, \
                due_time, create_time, update_time, version, doc, city, calendar_version \
             FROM clocks ORDER BY case_id",
        )
        .await
        {
            let mut cols: Vec<String> = Vec::new();
            for i in [0, 2, 3, 4, 5, 6, 7, 12, 13] {
                cols.push(r.get::<String, _>(i));
            }
            for i in [1, 8, 9, 10, 11, 14] {
                cols.push(r.get::<i64, _>(i).to_string());
            }
            out.push(format!("clock {}", cols.join(" | ")));
        }
        for r in rows(
            "SELECT id, case_id, kind, step, fire_time, fired FROM timers ORDER BY case_id, id",
        )
        .await
        {
            out.push(format!(
                "timer {} {} {} {} {} {}",
                r.get::<i64, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<i64, _>(3),
                r.get::<i64, _>(4),
                r.get::<i64, _>(5)
            ));
        }
        for r in rows("SELECT name, level FROM units ORDER BY name").await {
            out.push(format!(
                "unit {} {}",
                r.get::<String, _>(0),
                r.get::<i64, _>(1)
            ));
        }
        for r in rows(
            "SELECT case_id, anonymous, method, needs_visit, name, phone, postal_address, \
                online_address, visit_note, recorded_by, district, street, community, grid, \
                create_time FROM case_contacts ORDER BY case_id",
        )
        .await
        {
            let mut cols: Vec<String> = Vec::new();
            for i in [0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13] {
                cols.push(r.get::<String, _>(i));
            }
            for i in [1, 2, 3, 14] {
                cols.push(r.get::<i64, _>(i).to_string());
            }
            out.push(format!("contact {}", cols.join(" | ")));
        }
        for r in rows("SELECT case_id, cluster FROM cluster_members ORDER BY case_id").await {
            out.push(format!(
                "member {} {}",
                r.get::<String, _>(0),
                r.get::<String, _>(1)
            ));
        }
        for r in
            rows("SELECT dedupe, case_id, cluster, create_time, doc FROM replies ORDER BY dedupe")
                .await
        {
            let mut reply: crate::replies::Reply =
                crate::store::from_doc(&r.get::<String, _>(4)).unwrap();
            reply.id.clear();
            out.push(format!(
                "reply {} {} {} {} {reply:?}",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3)
            ));
        }
        for r in rows(
            "SELECT r.dedupe, d.case_id, d.method, d.state, d.attempts, d.next_attempt_time, \
                d.last_error, d.delivered_time, d.appointment, d.update_time, d.version \
             FROM deliveries d JOIN replies r ON r.id = d.reply_id ORDER BY r.dedupe, d.case_id",
        )
        .await
        {
            let mut cols: Vec<String> = Vec::new();
            for i in [0, 1, 6, 8] {
                cols.push(r.get::<String, _>(i));
            }
            for i in [2, 3, 4, 5, 7, 9, 10] {
                cols.push(r.get::<i64, _>(i).to_string());
            }
            out.push(format!("delivery {}", cols.join(" | ")));
        }
        for r in
            rows("SELECT kind, subject, create_time, payload, actor FROM events ORDER BY seq").await
        {
            let kind: String = r.get(0);
            let payload: Vec<u8> = r.get(3);
            let body = if kind == pb::ReplyQueued::full_name() {
                let mut e = pb::ReplyQueued::decode(payload.as_slice()).unwrap();
                if let Some(reply) = e.reply.as_mut() {
                    reply.name.clear();
                }
                format!("{e:?}")
            } else if kind == pb::ReplyExtended::full_name() {
                let mut e = pb::ReplyExtended::decode(payload.as_slice()).unwrap();
                e.reply.clear();
                format!("{e:?}")
            } else {
                format!("{payload:?}")
            };
            out.push(format!(
                "event {kind} {} {} {} {body}",
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<String, _>(4)
            ));
        }
        out
    }

    fn count(dump: &[String], prefix: &str) -> usize {
        dump.iter().filter(|l| l.starts_with(prefix)).count()
    }

    async fn a_batch_writes_what_its_events_one_by_one_write(backend: Backend) {
        let Some(batched_db) = TestDatabase::new(backend).await else {
            return;
        };
        let Some(single_db) = TestDatabase::new(backend).await else {
            return;
        };
        let clock = time::Clock::manual(start());
        let batched_db = Db::connect(&batched_db.options("supervision"))
            .await
            .unwrap();
        let single_db = Db::connect(&single_db.options("supervision"))
            .await
            .unwrap();
        let batched = ctx(&batched_db, &clock).await;
        let single = ctx(&single_db, &clock).await;
        let (first, later) = (first_events(), later_events());
        apply(&batched, &first, first.len()).await;
        apply(&single, &first, 1).await;
        let after_first = dump(&batched.db).await;
        same(&after_first, &dump(&single.db).await);
        apply(&batched, &later, later.len()).await;
        apply(&single, &later, 1).await;
        let b = dump(&batched.db).await;
        same(&b, &dump(&single.db).await);

        // The batch did what the events ask for (so the comparison compared something).
        assert_eq!(count(&after_first, "clock "), 10, "{after_first:#?}");
        assert_eq!(count(&after_first, "contact "), 6);
        // a's collective answer reached a, b and z (in the cluster then, with no contact),
        // and x, who joined after it was made, through b's.
        assert_eq!(
            count(&after_first, "delivery clusters/k1|resolved"),
            4,
            "{after_first:#?}"
        );
        let extended = |d: &[String]| -> Vec<String> {
            d.iter()
                .filter(|l| l.starts_with(&format!("event {}", pb::ReplyExtended::full_name())))
                .cloned()
                .collect()
        };
        let first_extension = extended(&after_first);
        assert_eq!(first_extension.len(), 1, "{after_first:#?}");
        assert!(
            first_extension[0].contains("cases/b")
                && first_extension[0].contains("case: \"cases/x\""),
            "{first_extension:?}"
        );
        // a's first contact stands (phone), not the second submission's.
        assert!(
            after_first
                .iter()
                .any(|l| l.starts_with("contact a |") && l.contains("| 0 | 1 | 0 |")),
            "{after_first:#?}"
        );
        let replies = |d: &[String]| {
            d.iter()
                .filter(|l| l.starts_with(&format!("event {}", pb::ReplyQueued::full_name())))
                .count()
        };
        // a (collective), c twice (papers), d (escalated), e (referred).
        assert_eq!(replies(&after_first), 5, "{after_first:#?}");
        // Later: y's referral (the cluster's, collective) and h's escalation are new; b's
        // resolution again is not (the cluster was answered in the earlier batch).
        assert_eq!(replies(&b), 7, "{b:#?}");
        // The cluster's resolution reached y, who joined after it was made, once (b's second
        // resolution came before y joined, a's after).
        assert_eq!(count(&b, "delivery clusters/k1|resolved"), 5, "{b:#?}");
        assert_eq!(
            count(&b, "delivery clusters/k1|resolved | z |"),
            1,
            "{b:#?}"
        );
        assert!(b.iter().any(|l| l == "member z clusters/k1"), "{b:#?}");
        let later_extension = extended(&b);
        assert_eq!(later_extension.len(), 2, "{b:#?}");
        assert!(
            later_extension[1].contains("cases/a")
                && later_extension[1].contains("case: \"cases/y\""),
            "{later_extension:?}"
        );
        // Every delivery goes by its reporter's kept contact method (0 without a contact),
        // looked up only for the reports reached, whether in an earlier batch or this one.
        let fields = |l: &str| -> Vec<String> { l.split(" | ").map(str::to_string).collect() };
        let methods: std::collections::HashMap<String, String> = b
            .iter()
            .filter_map(|l| l.strip_prefix("contact "))
            .map(|l| {
                let f = fields(l);
                (f[0].clone(), f[12].clone())
            })
            .collect();
        let deliveries: Vec<Vec<String>> = b
            .iter()
            .filter_map(|l| l.strip_prefix("delivery "))
            .map(fields)
            .collect();
        assert!(deliveries.len() > 5);
        assert!(deliveries.iter().any(|d| d[4] != "0"), "{deliveries:?}");
        for d in &deliveries {
            let kept = methods.get(&d[1]).map_or("0", String::as_str);
            assert_eq!(d[4], kept, "{d:?}");
        }
        assert!(count(&b, "timer ") > 0);
        assert!(b.iter().any(|l| l.starts_with("unit units/u2 1")));
        let versions: Vec<&String> = b.iter().filter(|l| l.starts_with("clock a |")).collect();
        assert_eq!(versions.len(), 1);
        batched_db.close().await;
        single_db.close().await;
    }

    /// The batch's writes keep the version check: a clock inserted or changed by another
    /// transaction since the batch read it is not overwritten, and the batch learns it; a
    /// timer that fired keeps its mark when the clock's timers are replaced.
    async fn batch_writes_keep_the_version_check_and_fired_timers(backend: Backend) {
        let Some(test_db) = TestDatabase::new(backend).await else {
            return;
        };
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(start());
        let ctx = ctx(&db, &clock).await;
        let now = clock.now_micros();
        let cal = ctx.calendars.for_district("620102", "6201");
        let mut c = crate::clock::Clock::new("x", now);
        c.place.district = "620102".into();
        c.run_days(&cal.calendar, now, 3);
        c.version = 1;
        let mut tx = db.begin().await.unwrap();
        assert_eq!(store::clocks::insert_new(&mut tx, &[&c]).await.unwrap(), 1);
        // Inserted again (another transaction got there first): nothing written.
        assert_eq!(store::clocks::insert_new(&mut tx, &[&c]).await.unwrap(), 0);
        let timers = crate::clock::timers(&c, &cal.calendar, &ctx.policy);
        assert_eq!(timers.len(), 2);
        store::clocks::replace_timers(&mut tx, &["x".to_string()], &timers)
            .await
            .unwrap();
        assert!(
            store::clocks::mark_fired(&mut tx, timers[0].id, now)
                .await
                .unwrap()
        );
        // Two saves in a batch: version 1 → 3.
        let mut changed = c.clone();
        changed.note(now, "test", "changed");
        changed.version = 3;
        assert_eq!(
            store::clocks::update_many(&mut tx, &[(&changed, 2)])
                .await
                .unwrap(),
            0,
            "read at a version the row is not at"
        );
        assert_eq!(
            store::clocks::update_many(&mut tx, &[(&changed, 1)])
                .await
                .unwrap(),
            1
        );
        // Replacing the timers again: the fired one stays fired, the other is re-made.
        store::clocks::replace_timers(&mut tx, &["x".to_string()], &timers)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let stored = store::clocks::get(db.pool(), "x").await.unwrap().unwrap();
        assert_eq!(stored.version, 3);
        assert_eq!(stored.history.len(), 1);
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, fired FROM timers WHERE case_id = 'x' ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let mut want: Vec<(i64, i64)> = timers
            .iter()
            .map(|t| (t.id, i64::from(t.id == timers[0].id)))
            .collect();
        want.sort_unstable();
        assert_eq!(rows, want);
        db.close().await;
    }

    backend_tests!(
        a_batch_writes_what_its_events_one_by_one_write,
        batch_writes_keep_the_version_check_and_fired_timers
    );

    /// Supervision's store on a throwaway PostgreSQL database, its context and the clock's
    /// time, for the tests of statements on grown tables; none without PostgreSQL.
    async fn grown_table_store() -> Option<(TestDatabase, Db, Arc<crate::app::Ctx>, Micros)> {
        let test_db = TestDatabase::new(Backend::Postgres).await?;
        let db = Db::connect(&test_db.options("supervision")).await.unwrap();
        let clock = time::Clock::manual(start());
        let ctx = ctx(&db, &clock).await;
        Some((test_db, db, ctx, clock.now_micros()))
    }

    /// Clocks `c{from}` to `c{to - 1}`, stored at version 1.
    fn stored_clocks(now: Micros, from: usize, to: usize) -> Vec<crate::clock::Clock> {
        (from..to)
            .map(|i| {
                let mut c = crate::clock::Clock::new(&format!("c{i:06}"), now);
                c.place.district = "620102".into();
                c.version = 1;
                c
            })
            .collect()
    }

    /// A batch's update of stored clocks reads them by key once the table has grown, however
    /// small it was when the statement first ran.
    #[tokio::test]
    async fn a_batch_updates_a_grown_clocks_table_by_key_on_postgres() {
        let Some((_test_db, db, _ctx, now)) = grown_table_store().await else {
            return;
        };
        let made = |from: usize, to: usize| stored_clocks(now, from, to);
        let mut tx = db.begin().await.unwrap();
        let first = made(0, 100);
        store::clocks::insert_new(&mut tx, &first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let changed: Vec<(&crate::clock::Clock, i64)> =
            first[..64].iter().map(|c| (c, 1)).collect();
        for _ in 0..8 {
            store::clocks::update_many(&mut tx, &changed).await.unwrap();
        }
        let more = made(100, 40_000);
        store::clocks::insert_new(&mut tx, &more.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let before = minqing_kit::testing::seq_scans(&mut tx, "clocks").await;
        let changed: Vec<(&crate::clock::Clock, i64)> =
            more[20_000..20_064].iter().map(|c| (c, 1)).collect();
        assert_eq!(
            store::clocks::update_many(&mut tx, &changed).await.unwrap(),
            64
        );
        assert_eq!(
            minqing_kit::testing::seq_scans(&mut tx, "clocks").await,
            before,
            "the batch scanned the table"
        );
        tx.rollback().await.unwrap();
        db.close().await;
    }

    /// A batch's replacement of its cases' timers, and the timer worker's write of the clocks
    /// that fired, read grown tables by key, however small they were when each statement first
    /// ran on the connection. PostgreSQL is made to keep the plan it makes for all values (a
    /// generic plan, which it may also choose by itself after five runs): the plan for the
    /// small `clocks` table joins by scanning it, and would scan it still once it has grown.
    #[tokio::test]
    async fn timers_replaced_and_fired_clocks_written_read_grown_tables_by_key_on_postgres() {
        let Some((_test_db, db, _ctx, now)) = grown_table_store().await else {
            return;
        };
        let made = |from: usize, to: usize| stored_clocks(now, from, to);
        let timers = |clocks: &[crate::clock::Clock]| -> Vec<crate::clock::Timer> {
            (clocks.iter().enumerate())
                .map(|(i, c)| crate::clock::Timer {
                    id: i64::try_from(i).unwrap() + 1,
                    case_id: c.case_id.clone(),
                    kind: crate::clock::TimerKind::Warning,
                    step: 0,
                    fire: now,
                })
                .collect()
        };
        let ids = |clocks: &[crate::clock::Clock]| -> Vec<String> {
            clocks.iter().map(|c| c.case_id.clone()).collect()
        };
        let mut tx = db.begin().await.unwrap();
        let first = made(0, 100);
        store::clocks::insert_new(&mut tx, &first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        store::clocks::replace_timers(&mut tx, &ids(&first), &timers(&first))
            .await
            .unwrap();
        sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
            .execute(tx.conn())
            .await
            .unwrap();
        let mut fired = first[..64].to_vec();
        for _ in 0..8 {
            store::clocks::replace_timers(&mut tx, &ids(&fired), &timers(&fired))
                .await
                .unwrap();
            assert_eq!(
                store::clocks::save_fired(&mut tx, &mut fired)
                    .await
                    .unwrap(),
                64
            );
            // Back at version 1, so that the next run writes them again.
            for c in &mut fired {
                c.version = 1;
            }
            sqlx::query("UPDATE clocks SET version = 1")
                .execute(tx.conn())
                .await
                .unwrap();
        }
        let all = made(0, 40_000);
        store::clocks::insert_new(&mut tx, &all[100..].iter().collect::<Vec<_>>())
            .await
            .unwrap();
        store::clocks::replace_timers(&mut tx, &ids(&all[100..]), &timers(&all)[100..])
            .await
            .unwrap();

        let mut fired = all[20_000..20_064].to_vec();
        let before = minqing_kit::testing::seq_scans(&mut tx, "timers").await;
        store::clocks::replace_timers(&mut tx, &ids(&fired), &timers(&all)[20_000..20_064])
            .await
            .unwrap();
        assert_eq!(
            minqing_kit::testing::seq_scans(&mut tx, "timers").await,
            before,
            "replacing the timers scanned the table"
        );
        let before = minqing_kit::testing::seq_scans(&mut tx, "clocks").await;
        assert_eq!(
            store::clocks::save_fired(&mut tx, &mut fired)
                .await
                .unwrap(),
            64
        );
        assert_eq!(
            minqing_kit::testing::seq_scans(&mut tx, "clocks").await,
            before,
            "writing the fired clocks scanned the table"
        );
        tx.rollback().await.unwrap();
        db.close().await;
    }
}
