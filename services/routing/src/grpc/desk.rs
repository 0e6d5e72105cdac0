//! `minqing.routing.v1.UnitDesk`: a unit's stream of its assignments and what it does with
//! them. The stream is the kit's feed pattern filtered to one unit: items are written with
//! the change that makes them (in the same transaction), read in commit order without skips,
//! and followed live on the database's commit signal.

use std::{sync::Arc, time::Duration};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{RETRIES, flow_status, knowledge_status, validate};
use crate::{
    app::App,
    convert,
    domain::{Assignment, AssignmentState, Disposition, ProgressNote, Route, RouteState},
    flow::{self, Coordination, Emit, FlowError},
    store,
};
use minqing_kit::{
    auth::{Principal, Role, caller},
    db::{Db, Tx},
    error::{FieldViolations, failed_precondition, invalid_field, not_found, permission_denied},
    feed::{Cursor, EventMeta},
    time::{Micros, to_timestamp},
};
use minqing_proto::minqing::routing::v1 as pb;

/// Look anyway this often when no commit signal arrives.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Items waiting behind an older running transaction: look again after this.
const HELD_BACK_RETRY: Duration = Duration::from_millis(3);
/// An empty response this often while nothing happens, so idle connections stay open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Roles that may work a desk (with a token scoped to the unit).
const DESK_ROLES: &[Role] = &[
    Role::PartnerUnit,
    Role::CommunityStaff,
    Role::GridWorker,
    Role::WindowStaff,
    Role::DistrictSystem,
];

/// `minqing.routing.v1.UnitDesk`.
#[derive(Debug, Clone)]
pub struct DeskApi {
    /// Shared state.
    pub app: Arc<App>,
    /// Ends open streams on shutdown.
    pub shutdown: CancellationToken,
}

/// The unit a desk call acts for: the token's own, or (for the city admin) the one named.
fn desk_unit(principal: &Principal, requested: &str) -> Result<String, Status> {
    principal.require(DESK_ROLES)?;
    let mut v = FieldViolations::new();
    let named = if requested.is_empty() {
        None
    } else {
        validate::name(&mut v, "unit", "units", requested)
    };
    v.finish()?;
    match (&principal.unit_scope, named) {
        (Some(own), None) => Ok(own.clone()),
        (Some(own), Some(n)) if own == &n => Ok(n),
        (None, Some(n)) if principal.role == Role::CityAdmin => Ok(n),
        (None, None) if principal.role == Role::CityAdmin => {
            Err(invalid_field("unit", "the city admin must name the unit"))
        }
        _ => Err(permission_denied(
            "NOT_YOUR_UNIT",
            "a desk serves only the unit its token is scoped to",
        )),
    }
}

/// PERMISSION_DENIED unless the caller speaks for `unit` (or is the city admin).
fn check_own(principal: &Principal, a: &Assignment) -> Result<(), Status> {
    principal.require(DESK_ROLES)?;
    if principal.role == Role::CityAdmin || principal.unit_scope.as_deref() == Some(a.unit.as_str())
    {
        Ok(())
    } else {
        Err(permission_denied(
            "NOT_YOUR_ASSIGNMENT",
            format!("{} is not your unit's assignment", a.name()),
        ))
    }
}

fn assignment_id(name: &str) -> Result<String, Status> {
    let mut v = FieldViolations::new();
    let id = validate::uuid_name(&mut v, "name", "assignments", name);
    v.finish()?;
    Ok(id.unwrap_or_default())
}

struct Loaded {
    tx: Tx,
    route: Route,
    version: i64,
    a: Assignment,
    now: Micros,
}

/// Reads the caller's assignment and its route in a write transaction.
async fn load(app: &App, principal: &Principal, id: &str, name: &str) -> Result<Loaded, Status> {
    let now = app.clock.now_micros();
    let mut tx = app.db.begin().await?;
    let a = store::get_assignment(tx.conn(), id)
        .await?
        .ok_or_else(|| not_found("assignment", name))?;
    check_own(principal, &a)?;
    let route = store::get_route(tx.conn(), &a.case_id)
        .await?
        .ok_or_else(|| not_found("case route", &format!("cases/{}", a.case_id)))?;
    Ok(Loaded {
        tx,
        version: route.version,
        route,
        a,
        now,
    })
}

fn must_be_open(l: &Loaded, name: &str) -> Result<(), Status> {
    if l.a.state.is_open() && l.route.current_assignment == l.a.id {
        Ok(())
    } else {
        Err(failed_precondition(
            "ASSIGNMENT_CLOSED",
            name,
            format!(
                "the assignment is {}; nothing more can be done with it",
                l.a.state.slug()
            ),
        ))
    }
}

