//! How a case's route changes: handing it to a unit, ending an assignment, and writing the
//! route with its events and desk items in the caller's transaction.
//!
//! A change is made in memory first — the route, its assignments, and a list of what to tell
//! ([`Emit`]) — and then [`finish`] writes the route at the version it was read (a concurrent
//! change makes it fail with [`FlowError::Conflict`], and the caller retries from the start),
//! followed by every event and desk item built from the route as it finally stands.

use prost::Message;

use crate::{
    app::App,
    convert,
    domain::{
        Assignment, AssignmentState, CaseFacts, Contact, Decision, Disposition, Escalation,
        ProgressNote, Referral, Route, RouteState, Unit,
    },
    knowledge::Knowledge,
    rules::Outcome,
    store,
};
use minqing_kit::{
    db::Tx,
    error::StoreError,
    feed::{self, EventMeta, EventRow},
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::routing::v1 as pb;

/// What went wrong with a change.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The route changed since it was read: retry.
    #[error("the case changed meanwhile")]
    Conflict,
}

/// Who coordinates after a new assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coordination {
    /// The coordinating unit stays.
    Keep,
    /// The new unit takes over (a transfer, or the coordinator's own rejection).
    Take,
    /// A new route: the decision's coordinator, else the unit.
    First,
}

/// What to tell once the route is written.
#[derive(Debug, Clone)]
pub enum Emit {
    /// `CaseRouted`.
    Routed {
        /// The new assignment.
        assignment: Assignment,
        /// Why.
        cause: pb::RouteCause,
        /// The unit before.
        previous_unit: String,
    },
    /// `AssignmentAccepted`.
    Accepted(Assignment, String),
    /// `AssignmentRejected`.
    Rejected(Assignment, String),
    /// `AssignmentAcceptanceOverdue`.
    Overdue(Assignment),
    /// `AssignmentProgressed`.
    Progressed(Assignment, ProgressNote),
    /// `AssignmentResolved`.
    Resolved(Assignment, bool),
    /// `SupplementRequested`.
    SupplementRequested(Assignment, Vec<String>, String),
    /// `CaseResumed`.
    Resumed(Assignment),
    /// `CaseEscalated`.
    Escalated,
    /// `EscalationApproved` or `EscalationRefused`.
    EscalationDecided,
    /// `CaseReferred`.
    Referred,
    /// `CaseTransferred`.
    Transferred {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Why.
        reason: String,
        /// A transfer (true) or a reassignment.
        handed_over: bool,
    },
    /// `RoutingCancelled`.
    Cancelled(String),
    /// An item on a unit's desk.
    Desk(Assignment, pb::DeskItemKind, String),
}

/// A route for a newly submitted case, before its first assignment.
pub fn new_route(facts: CaseFacts, contact: Option<Contact>, now: Micros) -> Route {
    Route {
        case_id: facts.case_id.clone(),
        facts,
        contact,
        state: RouteState::Assigned,
        disposition: Disposition::Committed,
        handling_unit: String::new(),
        handling_unit_display_name: String::new(),
        coordinating_unit: String::new(),
        coordinating_unit_display_name: String::new(),
        current_assignment: String::new(),
        due_time: None,
        time_limit_working_days: 0,
        clock_start_time: None,
        missing_documents: Vec::new(),
        escalation: None,
        referral: None,
        emergency_line: None,
        decision: Decision {
            rule: String::new(),
            disposition: Disposition::Committed,
            unit: String::new(),
            unit_display_name: String::new(),
            due_time: None,
            time_limit_working_days: 0,
            reason: String::new(),
            steps: Vec::new(),
            fell_back: false,
            missing_documents: Vec::new(),
            approver: String::new(),
            referral_reason: String::new(),
            competent_body: String::new(),
            emergency_line: None,
            rule_set_version: String::new(),
            decide_time: now,
            matched_rules: Vec::new(),
            coordinator: String::new(),
        },
        result: String::new(),
        route_count: 0,
        refused_by: Vec::new(),
        create_time: now,
        update_time: now,
        version: 0,
    }
}

