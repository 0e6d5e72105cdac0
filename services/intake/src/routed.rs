//! What the resident sees of routing: a consumer of routing's feed that keeps each case's
//! state, disposition, handling unit and due time, and tells the resident each step in one
//! line (`CaseStateChanged`, which the timeline shows). Applied exactly once per event: the
//! cursor commits with the case's change.

use prost::{Message, Name};

use crate::{
    domain::{CaseState, Disposition},
    grpc::convert::{self, Personal},
    store,
};
use minqing_kit::{
    db::Tx,
    feed::{self, Apply, EventMeta},
    time::{Clock, Micros, from_timestamp},
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as pb, routing::v1 as rpb};

/// The consumer's name (its cursor and lease in intake's database).
pub const CONSUMER: &str = "intake-from-routing";

/// The routing event kinds that change what the resident sees.
pub fn kinds() -> Vec<String> {
    vec![
        rpb::CaseRouted::full_name(),
        rpb::AssignmentAccepted::full_name(),
        rpb::AssignmentResolved::full_name(),
        rpb::SupplementRequested::full_name(),
        rpb::CaseResumed::full_name(),
        rpb::CaseEscalated::full_name(),
        rpb::EscalationApproved::full_name(),
        rpb::EscalationRefused::full_name(),
        rpb::CaseReferred::full_name(),
    ]
}

/// Applies routing's events to intake's cases.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Clock.
    pub clock: Clock,
}

/// The resident-visible state for a routing state.
fn state_of(route: &rpb::CaseRoute) -> Option<CaseState> {
    Some(match rpb::RouteState::try_from(route.state).ok()? {
        rpb::RouteState::Assigned | rpb::RouteState::Emergency => CaseState::Routed,
        rpb::RouteState::InProgress | rpb::RouteState::AnswerDue => CaseState::InProgress,
        rpb::RouteState::AwaitingPapers => CaseState::AwaitingPapers,
        rpb::RouteState::AwaitingApproval => CaseState::Escalated,
        rpb::RouteState::Resolved => CaseState::Resolved,
        rpb::RouteState::Referred => CaseState::Referred,
        rpb::RouteState::Cancelled | rpb::RouteState::Unspecified => return None,
    })
}

fn date(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(from_timestamp)
        .map(|m| {
            minqing_kit::time::from_micros(m)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_else(|| "the promised date".into())
}

fn line_name(line: i32) -> &'static str {
    match rpb::EmergencyLine::try_from(line) {
        Ok(rpb::EmergencyLine::Fire) => "fire (119)",
        Ok(rpb::EmergencyLine::Ambulance) => "ambulance (120)",
        Ok(rpb::EmergencyLine::Traffic) => "traffic accident (122)",
        _ => "police (110)",
    }
}

/// What the resident is told on `CaseRouted`; `None` when a following event tells it better.
fn routed_summary(e: &rpb::CaseRouted, route: &rpb::CaseRoute) -> Option<String> {
    let unit = &route.handling_unit_display_name;
    let first = e.cause == rpb::RouteCause::Submitted as i32;
    let text = match minqing_proto::minqing::r#type::v1::Disposition::try_from(e.disposition)
        .ok()?
    {
        minqing_proto::minqing::r#type::v1::Disposition::Immediate => {
            format!("{unit} will deal with it on the spot today.")
        }
        minqing_proto::minqing::r#type::v1::Disposition::Committed if first => format!(
            "Sent to {unit}, which promises an answer by {}.",
            date(&route.due_time)
        ),
        minqing_proto::minqing::r#type::v1::Disposition::Committed => format!(
            "Now handled by {unit}; the answer is still due by {}.",
            date(&route.due_time)
        ),
        minqing_proto::minqing::r#type::v1::Disposition::Supplement => format!(
            "Some papers are missing: {}. You will be told in writing; {unit} resumes as soon as they arrive.",
            route.missing_documents.join(", ")
        ),
        minqing_proto::minqing::r#type::v1::Disposition::Emergency => format!(
            "Handed at once to the {} emergency line; {} follows up.",
            line_name(route.emergency_line),
            route.coordinating_unit_display_name
        ),
        // CaseEscalated and CaseReferred follow in the same transaction and tell it.
        minqing_proto::minqing::r#type::v1::Disposition::Escalated
        | minqing_proto::minqing::r#type::v1::Disposition::Referred
        | minqing_proto::minqing::r#type::v1::Disposition::Unspecified => return None,
    };
    Some(text)
}

