//! Routing end to end: a case submitted through intake reaches the right unit's
//! `PullAssignments` stream under the right disposition, and every path — accept and resolve,
//! reject → re-route, escalate → approve → answer clock, refer, emergency, supplement →
//! papers → resume — shows in intake's resident-visible state and timeline. Also: desk
//! permissions and cursors, acceptance windows, staff transfers, units administration, rule
//! reloads and explanations, and the deputies' liaison stations.

use std::time::Duration;

use futures::StreamExt;
use minqing_kit::{auth::Role, backend_tests, db::Backend, testing::eventually};
use minqing_proto::minqing::{
    events::v1 as events_pb, intake::v1 as ipb, liaison::v1 as lpb, routing::v1 as pb,
    r#type::v1 as tpb,
};
use minqing_tests::{Authed, Suite};
use prost::{Message, Name};
use tonic::{Code, Streaming};

use crate::support::*;

const GRID_UNIT: &str = "grid-620102001001-g01";
const COMMUNITY_UNIT: &str = "community-620102001001";
const STREET_UNIT: &str = "street-office-620102001";
const POLICE_UNIT: &str = "police-zhangye-road";

/// A desk stream from the start (or the saved cursor).
async fn stream(
    desk: &mut pb::unit_desk_client::UnitDeskClient<Authed>,
    after: &str,
) -> Streaming<pb::PullAssignmentsResponse> {
    desk.pull_assignments(pb::PullAssignmentsRequest {
        unit: String::new(),
        after: after.into(),
        max_batch: 0,
    })
    .await
    .unwrap()
    .into_inner()
}

/// The next desk item about `case` (skipping others), within 10 s.
async fn next_for(s: &mut Streaming<pb::PullAssignmentsResponse>, case: &str) -> pb::DeskItem {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let batch = s.next().await.expect("stream open").expect("stream ok");
            if let Some(item) = batch
                .items
                .into_iter()
                .find(|i| i.assignment.as_ref().is_some_and(|a| a.case == case))
            {
                return item;
            }
        }
    })
    .await
    .expect("a desk item in time")
}

async fn submit(suite: &Suite, req: ipb::SubmitCaseRequest) -> ipb::Case {
    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    suite
        .intake(&staff)
        .await
        .submit_case(req)
        .await
        .unwrap()
        .into_inner()
}

fn case_req(id: &str, category: &str, title: &str, description: &str) -> ipb::SubmitCaseRequest {
    let mut r = submission(id);
    r.category = category.into();
    r.title = title.into();
    r.description = description.into();
    r
}

async fn unit_token(suite: &Suite, unit: &str, role: Role) -> String {
    suite
        .token(&format!("desk-{unit}"), role, None, Some(unit))
        .await
}

/// Waits until intake shows `state` for `case`, and returns the case.
async fn intake_state(suite: &Suite, case: &str, state: ipb::CaseState) -> ipb::Case {
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let mut intake = suite.intake(&staff).await;
    let name = case.to_string();
    eventually(
        Duration::from_secs(10),
        &format!("{case} to become {state:?}"),
        || {
            let mut intake = intake.clone();
            let name = name.clone();
            async move {
                intake
                    .get_case(ipb::GetCaseRequest { name })
                    .await
                    .unwrap()
                    .into_inner()
                    .state
                    == state as i32
            }
        },
    )
    .await;
    intake
        .get_case(ipb::GetCaseRequest { name })
        .await
        .unwrap()
        .into_inner()
}

/// Routing's events about `case`, decoded by kind.
/// The case's events committed so far, in order, read from routing's own table: the RPCs
/// that made them have returned, so they are committed — while the feed may still hold some
/// back behind another test's transaction (the horizon is the whole PostgreSQL cluster's).
async fn routing_events(suite: &Suite, case: &str) -> Vec<events_pb::Event> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT txid, seq, id, kind, subject, create_time, payload, actor, traceparent, tracestate \
         FROM events WHERE subject = $1 ORDER BY txid, seq",
    )
    .bind(case)
    .fetch_all(suite.db("routing").pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            minqing_kit::feed::to_proto(
                minqing_kit::feed::StoredEvent {
                    cursor: minqing_kit::feed::Cursor {
                        txid: r.get(0),
                        seq: r.get(1),
                    },
                    id: r.get(2),
                    kind: r.get(3),
                    subject: r.get(4),
                    create_time: r.get(5),
                    payload: r.get(6),
                    actor: r.get(7),
                    traceparent: r.get(8),
                    tracestate: r.get(9),
                },
                "routing",
            )
        })
        .collect()
}

fn decode<M: Message + Default + Name>(events: &[events_pb::Event]) -> Vec<M> {
    events
        .iter()
        .filter(|e| e.kind == M::full_name())
        .filter_map(|e| M::decode(e.payload.as_ref()?.value.as_slice()).ok())
        .collect()
}

