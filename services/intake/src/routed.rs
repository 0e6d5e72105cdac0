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
    feed::{self, Apply, EventMeta, EventRow},
    time::{Clock, Micros, from_timestamp},
};
use minqing_proto::minqing::{events::v1 as events_pb, intake::v1 as pb, routing::v1 as rpb};

/// The consumer's name (its cursor and lease in intake's database).
pub const CONSUMER: &str = "intake-from-routing";

/// The lane of intake's transactions this consumer's batches run in (kit `db::Lane`).
pub const LANE: &str = "follow_routing";

/// What this consumer's batches append: the only kinds its lane allows.
pub fn lane_kinds() -> Vec<String> {
    vec![pb::CaseStateChanged::full_name()]
}

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

/// One event that changes what the resident sees, decoded.
struct Told {
    case_id: String,
    state: CaseState,
    route: rpb::CaseRoute,
    summary: String,
    meta: EventMeta,
}

impl Routed {
    /// The events of `events` that tell the resident something, in order.
    fn decode(events: &[events_pb::Event]) -> anyhow::Result<Vec<Told>> {
        let mut out = Vec::new();
        for event in events {
            let Some(payload) = &event.payload else {
                continue;
            };
            let Some((route, summary)) = told(&event.kind, &payload.value)? else {
                continue;
            };
            let Some(state) = state_of(&route) else {
                continue;
            };
            let Some(id) = route.case.strip_prefix("cases/") else {
                continue;
            };
            out.push(Told {
                case_id: id.to_string(),
                state,
                route,
                summary,
                meta: EventMeta {
                    actor: event.actor.clone(),
                    traceparent: event.traceparent.clone(),
                    tracestate: event.tracestate.clone(),
                },
            });
        }
        Ok(out)
    }
}