/// The route and the resident's summary of one event; `None` for events not told.
fn told(kind: &str, payload: &[u8]) -> anyhow::Result<Option<(rpb::CaseRoute, String)>> {
    let pair = |route: Option<rpb::CaseRoute>, summary: Option<String>| route.zip(summary);
    Ok(if kind == rpb::CaseRouted::full_name() {
        let e = rpb::CaseRouted::decode(payload)?;
        let summary = e.route.as_ref().and_then(|r| routed_summary(&e, r));
        pair(e.route, summary)
    } else if kind == rpb::AssignmentAccepted::full_name() {
        let e = rpb::AssignmentAccepted::decode(payload)?;
        let s = e
            .route
            .as_ref()
            .map(|r| format!("{} has taken up your case.", r.handling_unit_display_name));
        pair(e.route, s)
    } else if kind == rpb::AssignmentResolved::full_name() {
        let e = rpb::AssignmentResolved::decode(payload)?;
        let s = e
            .route
            .as_ref()
            .map(|r| format!("Resolved by {}: {}", r.handling_unit_display_name, e.result));
        pair(e.route, s)
    } else if kind == rpb::SupplementRequested::full_name() {
        let e = rpb::SupplementRequested::decode(payload)?;
        let s = e.route.as_ref().map(|r| {
            format!(
                "{} needs more papers: {}. You will be told in writing; handling resumes when they arrive.",
                r.handling_unit_display_name,
                e.documents.join(", ")
            )
        });
        pair(e.route, s)
    } else if kind == rpb::CaseResumed::full_name() {
        let e = rpb::CaseResumed::decode(payload)?;
        let s = Some(format!(
            "The papers arrived and handling has resumed; the answer is due by {}.",
            date(&e.due_time)
        ));
        pair(e.route, s)
    } else if kind == rpb::CaseEscalated::full_name() {
        let e = rpb::CaseEscalated::decode(payload)?;
        let approver = e
            .escalation
            .as_ref()
            .map(|x| x.approver_display_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "a higher authority".into());
        let s = Some(format!(
            "This is beyond the community's authority: it has been reported to {approver} for approval. You will be answered within 3 working days of the decision."
        ));
        pair(e.route, s)
    } else if kind == rpb::EscalationApproved::full_name() {
        let e = rpb::EscalationApproved::decode(payload)?;
        let s = Some(format!(
            "Approved; you will be answered by {}.",
            date(&e.answer_due_time)
        ));
        pair(e.route, s)
    } else if kind == rpb::EscalationRefused::full_name() {
        let e = rpb::EscalationRefused::decode(payload)?;
        let s = Some(format!(
            "Not approved: {}. You will be told why in full by {}.",
            e.reason,
            date(&e.answer_due_time)
        ));
        pair(e.route, s)
    } else if kind == rpb::CaseReferred::full_name() {
        let e = rpb::CaseReferred::decode(payload)?;
        let s = e.referral.as_ref().map(|r| {
            format!(
                "Not the community's business: {} Referred to {}.",
                r.reason, r.competent_body
            )
        });
        pair(e.route, s)
    } else {
        None
    })
}

impl Routed {
    async fn apply_one(&self, tx: &mut Tx, event: &events_pb::Event) -> anyhow::Result<()> {
        let Some(payload) = &event.payload else {
            return Ok(());
        };
        let Some((route, summary)) = told(&event.kind, &payload.value)? else {
            return Ok(());
        };
        let Some(state) = state_of(&route) else {
            return Ok(());
        };
        let Some(id) = route.case.strip_prefix("cases/") else {
            return Ok(());
        };
        let Some(mut case) = store::get_case(tx.conn(), id).await? else {
            return Ok(());
        };
        if !case.state.is_open() {
            return Ok(());
        }
        let now: Micros = self.clock.now_micros();
        let previous = case.state;
        let version = case.version;
        case.state = state;
        case.disposition = Disposition::from_wire(route.disposition).or(case.disposition);
        case.handling_unit = route.handling_unit_display_name.clone();
        case.due_time = route.due_time.as_ref().and_then(from_timestamp);
        case.update_time = now;
        case.version += 1;
        if !store::update_case(tx, &case, version).await? {
            // Changed by a request meanwhile: the batch is applied again from the start.
            anyhow::bail!("case {id} changed while routing's state was applied");
        }
        let out = pb::CaseStateChanged {
            case: Some(convert::case(&case, Personal::Shown)),
            previous_state: previous.wire(),
            summary,
        };
        let meta = EventMeta {
            actor: event.actor.clone(),
            traceparent: event.traceparent.clone(),
            tracestate: event.tracestate.clone(),
        };
        feed::append(tx, &meta, &case.name(), &out, now).await?;
        Ok(())
    }
}

impl Apply for Routed {
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        for event in events {
            self.apply_one(tx, event).await?;
        }
        Ok(())
    }
}