/// Ends the case's open assignment (if any) in `state`, telling its unit the case was taken.
pub async fn end_current(
    tx: &mut Tx,
    route: &Route,
    state: AssignmentState,
    reason: &str,
    now: Micros,
    emits: &mut Vec<Emit>,
) -> Result<Option<Assignment>, FlowError> {
    if route.current_assignment.is_empty() {
        return Ok(None);
    }
    let Some(mut a) = store::get_assignment(tx.conn(), &route.current_assignment).await? else {
        return Ok(None);
    };
    if !a.state.is_open() {
        return Ok(Some(a));
    }
    a.state = state;
    a.end_time = Some(now);
    a.end_reason = reason.to_string();
    a.version += 1;
    store::update_assignment(tx, &a).await?;
    emits.push(Emit::Desk(
        a.clone(),
        pb::DeskItemKind::Revoked,
        format!("taken from this unit: {reason}"),
    ));
    Ok(Some(a))
}

/// Hands the case to the unit `outcome` decided: creates units it needs, makes the
/// assignment, and sets the route's disposition, units, deadline and state.
#[allow(clippy::too_many_arguments)]
pub async fn assign(
    app: &App,
    tx: &mut Tx,
    route: &mut Route,
    outcome: Outcome,
    coordination: Coordination,
    cause: pb::RouteCause,
    previous_unit: &str,
    now: Micros,
    meta: &EventMeta,
    emits: &mut Vec<Emit>,
) -> Result<Assignment, FlowError> {
    let mut unit_events = Vec::new();
    let assignment = prepare_assignment(
        app,
        tx,
        route,
        outcome,
        coordination,
        cause,
        previous_unit,
        now,
        meta,
        emits,
        &mut unit_events,
    )
    .await?;
    feed::append_rows(tx, unit_events).await?;
    store::insert_assignment(tx, &assignment).await?;
    Ok(assignment)
}

/// [`assign`] without writing the assignment or the events of the units created (these are
/// pushed on `unit_events`, in order): for callers that write a whole batch at once
/// ([`Writes`]). Units the decision needs are created at once, so a later case of the same
/// batch finds them.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_assignment(
    app: &App,
    tx: &mut Tx,
    route: &mut Route,
    outcome: Outcome,
    coordination: Coordination,
    cause: pb::RouteCause,
    previous_unit: &str,
    now: Micros,
    meta: &EventMeta,
    emits: &mut Vec<Emit>,
    unit_events: &mut Vec<EventRow>,
) -> Result<Assignment, FlowError> {
    let mut created_any = false;
    for mut unit in outcome.create {
        unit.create_time = now;
        unit.update_time = now;
        if store::insert_unit(tx, &unit).await? {
            let event = pb::UnitChanged {
                unit: Some(convert::unit(&unit)),
                created: true,
            };
            unit_events.push(EventRow::new(meta, &unit.name(), &event, now));
            created_any = true;
        }
    }
    if created_any {
        app.directory_changed.notify_one();
    }
    let d = outcome.decision;
    let directory = app.directory.current();
    let unit: Option<Unit> = directory.get(&d.unit).map(|u| (**u).clone());
    let window = unit
        .as_ref()
        .map(|u| u.acceptance_window_minutes)
        .filter(|w| *w > 0)
        .unwrap_or(app.config.default_acceptance_window_minutes);
    let shows_contact = unit.as_ref().is_some_and(|u| u.needs_reporter_contact);
    let assignment = Assignment {
        id: uuid::Uuid::now_v7().to_string(),
        case_id: route.case_id.clone(),
        unit: d.unit.clone(),
        unit_display_name: d.unit_display_name.clone(),
        disposition: d.disposition,
        state: AssignmentState::Pending,
        due_time: d.due_time,
        accept_by: now + i64::from(window) * 60_000_000,
        decision: d.clone(),
        create_time: now,
        accept_time: None,
        end_time: None,
        end_reason: String::new(),
        result: String::new(),
        evidence: Vec::new(),
        progress: Vec::new(),
        missing_documents: d.missing_documents.clone(),
        acceptance_overdue: false,
        shows_contact,
        version: 1,
    };

    match coordination {
        Coordination::Keep if !route.coordinating_unit.is_empty() => {}
        Coordination::First if !d.coordinator.is_empty() => {
            route.coordinating_unit = d.coordinator.clone();
            route.coordinating_unit_display_name = directory
                .get(&d.coordinator)
                .map(|u| u.display_name.clone())
                .unwrap_or_else(|| d.coordinator.clone());
        }
        _ => {
            route.coordinating_unit = d.unit.clone();
            route.coordinating_unit_display_name = d.unit_display_name.clone();
        }
    }
    route.handling_unit = d.unit.clone();
    route.handling_unit_display_name = d.unit_display_name.clone();
    route.current_assignment = assignment.id.clone();
    route.disposition = d.disposition;
    route.due_time = d.due_time;
    route.time_limit_working_days = d.time_limit_working_days;
    route.clock_start_time = d.due_time.map(|_| now);
    route.missing_documents = d.missing_documents.clone();
    route.emergency_line = d.emergency_line;
    route.route_count += 1;
    route.state = match d.disposition {
        Disposition::Supplement => RouteState::AwaitingPapers,
        Disposition::Escalated => RouteState::AwaitingApproval,
        Disposition::Referred => RouteState::Referred,
        Disposition::Emergency => RouteState::Emergency,
        Disposition::Immediate | Disposition::Committed => RouteState::Assigned,
    };
    if d.disposition == Disposition::Escalated {
        route.escalation = Some(Escalation {
            approver: d.approver.clone(),
            approver_display_name: directory
                .get(&d.approver)
                .map(|u| u.display_name.clone())
                .unwrap_or_default(),
            reason: d.reason.clone(),
            requested_by: if d.rule.is_empty() {
                meta.actor.clone()
            } else {
                format!("rule {}", d.rule)
            },
            request_time: now,
            ..Default::default()
        });
    }
    if d.disposition == Disposition::Referred {
        route.referral = Some(Referral {
            unit: if d.competent_body == d.unit_display_name || d.rule.is_empty() {
                d.unit.clone()
            } else {
                String::new()
            },
            competent_body: d.competent_body.clone(),
            reason: d.referral_reason.clone(),
            refer_time: now,
        });
    }
    route.decision = d;
    let note = if route.decision.rule.is_empty() {
        route.decision.reason.clone()
    } else {
        format!("routed by rule {}", route.decision.rule)
    };
    emits.push(Emit::Desk(
        assignment.clone(),
        pb::DeskItemKind::Assigned,
        note,
    ));
    emits.push(Emit::Routed {
        assignment: assignment.clone(),
        cause,
        previous_unit: previous_unit.to_string(),
    });
    match route.disposition {
        Disposition::Escalated => emits.push(Emit::Escalated),
        Disposition::Referred => emits.push(Emit::Referred),
        _ => {}
    }
    Ok(assignment)
}