fn shown(a: &Assignment, route: &Route) -> pb::Assignment {
    convert::assignment(a, &route.facts, route.contact.as_ref())
}

/// Writes the change; `None` when the case changed meanwhile (retry).
async fn save(
    mut l: Loaded,
    emits: Vec<Emit>,
    meta: &EventMeta,
) -> Result<Option<pb::Assignment>, Status> {
    let id = l.a.id.clone();
    match flow::finish(&mut l.tx, &mut l.route, Some(l.version), emits, l.now, meta).await {
        Ok(()) => {
            let a = store::get_assignment(l.tx.conn(), &id)
                .await?
                .unwrap_or(l.a);
            l.tx.commit().await?;
            Ok(Some(shown(&a, &l.route)))
        }
        Err(FlowError::Conflict) => Ok(None),
        Err(e) => Err(flow_status(e)),
    }
}

fn kept_changing() -> Status {
    Status::aborted("the case kept changing; retry")
}

#[tonic::async_trait]
impl pb::unit_desk_server::UnitDesk for DeskApi {
    type PullAssignmentsStream = ReceiverStream<Result<pb::PullAssignmentsResponse, Status>>;

    async fn pull_assignments(
        &self,
        request: Request<pb::PullAssignmentsRequest>,
    ) -> Result<Response<Self::PullAssignmentsStream>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let unit = desk_unit(&principal, &req.unit)?;
        let mut v = FieldViolations::new();
        v.check(
            !(0..=500).contains(&req.max_batch),
            "max_batch",
            "must be 0 to 500",
        );
        let after = if req.after.is_empty() {
            store::desk_cursor(&self.app.db, &unit)
                .await?
                .unwrap_or_default()
        } else {
            req.after.clone()
        };
        let cursor = Cursor::parse(&after);
        v.check(
            cursor.is_none(),
            "after",
            "not a cursor from this unit's stream",
        );
        v.finish()?;
        let max = if req.max_batch == 0 {
            100
        } else {
            i64::from(req.max_batch)
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(follow(
            self.app.db.clone(),
            unit,
            cursor.unwrap_or_default(),
            max,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn acknowledge_assignments(
        &self,
        request: Request<pb::AcknowledgeAssignmentsRequest>,
    ) -> Result<Response<pb::AcknowledgeAssignmentsResponse>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let unit = desk_unit(&principal, &req.unit)?;
        if req.cursor.is_empty() || Cursor::parse(&req.cursor).is_none() {
            return Err(invalid_field("cursor", "a cursor from this unit's stream"));
        }
        let mut tx = self.app.db.begin().await?;
        store::save_desk_cursor(&mut tx, &unit, &req.cursor, self.app.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(Response::new(pb::AcknowledgeAssignmentsResponse {
            cursor: req.cursor,
        }))
    }

    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let name = request.into_inner().name;
        let id = assignment_id(&name)?;
        let a = store::get_assignment(self.app.db.pool(), &id)
            .await?
            .ok_or_else(|| not_found("assignment", &name))?;
        check_own(&principal, &a)?;
        let route = store::get_route(self.app.db.pool(), &a.case_id)
            .await?
            .ok_or_else(|| not_found("case route", &a.case_id))?;
        Ok(Response::new(shown(&a, &route)))
    }

    async fn accept_assignment(
        &self,
        request: Request<pb::AcceptAssignmentRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let id = assignment_id(&req.name)?;
        let mut v = FieldViolations::new();
        let note = validate::text(&mut v, "note", &req.note, 0, 1000, true);
        v.finish()?;
        let meta = EventMeta::current(principal.actor());
        for _ in 0..RETRIES {
            let mut l = load(&self.app, &principal, &id, &req.name).await?;
            if l.a.accept_time.is_some() && l.a.state.is_open() {
                return Ok(Response::new(shown(&l.a, &l.route)));
            }
            must_be_open(&l, &req.name)?;
            l.a.accept_time = Some(l.now);
            if l.a.state == AssignmentState::Pending {
                l.a.state = AssignmentState::Accepted;
            }
            l.a.version += 1;
            store::update_assignment(&mut l.tx, &l.a).await?;
            if l.route.state == RouteState::Assigned {
                l.route.state = RouteState::InProgress;
            }
            let emits = vec![
                Emit::Desk(l.a.clone(), pb::DeskItemKind::Updated, "accepted".into()),
                Emit::Accepted(l.a.clone(), note.clone()),
            ];
            if let Some(a) = save(l, emits, &meta).await? {
                return Ok(Response::new(a));
            }
        }
        Err(kept_changing())
    }

    async fn reject_assignment(
        &self,
        request: Request<pb::RejectAssignmentRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let id = assignment_id(&req.name)?;
        let mut v = FieldViolations::new();
        let reason = validate::text(&mut v, "reason", &req.reason, 1, 2000, true);
        v.finish()?;
        let k = self.app.knowledge.get().await.map_err(knowledge_status)?;
        let meta = EventMeta::current(principal.actor());
        for _ in 0..RETRIES {
            let mut l = load(&self.app, &principal, &id, &req.name).await?;
            must_be_open(&l, &req.name)?;
            let unit = l.a.unit.clone();
            let mut emits = Vec::new();
            let rejected = flow::end_current(
                &mut l.tx,
                &l.route,
                AssignmentState::Rejected,
                &reason,
                l.now,
                &mut emits,
            )
            .await
            .map_err(flow_status)?
            .unwrap_or_else(|| l.a.clone());
            emits.push(Emit::Rejected(rejected, reason.clone()));
            if !l.route.refused_by.contains(&unit) {
                l.route.refused_by.push(unit.clone());
            }
            // Routed again by the rules, never to a unit that refused it; the coordinator's
            // own refusal hands coordination on.
            let outcome = self
                .app
                .decide(&l.route.facts, &l.route.refused_by, &k, l.now);
            let coordination = if l.route.coordinating_unit == unit {
                Coordination::Take
            } else {
                Coordination::Keep
            };
            flow::assign(
                &self.app,
                &mut l.tx,
                &mut l.route,
                outcome,
                coordination,
                pb::RouteCause::Rejected,
                &unit,
                l.now,
                &meta,
                &mut emits,
            )
            .await
            .map_err(flow_status)?;
            if let Some(a) = save(l, emits, &meta).await? {
                return Ok(Response::new(a));
            }
        }
        Err(kept_changing())
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let id = assignment_id(&req.name)?;
        let mut v = FieldViolations::new();
        let note = validate::text(&mut v, "note", &req.note, 1, 4000, true);
        let attachments = validate::attachments(&mut v, "attachments", &req.attachments);
        v.finish()?;
        let meta = EventMeta::current(principal.actor());
        for _ in 0..RETRIES {
            let mut l = load(&self.app, &principal, &id, &req.name).await?;
            must_be_open(&l, &req.name)?;
            if l.a.accept_time.is_none() {
                return Err(failed_precondition(
                    "NOT_ACCEPTED",
                    &req.name,
                    "accept the assignment before reporting progress",
                ));
            }
            let p = ProgressNote {
                note: note.clone(),
                attachments: attachments.clone(),
                time: l.now,
                actor: l.a.unit_display_name.clone(),
            };
            l.a.progress.push(p.clone());
            l.a.version += 1;
            store::update_assignment(&mut l.tx, &l.a).await?;
            let emits = vec![
                Emit::Desk(
                    l.a.clone(),
                    pb::DeskItemKind::Updated,
                    "progress recorded".into(),
                ),
                Emit::Progressed(l.a.clone(), p),
            ];
            if let Some(a) = save(l, emits, &meta).await? {
                return Ok(Response::new(a));
            }
        }
        Err(kept_changing())
    }

    async fn resolve_assignment(
        &self,
        request: Request<pb::ResolveAssignmentRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let id = assignment_id(&req.name)?;
        let mut v = FieldViolations::new();
        let result = validate::text(&mut v, "result", &req.result, 1, 4000, true);
        let evidence = validate::attachments(&mut v, "evidence", &req.evidence);
        v.finish()?;
        let meta = EventMeta::current(principal.actor());
        for _ in 0..RETRIES {
            let mut l = load(&self.app, &principal, &id, &req.name).await?;
            if l.a.state == AssignmentState::Resolved && l.a.result == result {
                return Ok(Response::new(shown(&l.a, &l.route)));
            }
            must_be_open(&l, &req.name)?;
            if l.a.accept_time.is_none() {
                return Err(failed_precondition(
                    "NOT_ACCEPTED",
                    &req.name,
                    "accept the assignment before resolving it",
                ));
            }
            match l.route.state {
                RouteState::AwaitingPapers => {
                    return Err(failed_precondition(
                        "AWAITING_PAPERS",
                        &req.name,
                        "the papers asked for have not arrived",
                    ));
                }
                RouteState::AwaitingApproval => {
                    return Err(failed_precondition(
                        "AWAITING_APPROVAL",
                        &req.name,
                        "the escalation has not been decided",
                    ));
                }
                _ => {}
            }
            let on_time = l.route.due_time.is_none_or(|d| l.now <= d);
            l.a.state = AssignmentState::Resolved;
            l.a.end_time = Some(l.now);
            l.a.result = result.clone();
            l.a.evidence = evidence.clone();
            l.a.version += 1;
            store::update_assignment(&mut l.tx, &l.a).await?;
            l.route.state = RouteState::Resolved;
            l.route.result = result.clone();
            let emits = vec![
                Emit::Desk(l.a.clone(), pb::DeskItemKind::Updated, "resolved".into()),
                Emit::Resolved(l.a.clone(), on_time),
            ];
            if let Some(a) = save(l, emits, &meta).await? {
                return Ok(Response::new(a));
            }
        }
        Err(kept_changing())
    }

    async fn request_papers(
        &self,
        request: Request<pb::RequestPapersRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let principal = caller(&request)?.clone();
        let req = request.into_inner();
        let id = assignment_id(&req.name)?;
        let mut v = FieldViolations::new();
        v.check(
            req.documents.is_empty() || req.documents.len() > 20,
            "documents",
            "1 to 20 documents",
        );
        let documents: Vec<String> = req
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| validate::text(&mut v, &format!("documents[{i}]"), d, 1, 200, false))
            .collect();
        let note = validate::text(&mut v, "note", &req.note, 0, 1000, true);
        v.finish()?;
        let meta = EventMeta::current(principal.actor());
        for _ in 0..RETRIES {
            let mut l = load(&self.app, &principal, &id, &req.name).await?;
            must_be_open(&l, &req.name)?;
            if !matches!(
                l.route.state,
                RouteState::Assigned | RouteState::InProgress | RouteState::AwaitingPapers
            ) {
                return Err(failed_precondition(
                    "WRONG_STATE",
                    &req.name,
                    format!(
                        "papers cannot be asked for while the case is {}",
                        l.route.state.slug()
                    ),
                ));
            }
            l.a.state = AssignmentState::AwaitingPapers;
            l.a.disposition = Disposition::Supplement;
            l.a.missing_documents = documents.clone();
            l.a.due_time = None;
            l.a.version += 1;
            store::update_assignment(&mut l.tx, &l.a).await?;
            l.route.state = RouteState::AwaitingPapers;
            l.route.disposition = Disposition::Supplement;
            l.route.missing_documents = documents.clone();
            l.route.due_time = None;
            l.route.clock_start_time = None;
            let emits = vec![
                Emit::Desk(
                    l.a.clone(),
                    pb::DeskItemKind::Updated,
                    "papers asked for".into(),
                ),
                Emit::SupplementRequested(l.a.clone(), documents.clone(), note.clone()),
            ];
            if let Some(a) = save(l, emits, &meta).await? {
                return Ok(Response::new(a));
            }
        }
        Err(kept_changing())
    }
}

async fn follow(
    db: Db,
    unit: String,
    mut cursor: Cursor,
    max: i64,
    out: mpsc::Sender<Result<pb::PullAssignmentsResponse, Status>>,
    shutdown: CancellationToken,
) {
    let mut commits = db.commits();
    let mut last_sent = tokio::time::Instant::now();
    loop {
        // Seen before reading, so a commit during the read is not missed.
        commits.borrow_and_update();
        let rows = match store::read_desk(&db, &unit, cursor, max).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = out.send(Err(e.to_status("reading the desk"))).await;
                return;
            }
        };
        if let Some(last) = rows.last() {
            let full = rows.len() as i64 == max;
            cursor = last.cursor;
            let items = rows
                .into_iter()
                .map(|r| pb::DeskItem {
                    cursor: r.cursor.to_string(),
                    kind: r.kind,
                    assignment: pb::Assignment::decode(r.payload.as_slice()).ok(),
                    time: Some(to_timestamp(r.create_time)),
                    note: r.note,
                })
                .collect();
            let response = pb::PullAssignmentsResponse {
                items,
                cursor: cursor.to_string(),
            };
            tokio::select! {
                sent = out.send(Ok(response)) => if sent.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            last_sent = tokio::time::Instant::now();
            if full {
                continue;
            }
        }
        match store::desk_held_back(&db, &unit, cursor).await {
            Ok(store::DeskHeld::Now) => continue,
            Ok(store::DeskHeld::Soon) => {
                tokio::select! {
                    () = tokio::time::sleep(HELD_BACK_RETRY) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            Ok(store::DeskHeld::No) => {}
            Err(e) => {
                let _ = out.send(Err(e.to_status("reading the desk"))).await;
                return;
            }
        }
        if last_sent.elapsed() >= HEARTBEAT {
            let beat = pb::PullAssignmentsResponse {
                items: Vec::new(),
                cursor: cursor.to_string(),
            };
            if out.send(Ok(beat)).await.is_err() {
                return;
            }
            last_sent = tokio::time::Instant::now();
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(FALLBACK_POLL) => {},
            () = out.closed() => return,
            () = shutdown.cancelled() => return,
        }
    }
}