impl Apply for Routed {
    /// Applies a whole batch with a few statements: the batch's cases are read at once, each
    /// event is applied in order to the case in memory (a case told twice in one batch moves
    /// twice, with an event each time, exactly as if the events came one by one), and then the
    /// changed cases are written with multi-row statements at the versions read, and the
    /// events appended likewise. The cases are locked as they are read (PostgreSQL), so a
    /// change to one of them made meanwhile through the API (a supplement, a withdrawal) waits
    /// for the batch rather than failing its version check. The clusterer changes only the
    /// cases' memberships, a table of their own, and never waits for it.
    async fn apply(&self, tx: &mut Tx, events: &[events_pb::Event]) -> anyhow::Result<()> {
        let told = Self::decode(events)?;
        if told.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = told.iter().map(|t| t.case_id.clone()).collect();
        let mut cases = store::get_cases(tx, &ids, true).await?;
        // Each changed case's version as read, in the order first changed.
        let mut read_at: Vec<(String, i64)> = Vec::new();
        let mut changed = std::collections::HashSet::new();
        let mut out = Vec::new();
        for t in told {
            let Some(case) = cases.get_mut(&t.case_id) else {
                continue;
            };
            if !case.state.is_open() {
                continue;
            }
            if changed.insert(case.id.clone()) {
                read_at.push((case.id.clone(), case.version));
            }
            let now: Micros = self.clock.now_micros();
            let previous = case.state;
            case.state = t.state;
            case.disposition = Disposition::from_wire(t.route.disposition).or(case.disposition);
            case.handling_unit = t.route.handling_unit_display_name.clone();
            case.due_time = t.route.due_time.as_ref().and_then(from_timestamp);
            case.update_time = now;
            case.version += 1;
            let event = pb::CaseStateChanged {
                case: Some(convert::case(case, Personal::Shown)),
                previous_state: previous.wire(),
                summary: t.summary,
            };
            out.push(EventRow::new(&t.meta, &case.name(), &event, now));
        }
        let writes: Vec<(&crate::domain::Case, i64)> = read_at
            .iter()
            .filter_map(|(id, version)| cases.get(id).map(|c| (c, *version)))
            .collect();
        let written = store::update_cases(tx, &writes).await?;
        if written != writes.len() as u64 {
            // Changed by a request meanwhile: the batch is applied again from the start.
            anyhow::bail!(
                "{} of {} cases changed while routing's state was applied",
                writes.len() as u64 - written,
                writes.len()
            );
        }
        feed::append_rows(tx, out).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Routing's events applied a whole batch at once change intake's cases and tell the
    //! residents exactly as applied one by one; a case changed meanwhile fails the batch.

    use prost::{Message, Name};
    use sqlx::Row;

    use super::Routed;
    use crate::{cluster::testing, domain::CaseState, store};
    use minqing_kit::{
        backend_tests,
        db::{Backend, Db},
        feed::Apply,
        testing::TestDatabase,
        time::{Clock, to_timestamp},
    };
    use minqing_proto::minqing::{
        events::v1 as events_pb, intake::v1 as pb, routing::v1 as rpb, r#type::v1 as tpb,
    };

    fn route(
        case: &str,
        state: rpb::RouteState,
        disposition: tpb::Disposition,
        due: i64,
    ) -> rpb::CaseRoute {
        rpb::CaseRoute {
            case: format!("cases/{case}"),
            state: state as i32,
            disposition: disposition as i32,
            handling_unit_display_name: format!("unit of {case}"),
            coordinating_unit_display_name: "the community".into(),
            due_time: Some(to_timestamp(due)),
            missing_documents: vec!["户口簿".into()],
            ..Default::default()
        }
    }

    fn event<M: Message + Name>(case: &str, m: &M) -> events_pb::Event {
        events_pb::Event {
            kind: M::full_name(),
            subject: format!("cases/{case}"),
            actor: "system:routing-from-intake".into(),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", M::full_name()),
                value: m.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn routed(case: &str, r: rpb::CaseRoute) -> events_pb::Event {
        event(
            case,
            &rpb::CaseRouted {
                disposition: r.disposition,
                cause: rpb::RouteCause::Submitted as i32,
                case: r.case.clone(),
                route: Some(r),
                ..Default::default()
            },
        )
    }

    /// Several events for one case in one batch, every kind told, and events for a case that
    /// is closed and for one intake does not have.
    fn batch(due: i64) -> Vec<events_pb::Event> {
        use rpb::RouteState as S;
        use tpb::Disposition as D;
        vec![
            routed("a", route("a", S::Assigned, D::Committed, due)),
            routed("b", route("b", S::AwaitingPapers, D::Supplement, due)),
            event(
                "a",
                &rpb::AssignmentAccepted {
                    route: Some(route("a", S::InProgress, D::Committed, due)),
                    ..Default::default()
                },
            ),
            routed("c", route("c", S::AwaitingApproval, D::Escalated, due)),
            event(
                "c",
                &rpb::CaseEscalated {
                    route: Some(route("c", S::AwaitingApproval, D::Escalated, due)),
                    ..Default::default()
                },
            ),
            event(
                "b",
                &rpb::CaseResumed {
                    route: Some(route("b", S::Assigned, D::Committed, due)),
                    due_time: Some(to_timestamp(due)),
                    ..Default::default()
                },
            ),
            event(
                "a",
                &rpb::AssignmentResolved {
                    route: Some(route("a", S::Resolved, D::Committed, due)),
                    result: "fixed".into(),
                    ..Default::default()
                },
            ),
            // Resolved already: no further change.
            event(
                "a",
                &rpb::AssignmentAccepted {
                    route: Some(route("a", S::InProgress, D::Committed, due)),
                    ..Default::default()
                },
            ),
            routed("d", route("d", S::Referred, D::Referred, due)),
            event(
                "d",
                &rpb::CaseReferred {
                    route: Some(route("d", S::Referred, D::Referred, due)),
                    referral: Some(rpb::Referral {
                        competent_body: "the water company".into(),
                        reason: "a utility fault".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            routed("closed", route("closed", S::Assigned, D::Committed, due)),
            routed("unknown", route("unknown", S::Assigned, D::Committed, due)),
            routed("e", route("e", S::Emergency, D::Emergency, due)),
        ]
    }

    async fn setup(t: &TestDatabase, now: i64) -> Db {
        let db = t.db("intake", &store::MIGRATIONS).await;
        let text = ("停水", "楼里停水了");
        let mut cases: Vec<_> = ["a", "b", "c", "d", "e", "closed"]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                testing::case(id, "onsite-environment-11", "", None, text, now + i as i64)
            })
            .collect();
        cases[5].state = CaseState::Withdrawn;
        testing::submit(&db, &cases).await;
        db
    }

    async fn snapshot(db: &Db) -> Vec<String> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT id, state, disposition, handling_unit, due_time, version FROM cases ORDER BY id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            out.push(format!(
                "case {} state {} disposition {} unit {} due {:?} version {}",
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<i64, _>(2),
                r.get::<String, _>(3),
                r.get::<Option<i64>, _>(4),
                r.get::<i64, _>(5)
            ));
        }
        for e in minqing_kit::testing::whole_feed(db).await {
            if e.kind == pb::CaseStateChanged::full_name() {
                let c = pb::CaseStateChanged::decode(e.payload.as_slice()).unwrap();
                let case = c.case.unwrap_or_default();
                out.push(format!(
                    "event {} from {} to {} version {}: {}",
                    e.subject, c.previous_state, case.state, case.etag, c.summary
                ));
            }
        }
        out
    }

    async fn a_batch_applies_as_one_by_one_does(backend: Backend) {
        let (Some(one), Some(each)) = (
            TestDatabase::new(backend).await,
            TestDatabase::new(backend).await,
        ) else {
            return;
        };
        let clock = Clock::manual("2026-11-23T02:00:00Z".parse().unwrap());
        let now = clock.now_micros();
        let due = now + 5 * 86_400_000_000;
        let events = batch(due);
        let consumer = Routed { clock };

        let batch_db = setup(&one, now).await;
        let mut tx = batch_db.begin().await.unwrap();
        consumer.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();

        let single_db = setup(&each, now).await;
        for e in &events {
            let mut tx = single_db.begin().await.unwrap();
            consumer
                .apply(&mut tx, std::slice::from_ref(e))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }

        let (b, s) = (snapshot(&batch_db).await, snapshot(&single_db).await);
        assert_eq!(b, s);
        let text = b.join("\n");
        assert!(
            text.contains(&format!("case a state {} ", CaseState::Resolved.wire())),
            "{text}"
        );
        assert!(
            text.contains("case a state") && text.contains("version 4"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "case closed state {} ",
                CaseState::Withdrawn.wire()
            )),
            "{text}"
        );
        assert_eq!(
            b.iter().filter(|l| l.starts_with("event cases/a ")).count(),
            3,
            "{text}"
        );
        assert!(text.contains("Referred to the water company"), "{text}");

        // The batch's write is at the versions read: a case changed meanwhile is not
        // written (and the consumer then fails the batch, to be applied again).
        let mut tx = batch_db.begin().await.unwrap();
        let mut b = store::get_case(tx.conn(), "b").await.unwrap().unwrap();
        let mut c = store::get_case(tx.conn(), "c").await.unwrap().unwrap();
        let (b_at, stale) = (b.version, c.version - 1);
        b.handling_unit = "changed".into();
        b.version += 1;
        c.handling_unit = "changed".into();
        c.version += 1;
        let written = store::update_cases(&mut tx, &[(&b, b_at), (&c, stale)])
            .await
            .unwrap();
        assert_eq!(written, 1);
        tx.commit().await.unwrap();
        let after = snapshot(&batch_db).await.join("\n");
        assert!(
            after.contains("case b state") && after.contains("unit changed"),
            "{after}"
        );
        assert!(after.contains("unit unit of c"), "{after}");
        batch_db.close().await;
        single_db.close().await;
    }

    backend_tests!(a_batch_applies_as_one_by_one_does);
}