/// Writes the route (inserting it when `expected_version` is `None`), then every event and
/// desk item of `emits`, built from the route as it now stands.
pub async fn finish(
    tx: &mut Tx,
    route: &mut Route,
    expected_version: Option<i64>,
    emits: Vec<Emit>,
    now: Micros,
    meta: &EventMeta,
) -> Result<(), FlowError> {
    route.update_time = now;
    route.version += 1;
    let written = match expected_version {
        None => store::insert_route(tx, route).await?,
        Some(v) => store::update_route(tx, route, v).await?,
    };
    if !written {
        return Err(FlowError::Conflict);
    }
    let mut writes = Writes::default();
    writes.tell(route, emits, now, meta);
    writes.flush(tx).await
}

/// Writes put off to be made for a whole batch at once, a multi-row statement per table
/// instead of a round trip per row: the dispatcher routes every new case of a batch of
/// intake's events into one of these and flushes it once. Rows keep the order they were
/// pushed in, so the feed and the desks read exactly as if each case had been written alone.
#[derive(Debug, Default)]
pub struct Writes {
    /// Assignments to insert.
    pub assignments: Vec<Assignment>,
    /// New routes to insert.
    pub routes: Vec<Route>,
    /// Desk items to append.
    pub desk: Vec<store::NewDeskItem>,
    /// Events to append.
    pub events: Vec<EventRow>,
}

