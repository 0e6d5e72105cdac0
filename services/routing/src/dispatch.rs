//! The dispatcher: follows intake's feed and routes every submitted case, resumes cases
//! waiting for papers when the papers arrive, and cancels the routing of withdrawn cases.
//! Each batch is applied in one transaction with the consumer's cursor, so each event takes
//! effect exactly once; decisions are made in memory, so a batch costs only its writes.

use std::sync::Arc;

use prost::{Message, Name};

use crate::{
    app::App,
    convert,
    domain::{AssignmentState, Channel, Disposition, RouteState},
    flow::{self, Coordination, Emit, FlowError},
    knowledge::Knowledge,
    liaison_store, store,
};
use minqing_kit::{
    db::Tx,
    feed::{Apply, EventMeta},
    time::Micros,
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as ipb, routing::v1 as pb};

/// The consumer's name (its cursor and lease in routing's database).
pub const CONSUMER: &str = "routing-from-intake";

/// The intake event kinds routing follows.
pub fn kinds() -> Vec<String> {
    vec![
        ipb::CaseSubmitted::full_name(),
        ipb::CaseSupplemented::full_name(),
        ipb::CaseWithdrawn::full_name(),
    ]
}

/// Applies intake's events.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Shared state.
    pub app: Arc<App>,
}

impl Apply for Dispatcher {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let knowledge = self.app.knowledge.get().await?;
        // Which of the batch's cases are routed already, in one query (a replay after a
        // crash between commit and acknowledgement cannot happen with the cursor in the same
        // transaction, but a case must never be routed twice whatever the feed does).
        let ids: Vec<String> = events
            .iter()
            .filter(|e| e.kind == ipb::CaseSubmitted::full_name())
            .filter_map(|e| e.subject.strip_prefix("cases/").map(str::to_owned))
            .collect();
        let routed = store::routed_among(tx, &ids).await?;
        for event in events {
            let Some(payload) = &event.payload else {
                continue;
            };
            let meta = EventMeta {
                actor: format!("system:{CONSUMER}"),
                traceparent: event.traceparent.clone(),
                tracestate: event.tracestate.clone(),
            };
            let now = self.app.clock.now_micros();
            if event.kind == ipb::CaseSubmitted::full_name() {
                let e = ipb::CaseSubmitted::decode(payload.value.as_slice())?;
                if let Some(case) = e.case
                    && !routed.contains(case.name.trim_start_matches("cases/"))
                {
                    self.submitted(tx, &case, &knowledge, now, &meta).await?;
                }
            } else if event.kind == ipb::CaseSupplemented::full_name() {
                let e = ipb::CaseSupplemented::decode(payload.value.as_slice())?;
                if let Some(id) = e.case.as_ref().and_then(|c| c.name.strip_prefix("cases/")) {
                    self.papers_arrived(tx, id, &knowledge, now, &meta).await?;
                }
            } else if event.kind == ipb::CaseWithdrawn::full_name() {
                let e = ipb::CaseWithdrawn::decode(payload.value.as_slice())?;
                if let Some(id) = e.case.as_ref().and_then(|c| c.name.strip_prefix("cases/")) {
                    self.withdrawn(tx, id, &e.reason, now, &meta).await?;
                }
            }
        }
        tracing::debug!(
            events = events.len(),
            micros = started.elapsed().as_micros() as u64,
            "dispatched a batch"
        );
        Ok(())
    }
}

fn flow_err(e: FlowError) -> anyhow::Error {
    anyhow::Error::new(e)
}

impl Dispatcher {
    async fn submitted(
        &self,
        tx: &mut Tx,
        case: &ipb::Case,
        knowledge: &Knowledge,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some((mut facts, contact)) = convert::facts_from_case(case) else {
            return Ok(());
        };
        if let Some(item) = knowledge.items.get(&facts.category) {
            facts.volunteer_suitable = item.volunteer_suitable;
            facts.category_name = item.name.clone();
        }
        if facts.channel == Channel::LiaisonStation && !facts.liaison_station.is_empty() {
            liaison_store::insert_station_case(
                tx,
                &facts.case_id,
                &facts.liaison_station,
                &facts.deputy,
                &facts.title,
                &facts.category,
                facts.submit_time,
            )
            .await?;
        }
        let outcome = self.app.decide(&facts, &[], knowledge, now);
        tracing::info!(
            case = %facts.case_id,
            rule = %outcome.decision.rule,
            unit = %outcome.decision.unit,
            disposition = outcome.decision.disposition.slug(),
            "case routed"
        );
        let mut route = flow::new_route(facts, contact, now);
        let mut emits = Vec::new();
        flow::assign(
            &self.app,
            tx,
            &mut route,
            outcome,
            Coordination::First,
            pb::RouteCause::Submitted,
            "",
            now,
            meta,
            &mut emits,
        )
        .await
        .map_err(flow_err)?;
        flow::finish(tx, &mut route, None, emits, now, meta)
            .await
            .map_err(flow_err)
    }

    async fn papers_arrived(
        &self,
        tx: &mut Tx,
        case_id: &str,
        knowledge: &Knowledge,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some(mut route) = store::get_route(tx.conn(), case_id).await? else {
            return Ok(());
        };
        if route.state != RouteState::AwaitingPapers {
            return Ok(());
        }
        let Some(mut a) = store::get_assignment(tx.conn(), &route.current_assignment).await? else {
            return Ok(());
        };
        let limit = if route.time_limit_working_days > 0 {
            route.time_limit_working_days as u32
        } else {
            knowledge
                .items
                .get(&route.facts.category)
                .map_or(self.app.config.default_time_limit_working_days, |i| {
                    i.time_limit_working_days
                })
        };
        let due = self.app.local.add_working_days(now, limit);
        let version = route.version;
        route.disposition = Disposition::Committed;
        route.state = if a.accept_time.is_some() {
            RouteState::InProgress
        } else {
            RouteState::Assigned
        };
        route.missing_documents.clear();
        route.due_time = Some(due);
        route.time_limit_working_days = limit as i32;
        route.clock_start_time = Some(now);
        a.state = if a.accept_time.is_some() {
            AssignmentState::Accepted
        } else {
            AssignmentState::Pending
        };
        a.disposition = Disposition::Committed;
        a.missing_documents.clear();
        a.due_time = Some(due);
        a.version += 1;
        store::update_assignment(tx, &a).await?;
        let emits = vec![
            Emit::Desk(
                a.clone(),
                pb::DeskItemKind::Updated,
                "the papers arrived: handling resumes".into(),
            ),
            Emit::Resumed(a),
        ];
        flow::finish(tx, &mut route, Some(version), emits, now, meta)
            .await
            .map_err(flow_err)
    }

    async fn withdrawn(
        &self,
        tx: &mut Tx,
        case_id: &str,
        reason: &str,
        now: Micros,
        meta: &EventMeta,
    ) -> anyhow::Result<()> {
        let Some(mut route) = store::get_route(tx.conn(), case_id).await? else {
            return Ok(());
        };
        if !route.state.is_open() {
            return Ok(());
        }
        let version = route.version;
        let mut emits = Vec::new();
        flow::end_current(
            tx,
            &route,
            AssignmentState::Cancelled,
            "the resident withdrew the case",
            now,
            &mut emits,
        )
        .await
        .map_err(flow_err)?;
        route.state = RouteState::Cancelled;
        route.due_time = None;
        emits.push(Emit::Cancelled(reason.to_string()));
        flow::finish(tx, &mut route, Some(version), emits, now, meta)
            .await
            .map_err(flow_err)
    }
}