async fn accept_resolve_and_the_resident_sees_it(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let token = unit_token(&suite, GRID_UNIT, Role::GridWorker).await;
    let mut desk = suite.desk(&token).await;
    let mut s = stream(&mut desk, "").await;

    let case = submit(&suite, submission("lights-1")).await;
    let item = next_for(&mut s, &case.name).await;
    assert_eq!(item.kind, pb::DeskItemKind::Assigned as i32);
    let a = item.assignment.unwrap();
    assert_eq!(a.unit, format!("units/{GRID_UNIT}"));
    assert_eq!(a.disposition, tpb::Disposition::Committed as i32);
    assert_eq!(a.state, pb::AssignmentState::Pending as i32);
    assert!(
        a.reporter_contact.is_none(),
        "a grid needs no personal data to fix a light"
    );
    let decision = a.decision.clone().unwrap();
    assert_eq!(decision.rule, "rules/streetlights-grid");
    assert_eq!(decision.time_limit_working_days, 3);
    assert!(a.facts.as_ref().unwrap().title.contains("路灯"));

    // Intake shows the routing to the resident.
    let routed = intake_state(&suite, &case.name, ipb::CaseState::Routed).await;
    assert_eq!(routed.disposition, tpb::Disposition::Committed as i32);
    assert!(
        routed.handling_unit.contains("第一网格"),
        "{}",
        routed.handling_unit
    );
    assert!(routed.due_time.is_some());

    // Another unit can never act on it.
    let police = unit_token(&suite, POLICE_UNIT, Role::PartnerUnit).await;
    let mut other = suite.desk(&police).await;
    let denied = other
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: a.name.clone(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = other
        .pull_assignments(pb::PullAssignmentsRequest {
            unit: format!("units/{GRID_UNIT}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Resolving before accepting is refused; accept, progress, resolve.
    let early = desk
        .resolve_assignment(pb::ResolveAssignmentRequest {
            name: a.name.clone(),
            result: "done".into(),
            evidence: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition);
    let accepted = desk
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: a.name.clone(),
            note: "on it".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state, pb::AssignmentState::Accepted as i32);
    intake_state(&suite, &case.name, ipb::CaseState::InProgress).await;
    desk.report_progress(pb::ReportProgressRequest {
        name: a.name.clone(),
        note: "bulb ordered".into(),
        attachments: vec![],
    })
    .await
    .unwrap();
    let bad = desk
        .resolve_assignment(pb::ResolveAssignmentRequest {
            name: a.name.clone(),
            result: String::new(),
            evidence: vec![tpb::Attachment {
                uri: "ftp://x".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["evidence[0].uri", "result"]);
    let resolved = desk
        .resolve_assignment(pb::ResolveAssignmentRequest {
            name: a.name.clone(),
            result: "路灯已修好".into(),
            evidence: vec![tpb::Attachment {
                uri: format!("sha256:{}", "b".repeat(64)),
                media_type: "image/jpeg".into(),
                description: "lit".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.state, pb::AssignmentState::Resolved as i32);
    let done = intake_state(&suite, &case.name, ipb::CaseState::Resolved).await;
    assert_eq!(done.state, ipb::CaseState::Resolved as i32);

    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let timeline = timeline_of(&mut suite.intake(&staff).await, &case.name).await;
    let summaries: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.summary.as_str())
        .collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("promises an answer by")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("has taken up your case")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|s| s.contains("路灯已修好")),
        "{summaries:?}"
    );

    // The explanation is recorded, and the events carry what matching and supervision need.
    let mut routing = suite.routing(&staff).await;
    let explained = routing
        .explain_route(pb::ExplainRouteRequest {
            subject: Some(pb::explain_route_request::Subject::Case(case.name.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.rule, "rules/streetlights-grid");
    assert!(
        explained
            .steps
            .iter()
            .any(|s| s.text.contains("category onsite-environment-02"))
    );
    let events = routing_events(&suite, &case.name).await;
    let routed: Vec<pb::CaseRouted> = decode(&events);
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].category, STREETLIGHTS);
    assert_eq!(
        routed[0].place_codes.last().map(String::as_str),
        Some(BUILDING)
    );
    assert_eq!(routed[0].cause, pb::RouteCause::Submitted as i32);
    assert!(routed[0].due_time.is_some());
    assert_eq!(decode::<pb::AssignmentResolved>(&events).len(), 1);
    suite.stop().await;
}

async fn rejection_reroutes_and_nothing_is_lost(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let police = unit_token(&suite, POLICE_UNIT, Role::PartnerUnit).await;
    let mut desk = suite.desk(&police).await;
    let mut s = stream(&mut desk, "").await;
    let case = submit(
        &suite,
        case_req(
            "hukou-1",
            "errand-affairs-02",
            "户口迁入",
            "孩子出生后办理户口登记",
        ),
    )
    .await;
    let a = next_for(&mut s, &case.name).await.assignment.unwrap();
    assert_eq!(a.unit, format!("units/{POLICE_UNIT}"));
    assert!(
        a.reporter_contact.is_some(),
        "the police station needs the reporter's contact"
    );

    let community = unit_token(&suite, COMMUNITY_UNIT, Role::CommunityStaff).await;
    let mut cdesk = suite.desk(&community).await;
    let mut cs = stream(&mut cdesk, "").await;
    let empty = desk
        .reject_assignment(pb::RejectAssignmentRequest {
            name: a.name.clone(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["reason"]);
    desk.reject_assignment(pb::RejectAssignmentRequest {
        name: a.name.clone(),
        reason: "需先到社区开具证明".into(),
    })
    .await
    .unwrap();
    // The police desk is told it was taken; the community receives it.
    let revoked = next_for(&mut s, &case.name).await;
    assert_eq!(revoked.kind, pb::DeskItemKind::Revoked as i32);
    let again = next_for(&mut cs, &case.name).await.assignment.unwrap();
    assert_eq!(again.unit, format!("units/{COMMUNITY_UNIT}"));
    // Acting on the refused assignment again is refused.
    let late = desk
        .accept_assignment(pb::AcceptAssignmentRequest {
            name: a.name.clone(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);

    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let route = suite
        .routing(&staff)
        .await
        .get_case_route(pb::GetCaseRouteRequest {
            case: case.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.route_count, 2);
    assert_eq!(route.assignments.len(), 2);
    assert_eq!(
        route.assignments[0].state,
        pb::AssignmentState::Rejected as i32
    );
    // The police station refused as the first receiver: coordination passed on with it.
    assert_eq!(route.coordinating_unit, format!("units/{COMMUNITY_UNIT}"));
    let events = routing_events(&suite, &case.name).await;
    let causes: Vec<i32> = decode::<pb::CaseRouted>(&events)
        .iter()
        .map(|e| e.cause)
        .collect();
    assert_eq!(
        causes,
        [
            pb::RouteCause::Submitted as i32,
            pb::RouteCause::Rejected as i32
        ]
    );
    assert_eq!(
        decode::<pb::AssignmentRejected>(&events)[0].reason,
        "需先到社区开具证明"
    );
    suite.stop().await;
}

async fn escalation_is_approved_and_the_answer_clock_starts(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let community = unit_token(&suite, COMMUNITY_UNIT, Role::CommunityStaff).await;
    let mut desk = suite.desk(&community).await;
    let mut s = stream(&mut desk, "").await;
    let case = submit(
        &suite,
        case_req(
            "build-1",
            "onsite-environment-05",
            "违章搭建",
            "楼顶有人私搭乱建",
        ),
    )
    .await;
    let a = next_for(&mut s, &case.name).await.assignment.unwrap();
    assert_eq!(a.disposition, tpb::Disposition::Escalated as i32);
    let escalated = intake_state(&suite, &case.name, ipb::CaseState::Escalated).await;
    assert!(
        escalated.due_time.is_none(),
        "no deadline while approval is awaited"
    );

    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let mut routing = suite.routing(&staff).await;
    let route = routing
        .get_case_route(pb::GetCaseRouteRequest {
            case: case.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.state, pb::RouteState::AwaitingApproval as i32);
    assert_eq!(
        route.escalation.as_ref().unwrap().approver,
        format!("units/{STREET_UNIT}")
    );

    // Only the approver records the decision.
    let mut as_community = suite.routing(&community).await;
    let denied = as_community
        .decide_escalation(pb::DecideEscalationRequest {
            case: case.name.clone(),
            approved: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let street = unit_token(&suite, STREET_UNIT, Role::CommunityStaff).await;
    let mut approver = suite.routing(&street).await;
    let refusal_without_reason = approver
        .decide_escalation(pb::DecideEscalationRequest {
            case: case.name.clone(),
            approved: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refusal_without_reason), ["note"]);
    let decided = approver
        .decide_escalation(pb::DecideEscalationRequest {
            case: case.name.clone(),
            approved: true,
            note: "同意拆除".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.state, pb::RouteState::AnswerDue as i32);
    let e = decided.escalation.unwrap();
    let approved_at = e.decide_time.unwrap().seconds;
    // Monday 09:00 UTC + 3 working days = Thursday, same time.
    assert_eq!(e.answer_due_time.unwrap().seconds - approved_at, 3 * 86_400);
    assert_eq!(e.answer_time_limit_working_days, 3);
    let shown = intake_state(&suite, &case.name, ipb::CaseState::InProgress).await;
    assert_eq!(shown.due_time.unwrap().seconds, approved_at + 3 * 86_400);
    let again = approver
        .decide_escalation(pb::DecideEscalationRequest {
            case: case.name.clone(),
            approved: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let events = routing_events(&suite, &case.name).await;
    let approved: Vec<pb::EscalationApproved> = decode(&events);
    assert_eq!(approved.len(), 1);
    assert_eq!(
        approved[0].approve_time.as_ref().unwrap().seconds,
        approved_at
    );
    assert_eq!(approved[0].answer_time_limit_working_days, 3);
    assert_eq!(decode::<pb::CaseEscalated>(&events).len(), 1);

    // The community answers the resident within the clock.
    desk.accept_assignment(pb::AcceptAssignmentRequest {
        name: a.name.clone(),
        note: String::new(),
    })
    .await
    .unwrap();
    desk.resolve_assignment(pb::ResolveAssignmentRequest {
        name: a.name.clone(),
        result: "已责令拆除".into(),
        evidence: vec![],
    })
    .await
    .unwrap();
    intake_state(&suite, &case.name, ipb::CaseState::Resolved).await;

    // Staff may also report a case up by hand.
    let other = submit(
        &suite,
        case_req("lights-esc", STREETLIGHTS, "路灯", "整条街的路灯都不亮"),
    )
    .await;
    intake_state(&suite, &other.name, ipb::CaseState::Routed).await;
    let window = suite.token("window", Role::WindowStaff, None, None).await;
    let up = suite
        .routing(&window)
        .await
        .escalate_case(pb::EscalateCaseRequest {
            case: other.name.clone(),
            reason: "需要街道统一更换线路".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.state, pb::RouteState::AwaitingApproval as i32);
    assert_eq!(
        up.escalation.unwrap().approver,
        format!("units/{}", "community-620102001001")
    );
    suite.stop().await;
}

async fn referral_goes_to_the_competent_body(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let utility = unit_token(&suite, "lanzhou-utilities", Role::PartnerUnit).await;
    let mut desk = suite.desk(&utility).await;
    let mut s = stream(&mut desk, "").await;
    let case = submit(
        &suite,
        case_req(
            "water-1",
            "onsite-environment-11",
            "停水",
            "3号楼停水两天了",
        ),
    )
    .await;
    let a = next_for(&mut s, &case.name).await.assignment.unwrap();
    assert_eq!(a.disposition, tpb::Disposition::Referred as i32);
    let shown = intake_state(&suite, &case.name, ipb::CaseState::Referred).await;
    assert_eq!(shown.disposition, tpb::Disposition::Referred as i32);
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let timeline = timeline_of(&mut suite.intake(&staff).await, &case.name).await;
    assert!(
        timeline
            .entries
            .iter()
            .any(|e| e.summary.contains("Referred to")),
        "{:?}",
        timeline.entries
    );

    // By name, when the competent body is not a registered unit: the handling unit explains.
    let wages = submit(
        &suite,
        case_req(
            "wages-1",
            "onsite-mediation-06",
            "欠薪",
            "老板拖欠三个月工资",
        ),
    )
    .await;
    intake_state(&suite, &wages.name, ipb::CaseState::Referred).await;
    let route = suite
        .routing(&staff)
        .await
        .get_case_route(pb::GetCaseRouteRequest {
            case: wages.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let referral = route.referral.unwrap();
    assert!(referral.competent_body.contains("劳动保障监察"));
    assert_eq!(route.handling_unit, format!("units/{COMMUNITY_UNIT}"));

    // Staff refer a case by hand.
    let lights = submit(
        &suite,
        case_req("lights-ref", STREETLIGHTS, "路灯", "商场门口的灯坏了"),
    )
    .await;
    intake_state(&suite, &lights.name, ipb::CaseState::Routed).await;
    let referred = suite
        .routing(&staff)
        .await
        .refer_case(pb::ReferCaseRequest {
            case: lights.name.clone(),
            competent_body: "商场物业".into(),
            reason: "该路灯属商场私有设施".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(referred.state, pb::RouteState::Referred as i32);
    intake_state(&suite, &lights.name, ipb::CaseState::Referred).await;
    suite.stop().await;
}

async fn emergencies_go_straight_to_the_line(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let fire = unit_token(&suite, "emergency-119", Role::PartnerUnit).await;
    let mut desk = suite.desk(&fire).await;
    let mut s = stream(&mut desk, "").await;
    let mut req = case_req(
        "fire-1",
        "onsite-environment-06",
        "楼道着火",
        "3号楼楼道着火了，有烟",
    );
    req.urgency = tpb::Urgency::Emergency as i32;
    let case = submit(&suite, req).await;
    let a = next_for(&mut s, &case.name).await.assignment.unwrap();
    assert_eq!(a.disposition, tpb::Disposition::Emergency as i32);
    assert_eq!(a.reporter_contact.as_ref().unwrap().phone, "13909310001");
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let route = suite
        .routing(&staff)
        .await
        .get_case_route(pb::GetCaseRouteRequest {
            case: case.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.emergency_line, pb::EmergencyLine::Fire as i32);
    assert_eq!(
        route.coordinating_unit,
        format!("units/{COMMUNITY_UNIT}"),
        "the community follows up"
    );
    let shown = intake_state(&suite, &case.name, ipb::CaseState::Routed).await;
    assert_eq!(shown.disposition, tpb::Disposition::Emergency as i32);

    // Anonymous reports never show contact details, even to an emergency line.
    let mut anon = case_req("fire-2", "onsite-environment-06", "着火", "有烟");
    anon.urgency = tpb::Urgency::Emergency as i32;
    anon.reporter = Some(ipb::Reporter {
        anonymous: true,
        contact: None,
    });
    let case2 = submit(&suite, anon).await;
    let a2 = next_for(&mut s, &case2.name).await.assignment.unwrap();
    assert!(a2.reporter_contact.is_none());
    suite.stop().await;
}

async fn missing_papers_pause_the_case_until_they_arrive(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let community = unit_token(&suite, COMMUNITY_UNIT, Role::CommunityStaff).await;
    let mut desk = suite.desk(&community).await;
    let mut s = stream(&mut desk, "").await;
    let case = submit(
        &suite,
        case_req(
            "dibao-1",
            "errand-assistance-01",
            "申请低保",
            "家里收入很低，想申请低保",
        ),
    )
    .await;
    let a = next_for(&mut s, &case.name).await.assignment.unwrap();
    assert_eq!(a.disposition, tpb::Disposition::Supplement as i32);
    assert!(
        a.missing_documents
            .iter()
            .any(|d| d.contains("identity card")),
        "{:?}",
        a.missing_documents
    );
    let waiting = intake_state(&suite, &case.name, ipb::CaseState::AwaitingPapers).await;
    assert!(waiting.due_time.is_none());

    let staff = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    suite
        .intake(&staff)
        .await
        .supplement_case(ipb::SupplementCaseRequest {
            name: case.name.clone(),
            request_id: "papers".into(),
            note: "身份证、户口本已补交".into(),
            attachments: vec![],
        })
        .await
        .unwrap();
    let updated = next_for(&mut s, &case.name).await;
    assert_eq!(updated.kind, pb::DeskItemKind::Updated as i32);
    assert_eq!(
        updated.assignment.unwrap().disposition,
        tpb::Disposition::Committed as i32
    );
    let staff2 = suite.token("reader", Role::WindowStaff, None, None).await;
    let mut intake = suite.intake(&staff2).await;
    let name = case.name.clone();
    eventually(
        Duration::from_secs(10),
        "the resumed deadline reaches intake",
        || {
            let mut intake = intake.clone();
            let name = name.clone();
            async move {
                intake
                    .get_case(ipb::GetCaseRequest { name })
                    .await
                    .unwrap()
                    .into_inner()
                    .due_time
                    .is_some()
            }
        },
    )
    .await;
    let events = routing_events(&suite, &case.name).await;
    let resumed: Vec<pb::CaseResumed> = decode(&events);
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].time_limit_working_days, 30);

    // The handling unit may ask for more papers later: the case pauses again.
    desk.accept_assignment(pb::AcceptAssignmentRequest {
        name: a.name.clone(),
        note: String::new(),
    })
    .await
    .unwrap();
    let asked = desk
        .request_papers(pb::RequestPapersRequest {
            name: a.name.clone(),
            documents: vec!["收入证明".into()],
            note: "请补交收入证明".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(asked.state, pb::AssignmentState::AwaitingPapers as i32);
    intake_state(&suite, &case.name, ipb::CaseState::AwaitingPapers).await;
    let timeline = timeline_of(&mut intake, &case.name).await;
    assert!(
        timeline
            .entries
            .iter()
            .any(|e| e.summary.contains("收入证明"))
    );
    suite.stop().await;
}

async fn desks_resume_from_their_cursor_and_overdue_acceptance_is_noticed(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let token = unit_token(&suite, GRID_UNIT, Role::GridWorker).await;
    let mut desk = suite.desk(&token).await;
    let first = submit(&suite, submission("c-1")).await;
    let mut s = stream(&mut desk, "").await;
    let item = next_for(&mut s, &first.name).await;
    desk.acknowledge_assignments(pb::AcknowledgeAssignmentsRequest {
        unit: String::new(),
        cursor: item.cursor.clone(),
    })
    .await
    .unwrap();
    drop(s);
    let mut second_req = submission("c-2");
    second_req.description = "另一盏路灯也坏了，在小区西门".into();
    let second = submit(&suite, second_req).await;
    // A new pull without a cursor resumes after the acknowledged one: the first is not sent again.
    let mut s = stream(&mut desk, "").await;
    let batch = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let cases: Vec<String> = batch
        .items
        .iter()
        .filter_map(|i| i.assignment.as_ref().map(|a| a.case.clone()))
        .collect();
    assert!(!cases.contains(&first.name), "{cases:?}");
    if !cases.contains(&second.name) {
        next_for(&mut s, &second.name).await;
    }
    let bad = desk
        .pull_assignments(pb::PullAssignmentsRequest {
            after: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["after"]);

    // The grid's window is 60 minutes: past it, the assignment is noticed once.
    suite.clock.advance(chrono::Duration::minutes(61));
    let mut feed = suite.feed("routing").await;
    let mut events = feed
        .subscribe(events_pb::SubscribeRequest {
            kinds: vec![pb::AssignmentAcceptanceOverdue::full_name()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::HashSet::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.len() < 2 {
            let batch = events.next().await.unwrap().unwrap();
            for e in batch.events {
                seen.insert(e.subject.clone());
            }
        }
    })
    .await
    .expect("both overdue acceptances noticed");
    assert!(seen.contains(&first.name) && seen.contains(&second.name));
    suite.stop().await;
}

async fn staff_transfer_and_reassign(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let case = submit(&suite, submission("t-1")).await;
    intake_state(&suite, &case.name, ipb::CaseState::Routed).await;
    let staff = suite.token("window", Role::WindowStaff, None, None).await;
    let mut routing = suite.routing(&staff).await;
    let other_grid = "grid-620102001001-g02";
    let reassigned = routing
        .reassign_case(pb::ReassignCaseRequest {
            case: case.name.clone(),
            unit: format!("units/{other_grid}"),
            reason: "路灯属于第二网格".into(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reassigned.handling_unit, format!("units/{other_grid}"));
    assert_eq!(
        reassigned.coordinating_unit,
        format!("units/{GRID_UNIT}"),
        "responsibility stays"
    );
    let stale = routing
        .transfer_case(pb::TransferCaseRequest {
            case: case.name.clone(),
            unit: format!("units/{STREET_UNIT}"),
            reason: "x".into(),
            etag: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let transferred = routing
        .transfer_case(pb::TransferCaseRequest {
            case: case.name.clone(),
            unit: format!("units/{STREET_UNIT}"),
            reason: "需要街道统一维修".into(),
            etag: reassigned.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        transferred.coordinating_unit,
        format!("units/{STREET_UNIT}"),
        "handed on explicitly"
    );
    let bad = routing
        .transfer_case(pb::TransferCaseRequest {
            case: case.name.clone(),
            unit: "units/nobody".into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["reason", "unit"]);
    let events = routing_events(&suite, &case.name).await;
    let moves: Vec<bool> = decode::<pb::CaseTransferred>(&events)
        .iter()
        .map(|t| t.responsibility_handed_over)
        .collect();
    assert_eq!(moves, [false, true]);

    // Partner units may not take staff actions.
    let police = unit_token(&suite, POLICE_UNIT, Role::PartnerUnit).await;
    let denied = suite
        .routing(&police)
        .await
        .reroute_case(pb::RerouteCaseRequest {
            case: case.name.clone(),
            reason: "x".into(),
            exclude_units: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    suite.stop().await;
}

async fn units_are_administered_and_imported(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut routing = suite.routing(&suite.admin).await;
    let unit = pb::Unit {
        name: "units/clinic-test".into(),
        kind: pb::UnitKind::Clinic as i32,
        display_name: "测试卫生站".into(),
        places: vec![COMMUNITY.into()],
        categories: vec!["onsite-care-02".into()],
        active: true,
        needs_reporter_contact: true,
        ..Default::default()
    };
    let created = routing
        .create_unit(pb::CreateUnitRequest {
            unit: Some(unit.clone()),
            request_id: "u-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.level, 0);
    let again = routing
        .create_unit(pb::CreateUnitRequest {
            unit: Some(unit.clone()),
            request_id: "u-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.etag, created.etag);
    let dup = routing
        .create_unit(pb::CreateUnitRequest {
            unit: Some(unit.clone()),
            request_id: "u-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = routing
        .create_unit(pb::CreateUnitRequest {
            unit: Some(pb::Unit {
                name: "units/Bad Name".into(),
                places: vec!["999".into()],
                categories: vec!["nope".into()],
                ..Default::default()
            }),
            request_id: "u-3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        [
            "unit.categories[0]",
            "unit.display_name",
            "unit.kind",
            "unit.name",
            "unit.places[0]"
        ]
    );

    let updated = routing
        .update_unit(pb::UpdateUnitRequest {
            unit: Some(pb::Unit {
                name: "units/clinic-test".into(),
                active: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
            etag: created.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.active);
    assert_eq!(updated.display_name, "测试卫生站");
    let listed = routing
        .list_units(pb::ListUnitsRequest {
            kinds: vec![pb::UnitKind::Clinic as i32],
            place: BUILDING.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.units.iter().all(|u| u.name != "units/clinic-test"),
        "inactive units are left out"
    );
    assert!(
        listed
            .units
            .iter()
            .any(|u| u.name == "units/clinic-zhangye-road")
    );

    let imported = routing
        .import_units(pb::ImportUnitsRequest {
            units: vec![
                pb::Unit {
                    name: "units/housekeeping-test".into(),
                    kind: pb::UnitKind::Housekeeping as i32,
                    display_name: "家政".into(),
                    places: vec![DISTRICT.into()],
                    active: true,
                    ..Default::default()
                },
                pb::Unit {
                    active: true,
                    ..unit.clone()
                },
            ],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.created, imported.updated), (1, 1));

    // Only administrators manage units.
    let staff = suite.token("window", Role::WindowStaff, None, None).await;
    let denied = suite
        .routing(&staff)
        .await
        .create_unit(pb::CreateUnitRequest {
            unit: Some(unit),
            request_id: "u-9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    suite.stop().await;
}

async fn rules_reload_refuse_bad_files_and_explain_hypotheticals(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, minqing_routing::rules::SAMPLE).unwrap();
    let p = path.clone();
    let Some(suite) = Suite::start_opts(backend, move |o| {
        if let Some(r) = o.routing.as_mut() {
            r.rules_path = Some(p);
            r.rules_watch_ms = 0;
        }
    })
    .await
    else {
        return;
    };
    let mut routing = suite.routing(&suite.admin).await;
    let before = routing
        .get_rule_set(pb::GetRuleSetRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.version, "sample-2026-11");

    // A file that contradicts itself is refused; the rules in force stay.
    std::fs::write(
        &path,
        "version = \"broken\"\n[[rule]]\nid = \"x\"\ndisposition = \"emergency\"\n[[rule]]\nid = \"x\"\ndisposition = \"committed\"\nunit_kind = \"grid\"\n",
    )
    .unwrap();
    let refused = routing
        .reload_rules(pb::ReloadRulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("emergency_line"),
        "{}",
        refused.message()
    );
    assert_eq!(
        routing
            .get_rule_set(pb::GetRuleSetRequest {})
            .await
            .unwrap()
            .into_inner()
            .sha256,
        before.sha256
    );
    std::fs::write(&path, "not toml [").unwrap();
    assert_eq!(
        routing
            .reload_rules(pb::ReloadRulesRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    // A good file takes effect without a restart.
    std::fs::write(
        &path,
        "version = \"v2\"\n[[rule]]\nid = \"lights-community\"\ncategories = [\"onsite-environment-02\"]\ndisposition = \"committed\"\nunit_kind = \"community\"\ntime_limit_working_days = 2\n",
    )
    .unwrap();
    let loaded = routing
        .reload_rules(pb::ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((loaded.version.as_str(), loaded.rule_count), ("v2", 1));
    let rules = routing
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rules.rules[0].name, "rules/lights-community");

    let hypothetical = routing
        .explain_route(pb::ExplainRouteRequest {
            subject: Some(pb::explain_route_request::Subject::Facts(pb::CaseFacts {
                category: STREETLIGHTS.into(),
                place: Some(tpb::Place {
                    grid: GRID.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hypothetical.rule, "rules/lights-community");
    assert_eq!(hypothetical.unit, format!("units/{COMMUNITY_UNIT}"));
    assert_eq!(hypothetical.time_limit_working_days, 2);
    // No rule: the community of the place, never nowhere.
    let unmatched = routing
        .explain_route(pb::ExplainRouteRequest {
            subject: Some(pb::explain_route_request::Subject::Facts(pb::CaseFacts {
                category: ELDERLY_VISITS.into(),
                place: Some(tpb::Place {
                    building: OTHER_DISTRICT_BUILDING.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unmatched.rule, "");
    assert_eq!(unmatched.unit, "units/community-620103001001");
    let bad = routing
        .explain_route(pb::ExplainRouteRequest {
            subject: Some(pb::explain_route_request::Subject::Facts(pb::CaseFacts {
                category: "nope".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["facts.category", "facts.place"]);
    let checked = routing.validate_rules(pb::ValidateRulesRequest { content: "version = \"x\"\n[[rule]]\nid = \"a\"\ndisposition = \"referred\"\nunit_kind = \"utility\"\n".into() }).await.unwrap().into_inner();
    assert!(!checked.valid);
    assert!(checked.errors[0].contains("referral_reason"));
    suite.stop().await;
}

async fn liaison_visits_become_cases_and_deputies_follow_them(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut admin = suite.liaison(&suite.admin).await;
    let station = admin
        .create_station(lpb::CreateStationRequest {
            station: Some(lpb::Station {
                name: "stations/linhuang".into(),
                display_name: "临潢社区代表联络站".into(),
                place: COMMUNITY.into(),
                ..Default::default()
            }),
            request_id: "st-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let deputy = admin
        .create_deputy(lpb::CreateDeputyRequest {
            deputy: Some(lpb::Deputy {
                name: "deputies/wang".into(),
                display_name: "王代表".into(),
                kind: lpb::DeputyKind::PeoplesCongress as i32,
                stations: vec![station.name.clone()],
                principal: "deputy-wang".into(),
                ..Default::default()
            }),
            request_id: "d-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let rota = admin
        .set_duty_rota(lpb::SetDutyRotaRequest {
            station: station.name.clone(),
            slots: vec![lpb::DutySlot {
                day: pb::Weekday::Wednesday as i32,
                start: "09:00".into(),
                end: "11:30".into(),
                deputy: deputy.name.clone(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rota.slots.len(), 1);
    let overlap = admin
        .set_duty_rota(lpb::SetDutyRotaRequest {
            station: station.name.clone(),
            slots: vec![
                lpb::DutySlot {
                    day: 3,
                    start: "09:00".into(),
                    end: "11:30".into(),
                    deputy: deputy.name.clone(),
                },
                lpb::DutySlot {
                    day: 3,
                    start: "11:00".into(),
                    end: "12:00".into(),
                    deputy: deputy.name.clone(),
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&overlap), ["slots[1]"]);

    let wang = suite
        .token("deputy-wang", Role::Deputy, None, Some("linhuang"))
        .await;
    let mut as_deputy = suite.liaison(&wang).await;
    let now = suite.clock.now_micros();
    let session = as_deputy
        .schedule_session(lpb::ScheduleSessionRequest {
            session: Some(lpb::ReceptionSession {
                station: station.name.clone(),
                kind: lpb::SessionKind::Weekly as i32,
                start_time: Some(minqing_kit::time::to_timestamp(now)),
                end_time: Some(minqing_kit::time::to_timestamp(now + 3_600_000_000)),
                deputies: vec![deputy.name.clone()],
                ..Default::default()
            }),
            request_id: "s-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let visit_req = lpb::RecordVisitRequest {
        session: session.name.clone(),
        deputy: deputy.name.clone(),
        request_id: "v-1".into(),
        reporter: submission("x").reporter,
        place: Some(tpb::Place {
            building: BUILDING.into(),
            ..Default::default()
        }),
        category: STREETLIGHTS.into(),
        title: "路灯坏了".into(),
        description: "居民反映小区路灯坏了一周".into(),
        ..Default::default()
    };
    let closed = as_deputy.record_visit(visit_req.clone()).await.unwrap_err();
    assert_eq!(
        closed.code(),
        Code::FailedPrecondition,
        "only while the session is open"
    );
    as_deputy
        .open_session(lpb::OpenSessionRequest {
            name: session.name.clone(),
        })
        .await
        .unwrap();
    let visit = as_deputy
        .record_visit(visit_req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = as_deputy
        .record_visit(visit_req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.case, visit.case, "idempotent");

    // The visit is a case in intake, with the deputy and station attached, and it is routed.
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let case = suite
        .intake(&staff)
        .await
        .get_case(ipb::GetCaseRequest {
            name: visit.case.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(case.channel, tpb::Channel::LiaisonStation as i32);
    let details = case.channel_details.unwrap();
    assert_eq!(
        (details.deputy.as_str(), details.liaison_station.as_str()),
        ("wang", "linhuang")
    );
    intake_state(&suite, &visit.case, ipb::CaseState::Routed).await;
    let mut listed = Vec::new();
    for _ in 0..200 {
        listed = as_deputy
            .list_station_cases(lpb::ListStationCasesRequest {
                station: station.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .cases;
        if listed.first().is_some_and(|c| c.route.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].route.as_ref().unwrap().handling_unit,
        format!("units/{GRID_UNIT}")
    );

    // A deputy of another station sees nothing here.
    let other = suite
        .token("deputy-li", Role::Deputy, None, Some("elsewhere"))
        .await;
    let denied = suite
        .liaison(&other)
        .await
        .list_station_cases(lpb::ListStationCasesRequest {
            station: station.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A suggestion drawn from the case, moved along.
    let suggestion = as_deputy
        .create_suggestion(lpb::CreateSuggestionRequest {
            suggestion: Some(lpb::Suggestion {
                deputy: deputy.name.clone(),
                station: station.name.clone(),
                kind: lpb::SuggestionKind::Suggestion as i32,
                title: "老旧小区路灯改造".into(),
                body: "建议对临潢社区老旧小区路灯统一改造。".into(),
                cases: vec![visit.case.clone()],
                ..Default::default()
            }),
            request_id: "sg-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    as_deputy
        .advance_suggestion(lpb::AdvanceSuggestionRequest {
            name: suggestion.name.clone(),
            state: lpb::SuggestionState::Submitted as i32,
            note: String::new(),
        })
        .await
        .unwrap();
    let not_yours = as_deputy
        .advance_suggestion(lpb::AdvanceSuggestionRequest {
            name: suggestion.name.clone(),
            state: lpb::SuggestionState::Accepted as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_yours.code(), Code::PermissionDenied);
    admin
        .advance_suggestion(lpb::AdvanceSuggestionRequest {
            name: suggestion.name.clone(),
            state: lpb::SuggestionState::Accepted as i32,
            note: String::new(),
        })
        .await
        .unwrap();
    let skip = admin
        .advance_suggestion(lpb::AdvanceSuggestionRequest {
            name: suggestion.name.clone(),
            state: lpb::SuggestionState::Closed as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(skip.code(), Code::FailedPrecondition);
    let answered = admin
        .advance_suggestion(lpb::AdvanceSuggestionRequest {
            name: suggestion.name.clone(),
            state: lpb::SuggestionState::Answered as i32,
            note: "已列入明年改造计划".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.response, "已列入明年改造计划");
    assert_eq!(answered.history.len(), 4);
    let closed = as_deputy
        .close_session(lpb::CloseSessionRequest {
            name: session.name.clone(),
            summary: "接待1人".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (closed.state, closed.visit_count),
        (lpb::SessionState::Closed as i32, 1)
    );
    suite.stop().await;
}

backend_tests!(
    accept_resolve_and_the_resident_sees_it,
    rejection_reroutes_and_nothing_is_lost,
    escalation_is_approved_and_the_answer_clock_starts,
    referral_goes_to_the_competent_body,
    emergencies_go_straight_to_the_line,
    missing_papers_pause_the_case_until_they_arrive,
    desks_resume_from_their_cursor_and_overdue_acceptance_is_noticed,
    staff_transfer_and_reassign,
    units_are_administered_and_imported,
    rules_reload_refuse_bad_files_and_explain_hypotheticals,
    liaison_visits_become_cases_and_deputies_follow_them,
);