impl Writes {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty()
            && self.routes.is_empty()
            && self.desk.is_empty()
            && self.events.is_empty()
    }

    /// A new case's route, to be inserted with every event and desk item of `emits` (as
    /// [`finish`] does with `expected_version` `None`). `route`'s first assignment must be in
    /// [`Writes::assignments`] already.
    pub fn finish_new(
        &mut self,
        mut route: Route,
        emits: Vec<Emit>,
        now: Micros,
        meta: &EventMeta,
    ) {
        route.update_time = now;
        route.version += 1;
        self.tell(&route, emits, now, meta);
        self.routes.push(route);
    }

    /// Makes the events and desk items of `emits`, built from `route` as it stands.
    pub fn tell(&mut self, route: &Route, emits: Vec<Emit>, now: Micros, meta: &EventMeta) {
        let subject = route.case_name();
        let wire = convert::route(route, Vec::new());
        let facts = &route.facts;
        let contact = route.contact.as_ref();
        // Events carry the route with its facts once; the assignments and decisions inside
        // leave them out (see events.proto).
        let a = |x: &Assignment| {
            let mut w = convert::assignment(x, facts, None);
            w.facts = None;
            w.decision = None;
            w
        };
        for emit in emits {
            match emit {
                Emit::Desk(assignment, kind, note) => {
                    self.desk.push(store::NewDeskItem {
                        payload: convert::assignment(&assignment, facts, contact).encode_to_vec(),
                        unit: assignment.unit,
                        kind: kind as i32,
                        note,
                        create_time: now,
                    });
                }
                Emit::Routed {
                    assignment,
                    cause,
                    previous_unit,
                } => {
                    let event = pb::CaseRouted {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        cause: cause as i32,
                        previous_unit: if previous_unit.is_empty() {
                            String::new()
                        } else {
                            format!("units/{previous_unit}")
                        },
                        volunteer_suitable: facts.volunteer_suitable,
                        category: facts.category.clone(),
                        place_codes: facts.place.codes().map(str::to_owned).collect(),
                        title: facts.title.clone(),
                        description: facts.description.clone(),
                        case: subject.clone(),
                        disposition: assignment.disposition.wire(),
                        unit: format!("units/{}", assignment.unit),
                        due_time: assignment.due_time.map(to_timestamp),
                        time_limit_working_days: assignment.decision.time_limit_working_days,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Accepted(assignment, note) => {
                    let event = pb::AssignmentAccepted {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        note,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Rejected(assignment, reason) => {
                    let event = pb::AssignmentRejected {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        reason,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Overdue(assignment) => {
                    let event = pb::AssignmentAcceptanceOverdue {
                        route: Some(wire.clone()),
                        accept_by: Some(to_timestamp(assignment.accept_by)),
                        assignment: Some(a(&assignment)),
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Progressed(assignment, note) => {
                    let event = pb::AssignmentProgressed {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        progress: Some(pb::ProgressNote {
                            note: note.note.clone(),
                            attachments: convert::attachments(&note.attachments),
                            time: Some(to_timestamp(note.time)),
                            actor: note.actor.clone(),
                        }),
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Resolved(assignment, on_time) => {
                    let event = pb::AssignmentResolved {
                        route: Some(wire.clone()),
                        result: assignment.result.clone(),
                        evidence: convert::attachments(&assignment.evidence),
                        assignment: Some(a(&assignment)),
                        on_time,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::SupplementRequested(assignment, documents, note) => {
                    let event = pb::SupplementRequested {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        documents,
                        note,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Resumed(assignment) => {
                    let event = pb::CaseResumed {
                        route: Some(wire.clone()),
                        assignment: Some(a(&assignment)),
                        due_time: route.due_time.map(to_timestamp),
                        time_limit_working_days: route.time_limit_working_days,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Escalated => {
                    let e = route.escalation.clone().unwrap_or_default();
                    let event = pb::CaseEscalated {
                        route: Some(wire.clone()),
                        escalation: Some(convert::escalation(&e)),
                        case: subject.clone(),
                        approver: if e.approver.is_empty() {
                            String::new()
                        } else {
                            format!("units/{}", e.approver)
                        },
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::EscalationDecided => {
                    let e = route.escalation.clone().unwrap_or_default();
                    let answering_unit = format!("units/{}", route.handling_unit);
                    if e.approved {
                        let event = pb::EscalationApproved {
                            route: Some(wire.clone()),
                            escalation: Some(convert::escalation(&e)),
                            case: subject.clone(),
                            approve_time: e.decide_time.map(to_timestamp),
                            answer_due_time: e.answer_due_time.map(to_timestamp),
                            answer_time_limit_working_days: 3,
                            answering_unit,
                        };
                        self.events.push(EventRow::new(meta, &subject, &event, now));
                    } else {
                        let event = pb::EscalationRefused {
                            route: Some(wire.clone()),
                            escalation: Some(convert::escalation(&e)),
                            case: subject.clone(),
                            refuse_time: e.decide_time.map(to_timestamp),
                            answer_due_time: e.answer_due_time.map(to_timestamp),
                            reason: e.decision_note.clone(),
                            answering_unit,
                        };
                        self.events.push(EventRow::new(meta, &subject, &event, now));
                    }
                }
                Emit::Referred => {
                    let r = route.referral.clone().unwrap_or_default();
                    let event = pb::CaseReferred {
                        route: Some(wire.clone()),
                        referral: Some(convert::referral(&r)),
                        case: subject.clone(),
                        due_time: route.due_time.map(to_timestamp),
                        time_limit_working_days: route.time_limit_working_days,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Transferred {
                    from,
                    to,
                    reason,
                    handed_over,
                } => {
                    let event = pb::CaseTransferred {
                        route: Some(wire.clone()),
                        from_unit: format!("units/{from}"),
                        to_unit: format!("units/{to}"),
                        reason,
                        responsibility_handed_over: handed_over,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
                Emit::Cancelled(reason) => {
                    let event = pb::RoutingCancelled {
                        route: Some(wire.clone()),
                        reason,
                    };
                    self.events.push(EventRow::new(meta, &subject, &event, now));
                }
            }
        }
    }

    /// Writes everything waiting, in `tx`, and empties the buffer. A route whose case was
    /// routed meanwhile makes it fail with [`FlowError::Conflict`].
    pub async fn flush(&mut self, tx: &mut Tx) -> Result<(), FlowError> {
        let Writes {
            assignments,
            routes,
            desk,
            events,
        } = std::mem::take(self);
        let started = std::time::Instant::now();
        let counts = (assignments.len(), routes.len(), desk.len(), events.len());
        store::insert_assignments(tx, &assignments).await?;
        let t1 = started.elapsed();
        if store::insert_routes(tx, &routes).await? != routes.len() as u64 {
            return Err(FlowError::Conflict);
        }
        let t2 = started.elapsed();
        store::append_desk_items(tx, desk).await?;
        let t3 = started.elapsed();
        feed::append_rows(tx, events).await?;
        if counts.1 > 1 {
            tracing::debug!(
                assignments = counts.0,
                routes = counts.1,
                desk_items = counts.2,
                events = counts.3,
                assignments_micros = t1.as_micros() as u64,
                routes_micros = (t2 - t1).as_micros() as u64,
                desk_micros = (t3 - t2).as_micros() as u64,
                events_micros = (started.elapsed() - t3).as_micros() as u64,
                "wrote a batch"
            );
        }
        Ok(())
    }
}

/// A staff decision (transfer, reassignment, referral): no rule, the unit given, the deadline
/// in force kept unless the disposition changes.
pub fn staff_decision(
    route: &Route,
    unit: &Unit,
    disposition: Disposition,
    reason: &str,
    knowledge: &Knowledge,
    app: &App,
    now: Micros,
) -> Decision {
    let (due_time, limit) = if disposition == route.disposition && route.due_time.is_some() {
        (route.due_time, route.time_limit_working_days)
    } else {
        let limit = match disposition {
            Disposition::Immediate | Disposition::Emergency => 0,
            _ => knowledge
                .items
                .get(&route.facts.category)
                .map_or(app.config.default_time_limit_working_days, |i| {
                    i.time_limit_working_days
                }),
        };
        let due = match disposition {
            Disposition::Supplement | Disposition::Escalated => None,
            _ => Some(app.local.add_working_days(now, limit)),
        };
        (due, limit as i32)
    };
    Decision {
        rule: String::new(),
        disposition,
        unit: unit.id.clone(),
        unit_display_name: unit.display_name.clone(),
        due_time,
        time_limit_working_days: limit,
        reason: reason.to_string(),
        steps: vec![crate::domain::Step {
            text: reason.to_string(),
            rule: String::new(),
            unit: unit.id.clone(),
        }],
        fell_back: false,
        missing_documents: route.missing_documents.clone(),
        approver: route
            .escalation
            .as_ref()
            .map(|e| e.approver.clone())
            .unwrap_or_default(),
        referral_reason: String::new(),
        competent_body: String::new(),
        emergency_line: None,
        rule_set_version: String::new(),
        decide_time: now,
        matched_rules: Vec::new(),
        coordinator: String::new(),
    }
}
