//! Supervision end to end: the working-day calendar read, counted on and edited over gRPC;
//! a case's whole life on its clock (submitted, routed, accepted, resolved, replied); a
//! deadline passing on the manual clock and the warning and escalations it triggers; papers
//! pausing the clock; appointed visits; a cluster's collective reply; calendar edits moving
//! running deadlines and their warnings.

use std::time::Duration;

use chrono::TimeZone;
use minqing_kit::{auth::Role, backend_tests, db::Backend, testing::eventually};
use minqing_proto::minqing::{
    events::v1 as events_pb, intake::v1 as ipb, routing::v1 as rpb, supervision::v1 as pb,
    r#type::v1 as tpb,
};
use minqing_tests::Suite;
use prost::{Message, Name};
use tonic::Code;

use crate::support::*;

const GRID_UNIT: &str = "grid-620102001001-g01";
const COMMUNITY_UNIT: &str = "community-620102001001";

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

/// Supervision's events about `case`, from its own table (committed, in order).
async fn events(suite: &Suite, case: &str) -> Vec<events_pb::Event> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT txid, seq, id, kind, subject, create_time, payload, actor, traceparent, tracestate \
         FROM events WHERE subject = $1 ORDER BY txid, seq",
    )
    .bind(case)
    .fetch_all(suite.db("supervision").pool())
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
                "supervision",
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

/// Waits until the case's clock satisfies `ok`, and returns it.
async fn clock_when(
    suite: &Suite,
    case: &str,
    what: &str,
    ok: impl Fn(&pb::CaseClock) -> bool + Clone,
) -> pb::CaseClock {
    let reader = suite
        .token("sup-reader", Role::Supervisor, None, None)
        .await;
    let clocks = suite.clocks(&reader).await;
    let name = case.to_string();
    eventually(Duration::from_secs(15), what, || {
        let (mut clocks, name, ok) = (clocks.clone(), name.clone(), ok.clone());
        async move {
            match clocks.get_clock(pb::GetClockRequest { name }).await {
                Ok(c) => ok(c.get_ref()),
                Err(_) => false,
            }
        }
    })
    .await;
    clocks
        .clone()
        .get_clock(pb::GetClockRequest {
            name: case.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the case's replies satisfy `ok`, and returns them.
async fn replies_when(
    suite: &Suite,
    case: &str,
    what: &str,
    ok: impl Fn(&[pb::Reply]) -> bool + Clone,
) -> Vec<pb::Reply> {
    let reader = suite
        .token("sup-reader", Role::Supervisor, None, None)
        .await;
    let replies = suite.replies(&reader).await;
    let name = case.to_string();
    eventually(Duration::from_secs(15), what, || {
        let (mut replies, case, ok) = (replies.clone(), name.clone(), ok.clone());
        async move {
            match replies.list_replies(pb::ListRepliesRequest { case }).await {
                Ok(r) => ok(&r.get_ref().replies),
                Err(_) => false,
            }
        }
    })
    .await;
    replies
        .clone()
        .list_replies(pb::ListRepliesRequest {
            case: case.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .replies
}

/// Waits until supervision has `n` events of kind `M` about `case`.
async fn events_when<M: Message + Default + Name>(suite: &Suite, case: &str, n: usize) -> Vec<M> {
    let what = format!("{n} {} for {case}", M::full_name());
    eventually(Duration::from_secs(15), &what, || async {
        decode::<M>(&events(suite, case).await).len() >= n
    })
    .await;
    decode(&events(suite, case).await)
}

/// China Standard Time.
fn cst(d: u32, h: u32, m: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 11, d, h, m, 0)
        .single()
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn secs(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp()
}

async fn desk_for(
    suite: &Suite,
    unit: &str,
    role: Role,
) -> rpb::unit_desk_client::UnitDeskClient<minqing_tests::Authed> {
    let token = suite
        .token(&format!("desk-{unit}"), role, None, Some(unit))
        .await;
    suite.desk(&token).await
}

/// Accepts and resolves a case's assignment in force through the unit's desk.
/// Links two cases into one cluster as staff (`staff` a token), retrying on ABORTED (the
/// clusterer changed a case meanwhile, and the caller is asked to retry).
async fn link(suite: &Suite, staff: &str, a: &str, b: &str) {
    loop {
        match suite
            .intake(staff)
            .await
            .link_cases(ipb::LinkCasesRequest {
                cases: vec![a.to_string(), b.to_string()],
                reason: "same light".into(),
            })
            .await
        {
            Err(e) if e.code() == Code::Aborted => continue,
            other => {
                other.unwrap();
                return;
            }
        }
    }
}

async fn accept_and_resolve(suite: &Suite, unit: &str, role: Role, case: &str, result: &str) {
    let clock = clock_when(suite, case, "an assignment to accept", |c| {
        c.acceptance.is_some()
    })
    .await;
    let assignment = clock.acceptance.unwrap().assignment;
    let mut desk = desk_for(suite, unit, role).await;
    desk.accept_assignment(rpb::AcceptAssignmentRequest {
        name: assignment.clone(),
        note: String::new(),
    })
    .await
    .unwrap();
    desk.resolve_assignment(rpb::ResolveAssignmentRequest {
        name: assignment,
        result: result.into(),
        evidence: vec![],
    })
    .await
    .unwrap();
}

fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

async fn calendars_are_data_counted_on_and_edited(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite.token("reader", Role::WindowStaff, None, None).await;
    let admin = suite
        .token("district", Role::DistrictSystem, None, None)
        .await;
    let mut cal = suite.calendars(&staff).await;

    // The sample is loaded: National Day 2026 and its make-up Sunday.
    let lanzhou = cal
        .get_calendar(pb::GetCalendarRequest {
            name: "calendars/6201".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let day = |d: &str| lanzhou.special_days.iter().find(|s| s.date == d).cloned();
    assert_eq!(day("2026-10-01").unwrap().kind, pb::DayKind::Holiday as i32);
    assert_eq!(day("2026-09-20").unwrap().kind, pb::DayKind::Workday as i32);
    assert_eq!(lanzhou.working_hours.len(), 2);

    // 30 Sep 2026 + 1 working day skips the National Day week (CST = UTC+8).
    let due = cal
        .compute_deadline(pb::ComputeDeadlineRequest {
            name: "calendars/6201".into(),
            start_time: Some(ts("2026-09-30T10:00:00+08:00")),
            working_days: 1,
            end_time: Some(ts("2026-10-08T10:00:00+08:00")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(due.due_time, Some(ts("2026-10-08T17:30:00+08:00")));
    assert_eq!(due.working_minutes, 6 * 60 + 60);
    assert_eq!(due.working_days_between, 1);

    // Only district systems edit; bad input is refused field by field and changes nothing.
    let denied = cal
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            remove_dates: vec!["2026-10-01".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut edit = suite.calendars(&admin).await;
    let bad = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/62x".into(),
            working_hours: vec![pb::WorkingSpan {
                start: "9:00".into(),
                end: "12:00".into(),
            }],
            upsert_days: vec![pb::SpecialDay {
                date: "2026-13-01".into(),
                kind: 0,
                description: String::new(),
            }],
            remove_dates: vec![],
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        [
            "name",
            "upsert_days[0].date",
            "upsert_days[0].description",
            "upsert_days[0].kind",
            "working_hours[0].start"
        ]
    );
    // A local holiday on Monday 30 Nov 2026 moves a deadline.
    let edited = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            upsert_days: vec![pb::SpecialDay {
                date: "2026-11-30".into(),
                kind: pb::DayKind::Holiday as i32,
                description: "city anniversary".into(),
            }],
            etag: lanzhou.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(edited.etag, lanzhou.etag);
    let stale = edit
        .update_calendar(pb::UpdateCalendarRequest {
            name: "calendars/6201".into(),
            remove_dates: vec!["2026-11-30".into()],
            etag: lanzhou.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let due = cal
        .compute_deadline(pb::ComputeDeadlineRequest {
            name: "calendars/6201".into(),
            start_time: Some(ts("2026-11-27T10:00:00+08:00")),
            working_days: 1,
            end_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(due.due_time, Some(ts("2026-12-01T17:30:00+08:00")));
    let missing = cal
        .get_calendar(pb::GetCalendarRequest {
            name: "calendars/9999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    suite.stop().await;
}

async fn a_case_lives_on_its_clock_until_the_resident_is_answered(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    // Monday 23 Nov 2026, 17:00 in Lanzhou: three working days end Thursday at 17:30.
    let case = submit(&suite, submission("life-1")).await;
    let clock = clock_when(&suite, &case.name, "the clock to start", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    assert_eq!(clock.unit, format!("units/{GRID_UNIT}"));
    assert_eq!(clock.disposition, tpb::Disposition::Committed as i32);
    assert_eq!(clock.time_limit_working_days, 3);
    assert_eq!(clock.due_time.unwrap().seconds, secs(cst(26, 17, 30)));
    assert_eq!(clock.calendar, "calendars/6201");
    let window = clock.acceptance.clone().unwrap();
    assert!(window.accept_time.is_none() && !window.overdue);

    // Handled through the partner's desk: accepted, then resolved.
    accept_and_resolve(
        &suite,
        GRID_UNIT,
        Role::GridWorker,
        &case.name,
        "路灯已修好",
    )
    .await;
    let closed = clock_when(&suite, &case.name, "the clock to close", |c| {
        c.state == pb::ClockState::Closed as i32
    })
    .await;
    assert_eq!(closed.close_reason, pb::CloseReason::Resolved as i32);
    assert!(closed.on_time);
    assert!(closed.acceptance.unwrap().accept_time.is_some());
    let kinds: Vec<&str> = closed.history.iter().map(|h| h.kind.as_str()).collect();
    assert!(
        kinds.contains(&"minqing.supervision.v1.ClockStarted"),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"minqing.supervision.v1.ClockClosed"),
        "{kinds:?}"
    );

    // The resident is answered by phone, as they asked, with the result.
    let replies = replies_when(&suite, &case.name, "the reply to be delivered", |r| {
        r.len() == 1
            && r[0].deliveries.len() == 1
            && r[0].deliveries[0].state == pb::DeliveryState::Delivered as i32
    })
    .await;
    assert_eq!(replies[0].trigger, pb::ReplyTrigger::Resolved as i32);
    assert!(
        replies[0].text.contains("路灯已修好"),
        "{}",
        replies[0].text
    );
    let d = &replies[0].deliveries[0];
    assert_eq!(d.method, tpb::ContactMethod::Phone as i32);
    assert_eq!(d.attempts, 1);
    assert!(d.deliver_time.is_some());
    events_when::<pb::ReplyDelivered>(&suite, &case.name, 1).await;

    // The feed tells it all and nothing personal.
    let all = events(&suite, &case.name).await;
    assert_eq!(decode::<pb::ClockStarted>(&all).len(), 1);
    assert_eq!(decode::<pb::ClockClosed>(&all).len(), 1);
    assert_eq!(decode::<pb::ReplyQueued>(&all).len(), 1);
    for e in &all {
        let bytes = &e.payload.as_ref().unwrap().value;
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains("13909310001") && !text.contains("张桂兰"),
            "{}",
            e.kind
        );
    }

    // Bad input is refused field by field; other places' supervisors see nothing.
    let sup = suite.token("sup", Role::Supervisor, None, None).await;
    let mut clocks = suite.clocks(&sup).await;
    let bad = clocks
        .get_clock(pb::GetClockRequest {
            name: "cases/".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["name"]);
    let bad = clocks
        .list_clocks(pb::ListClocksRequest {
            page_size: 9_999,
            states: vec![42],
            place: "nowhere".into(),
            page_token: "x".into(),
            unit: "desk".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        ["page_size", "page_token", "place", "states[0]", "unit"]
    );
    let elsewhere = suite
        .token("sup-elsewhere", Role::Supervisor, Some("620103"), None)
        .await;
    let denied = suite
        .clocks(&elsewhere)
        .await
        .get_clock(pb::GetClockRequest {
            name: case.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let volunteer = suite.token("vol", Role::Volunteer, None, None).await;
    let denied = suite
        .replies(&volunteer)
        .await
        .list_replies(pb::ListRepliesRequest {
            case: case.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let listed = clocks
        .list_clocks(pb::ListClocksRequest {
            states: vec![pb::ClockState::Closed as i32],
            place: DISTRICT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.clocks.iter().any(|c| c.case == case.name));
    suite.stop().await;
}

async fn a_deadline_passes_and_the_case_is_escalated_a_level_at_a_time(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let case = submit(&suite, submission("late-1")).await;
    clock_when(&suite, &case.name, "the clock to start", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;

    // The grid never accepts: its window's notice goes out once.
    suite.clock.set(cst(24, 9, 0));
    let notices = events_when::<pb::AcceptanceOverdue>(&suite, &case.name, 1).await;
    assert_eq!(notices[0].to_level, tpb::PlaceLevel::Community as i32);
    assert_eq!(notices[0].to_place, COMMUNITY);

    // Four working hours before Thursday's close the unit is warned, once.
    suite.clock.set(cst(26, 13, 31));
    let warned = events_when::<pb::DeadlineWarning>(&suite, &case.name, 1).await;
    assert_eq!(warned[0].due_time.unwrap().seconds, secs(cst(26, 17, 30)));
    assert!(warned[0].minutes_left <= 240 && warned[0].minutes_left > 200);

    // The deadline passes: escalated to the community above the grid…
    suite.clock.set(cst(26, 17, 31));
    let escalated = events_when::<pb::OverdueEscalated>(&suite, &case.name, 1).await;
    assert_eq!(escalated[0].escalation, 1);
    assert_eq!(escalated[0].to_level, tpb::PlaceLevel::Community as i32);
    assert_eq!(escalated[0].to_place, COMMUNITY);
    let overdue = clock_when(&suite, &case.name, "the clock to be overdue", |c| {
        c.state == pb::ClockState::Overdue as i32
    })
    .await;
    assert_eq!(overdue.escalations, 1);
    assert!(overdue.warned);

    // …and a working day later, still overdue, to the street above it (not over the weekend:
    // Friday's close is one working day after Thursday's).
    suite.clock.set(cst(27, 17, 29));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        decode::<pb::OverdueEscalated>(&events(&suite, &case.name).await).len(),
        1
    );
    suite.clock.set(cst(27, 17, 31));
    let escalated = events_when::<pb::OverdueEscalated>(&suite, &case.name, 2).await;
    assert_eq!(escalated[1].escalation, 2);
    assert_eq!(escalated[1].to_level, tpb::PlaceLevel::Street as i32);
    assert_eq!(escalated[1].to_place, STREET);

    // Each fired exactly once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = events(&suite, &case.name).await;
    assert_eq!(decode::<pb::DeadlineWarning>(&all).len(), 1);
    assert_eq!(decode::<pb::OverdueEscalated>(&all).len(), 2);
    assert_eq!(decode::<pb::AcceptanceOverdue>(&all).len(), 1);

    // Answered late at last: closed, not on time.
    accept_and_resolve(&suite, GRID_UNIT, Role::GridWorker, &case.name, "已修好").await;
    let closed = clock_when(&suite, &case.name, "the clock to close", |c| {
        c.state == pb::ClockState::Closed as i32
    })
    .await;
    assert!(!closed.on_time);
    suite.stop().await;
}

async fn papers_pause_the_clock_visits_and_clusters_get_their_replies(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    // A housebound resident applying for assistance: papers are missing, and she is told in
    // person by her grid worker.
    let mut req = submission("dibao-1");
    req.category = "errand-assistance-01".into();
    req.title = "申请低保".into();
    req.description = "家里收入很低，想申请低保".into();
    if let Some(c) = req.reporter.as_mut().and_then(|r| r.contact.as_mut()) {
        c.needs_appointed_visit = true;
        c.visit_note = "卧床，上午方便".into();
    }
    let case = submit(&suite, req).await;
    let paused = clock_when(&suite, &case.name, "the clock to pause", |c| {
        c.state == pb::ClockState::Paused as i32
    })
    .await;
    assert_eq!(paused.pause_reason, pb::PauseReason::AwaitingPapers as i32);
    assert!(paused.due_time.is_none());
    let replies = replies_when(&suite, &case.name, "an appointed visit", |r| {
        r.len() == 1 && r[0].deliveries[0].state == pb::DeliveryState::AwaitingVisit as i32
    })
    .await;
    assert_eq!(replies[0].trigger, pb::ReplyTrigger::NeedsPapers as i32);
    assert!(
        replies[0].text.contains("identity card"),
        "{}",
        replies[0].text
    );

    let grid_worker = suite
        .token("gw-01", Role::GridWorker, Some(GRID), None)
        .await;
    let mut visits = suite.replies(&grid_worker).await;
    let open = visits
        .list_appointments(pb::ListAppointmentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .appointments;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].case, case.name);
    assert_eq!(open[0].grid, GRID);
    let bad = visits
        .record_visit(pb::RecordVisitRequest {
            name: "appointments/".into(),
            outcome: String::new(),
            visit_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["name", "outcome"]);
    let elsewhere = suite
        .token("gw-02", Role::GridWorker, Some("620102001001-g02"), None)
        .await;
    let denied = suite
        .replies(&elsewhere)
        .await
        .record_visit(pb::RecordVisitRequest {
            name: open[0].name.clone(),
            outcome: "已告知".into(),
            visit_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let done = visits
        .record_visit(pb::RecordVisitRequest {
            name: open[0].name.clone(),
            outcome: "已上门告知需补交身份证、户口本".into(),
            visit_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::AppointmentState::Done as i32);
    let again = visits
        .record_visit(pb::RecordVisitRequest {
            name: open[0].name.clone(),
            outcome: "again".into(),
            visit_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    replies_when(&suite, &case.name, "the visit to deliver the reply", |r| {
        r[0].deliveries[0].state == pb::DeliveryState::Delivered as i32
    })
    .await;

    // The papers arrive: the clock runs again, 30 working days from now.
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
    let running = clock_when(&suite, &case.name, "the clock to resume", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    assert_eq!(running.time_limit_working_days, 30);
    assert!(running.due_time.is_some());
    events_when::<pb::ClockResumed>(&suite, &case.name, 1).await;

    // Two reports of one broken light, linked: one collective reply reaches both reporters.
    let first = submit(&suite, submission("cl-1")).await;
    let mut other = submission("cl-2");
    other.channel = tpb::Channel::App as i32;
    if let Some(c) = other.reporter.as_mut().and_then(|r| r.contact.as_mut()) {
        c.phone = "13909310002".into();
        c.preferred_method = tpb::ContactMethod::Online as i32;
        c.online_address = "resident2@example.invalid".into();
    }
    let second = submit(&suite, other).await;
    link(&suite, &staff, &first.name, &second.name).await;
    clock_when(&suite, &second.name, "the second clock", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    // Membership reaches supervision through intake's feed before the answer does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    accept_and_resolve(
        &suite,
        GRID_UNIT,
        Role::GridWorker,
        &first.name,
        "路灯已更换",
    )
    .await;
    let replies = replies_when(&suite, &second.name, "the collective reply", |r| {
        r.len() == 1
            && r[0].deliveries.len() == 2
            && r[0]
                .deliveries
                .iter()
                .all(|d| d.state == pb::DeliveryState::Delivered as i32)
    })
    .await;
    assert!(!replies[0].cluster.is_empty());
    assert_eq!(replies[0].case, first.name);
    assert!(
        replies[0].text.contains("共 2 位居民"),
        "{}",
        replies[0].text
    );
    let methods: Vec<i32> = replies[0].deliveries.iter().map(|d| d.method).collect();
    assert!(methods.contains(&(tpb::ContactMethod::Online as i32)));
    if backend == Backend::Postgres {
        // One sweep sent both and wrote both outcomes in one transaction (each event records
        // its transaction on PostgreSQL).
        let txids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT txid FROM events WHERE kind = $1 AND subject IN ($2, $3)",
        )
        .bind(pb::ReplyDelivered::full_name())
        .bind(&first.name)
        .bind(&second.name)
        .fetch_all(suite.db("supervision").pool())
        .await
        .unwrap();
        assert_eq!(txids.len(), 1, "{txids:?}");
    }
    // The second report's own resolution adds no second reply.
    accept_and_resolve(&suite, GRID_UNIT, Role::GridWorker, &second.name, "同上").await;
    clock_when(&suite, &second.name, "the second clock to close", |c| {
        c.state == pb::ClockState::Closed as i32
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = replies_when(&suite, &second.name, "still one reply", |r| r.len() == 1).await;
    assert_eq!(replies.len(), 1);

    // A third report joins the cluster after its reply was made: when its own case is resolved
    // the cluster's reply reaches it too (ReplyExtended), and the cluster still has one reply.
    let third = submit(&suite, submission("cl-3")).await;
    link(&suite, &staff, &first.name, &third.name).await;
    clock_when(&suite, &third.name, "the third clock", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    accept_and_resolve(&suite, GRID_UNIT, Role::GridWorker, &third.name, "同上").await;
    let replies = replies_when(
        &suite,
        &third.name,
        "the cluster's reply for the third",
        |r| {
            r.len() == 1
                && r[0].deliveries.len() == 3
                && r[0]
                    .deliveries
                    .iter()
                    .any(|d| d.case == third.name && d.state == pb::DeliveryState::Delivered as i32)
        },
    )
    .await;
    assert_eq!(replies[0].case, first.name);
    let extended = events_when::<pb::ReplyExtended>(&suite, &third.name, 1).await;
    assert_eq!(extended[0].reply, replies[0].name);
    assert_eq!(extended[0].deliveries.len(), 1);
    assert_eq!(extended[0].deliveries[0].case, third.name);
    let replies = replies_when(&suite, &second.name, "still one reply", |r| r.len() == 1).await;
    assert_eq!(replies[0].deliveries.len(), 3);
    suite.stop().await;
}

async fn escalation_pauses_the_clock_until_the_decision(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut req = submission("build-1");
    req.category = "onsite-environment-05".into();
    req.title = "违章搭建".into();
    req.description = "楼顶有人私搭乱建".into();
    let case = submit(&suite, req).await;
    let paused = clock_when(&suite, &case.name, "the clock to wait for approval", |c| {
        c.pause_reason == pb::PauseReason::AwaitingApproval as i32
    })
    .await;
    assert!(paused.due_time.is_none());
    let replies = replies_when(&suite, &case.name, "the escalation reply", |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(replies[0].trigger, pb::ReplyTrigger::Escalated as i32);

    // Approved on Tuesday morning: the answer is due at Friday's close.
    suite.clock.set(cst(24, 10, 0));
    let street = suite
        .token(
            "street",
            Role::CommunityStaff,
            None,
            Some("street-office-620102001"),
        )
        .await;
    suite
        .routing(&street)
        .await
        .decide_escalation(rpb::DecideEscalationRequest {
            case: case.name.clone(),
            approved: true,
            note: "同意拆除".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let running = clock_when(&suite, &case.name, "the answer clock", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    assert_eq!(running.time_limit_working_days, 3);
    assert_eq!(running.due_time.unwrap().seconds, secs(cst(27, 17, 30)));
    let _ = COMMUNITY_UNIT;
    suite.stop().await;
}

async fn only_the_reporter_rates_once_and_places_are_scored_and_assessed(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let case = submit(&suite, submission("rate-1")).await;
    clock_when(&suite, &case.name, "the clock to start", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    let app = suite.token("resident-app", Role::Service, None, None).await;
    let mut ratings = suite.ratings(&app).await;
    let rate = |phone: &str, score: i32| pb::RateCaseRequest {
        case: case.name.clone(),
        handling_score: score,
        handling_comment: "修得很快".into(),
        staff_score: score,
        staff_comment: "网格员很负责".into(),
        reporter_phone: phone.into(),
    };
    let early = ratings.rate_case(rate("13909310001", 5)).await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition);
    accept_and_resolve(
        &suite,
        GRID_UNIT,
        Role::GridWorker,
        &case.name,
        "路灯已修好",
    )
    .await;
    clock_when(&suite, &case.name, "the clock to close", |c| {
        c.state == pb::ClockState::Closed as i32
    })
    .await;

    let bad = ratings
        .rate_case(pb::RateCaseRequest {
            case: "x".into(),
            handling_score: 0,
            staff_score: 6,
            reporter_phone: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        ["case", "handling_score", "reporter_phone", "staff_score"]
    );
    let stranger = ratings.rate_case(rate("13900000000", 1)).await.unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let volunteer = suite.token("vol", Role::Volunteer, None, None).await;
    // Until the report has come through intake's feed, nobody can be checked as its reporter.
    let denied = loop {
        let err = suite
            .ratings(&volunteer)
            .await
            .rate_case(rate("13909310001", 1))
            .await
            .unwrap_err();
        if err.code() == Code::FailedPrecondition && err.message().contains("not reached") {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        break err;
    };
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rated = ratings
        .rate_case(rate("139 0931 0001", 5))
        .await
        .unwrap()
        .into_inner();
    assert!(!rated.on_behalf);
    assert_eq!(rated.unit, format!("units/{GRID_UNIT}"));
    let window = suite
        .token("window-07", Role::WindowStaff, None, None)
        .await;
    let twice = suite
        .ratings(&window)
        .await
        .rate_case(rate("13909310001", 1))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    let shown = clock_when(&suite, &case.name, "the rating on the clock", |c| c.rated).await;
    assert!(
        shown
            .history
            .iter()
            .any(|h| h.kind == "minqing.supervision.v1.CaseRated")
    );
    assert_eq!(
        events_when::<pb::CaseRated>(&suite, &case.name, 1)
            .await
            .len(),
        1
    );

    // Staff may record it for a resident at the window: recorded as such.
    let other = submit(&suite, submission("rate-2")).await;
    accept_and_resolve(&suite, GRID_UNIT, Role::GridWorker, &other.name, "已修好").await;
    clock_when(&suite, &other.name, "the clock to close", |c| {
        c.state == pb::ClockState::Closed as i32
    })
    .await;
    let for_her = suite
        .ratings(&window)
        .await
        .rate_case(pb::RateCaseRequest {
            case: other.name.clone(),
            handling_score: 4,
            staff_score: 4,
            reporter_phone: "13909310001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(for_her.on_behalf);
    assert_eq!(for_her.recorded_by, "window_staff:window-07");

    // Residents score their community; a later score the same month replaces theirs.
    for (phone, score) in [("13900000001", 5), ("13900000002", 3), ("13900000001", 4)] {
        ratings
            .score_place(pb::ScorePlaceRequest {
                place: COMMUNITY.into(),
                score,
                comment: String::new(),
                resident_phone: phone.into(),
            })
            .await
            .unwrap();
    }
    let bad = ratings
        .score_place(pb::ScorePlaceRequest {
            place: GRID.into(),
            score: 9,
            comment: String::new(),
            resident_phone: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["place", "resident_phone", "score"]);
    let summary = ratings
        .summarize_place_scores(pb::SummarizePlaceScoresRequest {
            place: STREET.into(),
            period: "2026-11".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.places.len(), 1);
    assert_eq!(summary.places[0].place, COMMUNITY);
    assert_eq!(summary.places[0].count, 2);
    assert!((summary.places[0].average - 3.5).abs() < 1e-9);

    // Two-way assessments: the street rates its community, the community its street.
    let street_staff = suite
        .token("street-staff", Role::CommunityStaff, Some(STREET), None)
        .await;
    let community_staff = suite
        .token(
            "community-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let assess = |rater: &str, ratee: &str, score: i32| pb::SubmitAssessmentRequest {
        period: "2026-Q4".into(),
        rater: rater.into(),
        ratee: ratee.into(),
        score,
        comment: String::new(),
    };
    let given = suite
        .ratings(&street_staff)
        .await
        .submit_assessment(assess(STREET, COMMUNITY, 90))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        given.direction,
        pb::AssessmentDirection::StreetRatesCommunity as i32
    );
    let again = suite
        .ratings(&street_staff)
        .await
        .submit_assessment(assess(STREET, COMMUNITY, 10))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let mut community = suite.ratings(&community_staff).await;
    community
        .submit_assessment(assess(COMMUNITY, STREET, 85))
        .await
        .unwrap();
    let posing = community
        .submit_assessment(assess(STREET, "620102001002", 100))
        .await
        .unwrap_err();
    assert_eq!(posing.code(), Code::PermissionDenied);
    let wrong = community
        .submit_assessment(pb::SubmitAssessmentRequest {
            period: "2026-13".into(),
            rater: COMMUNITY.into(),
            ratee: "620102002".into(),
            score: 101,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&wrong), ["period", "ratee", "score"]);
    let listed = community
        .list_assessments(pb::ListAssessmentsRequest {
            period: "2026-Q4".into(),
            place: COMMUNITY.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.assessments.len(), 2);

    // Appointed supervisors note cases in their scope only.
    let supervisor = suite
        .token("sup-district", Role::Supervisor, Some(DISTRICT), None)
        .await;
    suite
        .ratings(&supervisor)
        .await
        .annotate_case(pb::AnnotateCaseRequest {
            case: case.name.clone(),
            text: "回访满意，可作为典型".into(),
        })
        .await
        .unwrap();
    let outside = suite
        .token("sup-other", Role::Supervisor, Some("620103"), None)
        .await;
    let denied = suite
        .ratings(&outside)
        .await
        .annotate_case(pb::AnnotateCaseRequest {
            case: case.name.clone(),
            text: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let not_supervisor = suite
        .ratings(&window)
        .await
        .annotate_case(pb::AnnotateCaseRequest {
            case: case.name.clone(),
            text: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_supervisor.code(), Code::PermissionDenied);
    let notes = suite
        .ratings(&supervisor)
        .await
        .list_annotations(pb::ListAnnotationsRequest {
            case: case.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(notes.annotations.len(), 1);
    suite.stop().await;
}

async fn replies_are_retried_with_backoff_through_the_webhook(backend: Backend) {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    // A resident-facing gateway that fails twice, then takes the message.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let (seen, calls) = (seen.clone(), calls.clone());
        axum::Router::new().route(
            "/replies",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (seen, calls) = (seen.clone(), calls.clone());
                    async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        seen.lock()
                            .unwrap()
                            .push((key, String::from_utf8_lossy(&body).into_owned()));
                        if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/replies", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let Some(suite) = Suite::start_opts(backend, |o| {
        if let Some(s) = o.supervision.as_mut() {
            s.outlets.insert("phone".into(), "webhook".into());
            s.webhook_url = Some(url.clone());
            s.reply_retry_seconds = 60;
        }
    })
    .await
    else {
        server.abort();
        return;
    };
    let case = submit(&suite, submission("hook-1")).await;
    accept_and_resolve(
        &suite,
        GRID_UNIT,
        Role::GridWorker,
        &case.name,
        "路灯已修好",
    )
    .await;
    let first = replies_when(&suite, &case.name, "the first try to fail", |r| {
        r.len() == 1 && r[0].deliveries[0].attempts == 1
    })
    .await;
    let d = &first[0].deliveries[0];
    assert_eq!(d.state, pb::DeliveryState::Queued as i32);
    assert!(d.last_error.contains("503"), "{}", d.last_error);
    // Retried after 60 s, then after 120 s more: delivered on the third try.
    suite.clock.advance(chrono::Duration::seconds(61));
    replies_when(&suite, &case.name, "the second try to fail", |r| {
        r[0].deliveries[0].attempts == 2
    })
    .await;
    suite.clock.advance(chrono::Duration::seconds(60));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not before the backoff");
    suite.clock.advance(chrono::Duration::seconds(61));
    let done = replies_when(&suite, &case.name, "the reply to be delivered", |r| {
        r[0].deliveries[0].state == pb::DeliveryState::Delivered as i32
    })
    .await;
    assert_eq!(done[0].deliveries[0].attempts, 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(k, _)| k == &seen[0].0 && !k.is_empty()));
    assert!(seen[2].1.contains("13909310001") && seen[2].1.contains("路灯已修好"));
    events_when::<pb::ReplyDelivered>(&suite, &case.name, 1).await;
    suite.stop().await;
    server.abort();
}

async fn emergencies_count_minutes_and_referrals_close_at_once(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut fire = submission("fire-1");
    fire.category = "onsite-environment-06".into();
    fire.title = "楼道着火".into();
    fire.description = "3号楼楼道着火了，有烟".into();
    fire.urgency = tpb::Urgency::Emergency as i32;
    let case = submit(&suite, fire).await;
    let running = clock_when(&suite, &case.name, "the emergency clock", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    assert_eq!(running.disposition, tpb::Disposition::Emergency as i32);
    assert_eq!(running.limit_minutes, 60);
    assert_eq!(running.time_limit_working_days, 0);
    let start = running.start_time.unwrap().seconds;
    assert_eq!(running.due_time.unwrap().seconds, start + 3_600);
    // Minutes, not working days: 45 minutes on, the warning goes out (a Monday evening).
    suite.clock.advance(chrono::Duration::minutes(46));
    let warned = events_when::<pb::DeadlineWarning>(&suite, &case.name, 1).await;
    assert!(warned[0].minutes_left <= 15);

    let mut water = submission("water-1");
    water.category = "onsite-environment-11".into();
    water.title = "停水".into();
    water.description = "3号楼停水两天了".into();
    let referred = submit(&suite, water).await;
    let closed = clock_when(
        &suite,
        &referred.name,
        "the referral to close the clock",
        |c| c.state == pb::ClockState::Closed as i32,
    )
    .await;
    assert_eq!(closed.close_reason, pb::CloseReason::Referred as i32);
    let replies = replies_when(&suite, &referred.name, "the referral reply", |r| {
        r.len() == 1 && r[0].deliveries[0].state == pb::DeliveryState::Delivered as i32
    })
    .await;
    assert_eq!(replies[0].trigger, pb::ReplyTrigger::Referred as i32);
    suite.stop().await;
}

async fn volunteers_work_on_a_case_shows_in_its_clock(backend: Backend) {
    use minqing_proto::minqing::matching::v1 as mpb;
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let staff = suite
        .token(
            "linhuang-staff",
            Role::CommunityStaff,
            Some(COMMUNITY),
            None,
        )
        .await;
    let carer = suite
        .volunteers(&staff)
        .await
        .create_volunteer(mpb::CreateVolunteerRequest {
            request_id: "carer".into(),
            volunteer: Some(mpb::Volunteer {
                display_name: "王师傅".into(),
                contact: Some(tpb::Contact {
                    name: "王建国".into(),
                    phone: "13900000000".into(),
                    ..Default::default()
                }),
                home: Some(tpb::Place {
                    building: BUILDING.into(),
                    ..Default::default()
                }),
                skills: vec![mpb::Skill {
                    skill: "elderly-care".into(),
                    credential: None,
                }],
                languages: vec!["zh".into()],
                availability: Some(mpb::Availability {
                    weekly: (1..=7)
                        .map(|day| mpb::WeeklyWindow {
                            day,
                            start_minute: 8 * 60,
                            end_minute: 22 * 60,
                        })
                        .collect(),
                    exceptions: vec![],
                }),
                capacity: Some(mpb::Capacity {
                    weekly_minutes: 600,
                    max_open_tasks: 3,
                }),
                consent: Some(mpb::Consent {
                    data_processing: true,
                    offers: true,
                    show_name: true,
                    consent_time: None,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut visit = submission("visit-1");
    visit.category = ELDERLY_VISITS.into();
    visit.title = "独居老人需要探访".into();
    visit.description = "楼上独居的张奶奶腿脚不便，希望有人定期上门看看".into();
    let case = submit(&suite, visit).await;
    clock_when(&suite, &case.name, "the clock to start", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    let needs = suite.needs(&staff).await;
    let name = case.name.clone();
    eventually(Duration::from_secs(20), "the case becomes a need", || {
        let (mut needs, case) = (needs.clone(), name.clone());
        async move {
            needs
                .list_needs(mpb::ListNeedsRequest {
                    case,
                    states: vec![1, 2, 3, 4, 5],
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| r.into_inner().needs.len() == 1)
        }
    })
    .await;
    let need = needs
        .clone()
        .list_needs(mpb::ListNeedsRequest {
            case: case.name.clone(),
            states: vec![1, 2, 3, 4, 5],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .needs
        .remove(0);
    let carer_token = suite
        .token("wang", Role::Volunteer, None, Some(&carer.name))
        .await;
    let claim = suite
        .needs(&carer_token)
        .await
        .claim_need(mpb::ClaimNeedRequest {
            request_id: "claim".into(),
            need: need.name.clone(),
            claimant: carer.name.clone(),
            people: 1,
            team: String::new(),
            plan: "每周二上午上门".into(),
        })
        .await
        .unwrap()
        .into_inner();
    suite
        .matching(&carer_token)
        .await
        .complete_assignment(mpb::CompleteAssignmentRequest {
            name: claim.name.clone(),
            minutes: 90,
            participants: 1,
            note: "已上门探访".into(),
        })
        .await
        .unwrap();
    let shown = clock_when(
        &suite,
        &case.name,
        "the volunteer's work on the clock",
        |c| {
            c.history
                .iter()
                .any(|h| h.kind == "minqing.matching.v1.AssignmentCompleted")
        },
    )
    .await;
    assert!(
        shown.history.iter().any(|h| h.summary.contains("王师傅")),
        "{:?}",
        shown.history
    );
    suite.stop().await;
}

fn declare(date: &str, kind: pb::DayKind) -> pb::UpdateCalendarRequest {
    pb::UpdateCalendarRequest {
        name: "calendars/6201".into(),
        upsert_days: vec![pb::SpecialDay {
            date: date.into(),
            kind: kind as i32,
            description: "declared by the city".into(),
        }],
        ..Default::default()
    }
}

async fn calendar_edits_move_running_deadlines_and_their_warnings(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    // Monday 23 Nov, 17:00: due Thursday 26 at the close, warned at 13:30 that day.
    let case = submit(&suite, submission("cal-1")).await;
    let running = clock_when(&suite, &case.name, "the clock to start", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    assert_eq!(running.due_time.unwrap().seconds, secs(cst(26, 17, 30)));
    let admin = suite
        .token("district", Role::DistrictSystem, None, None)
        .await;
    let mut edit = suite.calendars(&admin).await;

    // Wednesday 25 Nov declared a holiday: the deadline moves a working day later.
    edit.update_calendar(declare("2026-11-25", pb::DayKind::Holiday))
        .await
        .unwrap();
    let moved = clock_when(&suite, &case.name, "the deadline to move", |c| {
        c.due_time
            .as_ref()
            .is_some_and(|t| t.seconds == secs(cst(27, 17, 30)))
    })
    .await;
    assert_eq!(moved.state, pb::ClockState::Running as i32);
    assert!(!moved.warned);
    assert!(
        moved
            .history
            .iter()
            .any(|h| h.kind == pb::ClockRescheduled::full_name()
                && h.summary.contains("calendars/6201")),
        "{:?}",
        moved.history
    );
    let rescheduled = events_when::<pb::ClockRescheduled>(&suite, &case.name, 1).await;
    assert_eq!(rescheduled[0].calendar, "calendars/6201");
    assert_eq!(
        rescheduled[0].previous_due_time.unwrap().seconds,
        secs(cst(26, 17, 30))
    );
    assert_eq!(
        rescheduled[0]
            .clock
            .as_ref()
            .unwrap()
            .due_time
            .unwrap()
            .seconds,
        secs(cst(27, 17, 30))
    );

    // Past the old warning time nothing fires (the acceptance window's notice, due before
    // it, shows the timers were looked at)…
    suite.clock.set(cst(26, 13, 31));
    events_when::<pb::AcceptanceOverdue>(&suite, &case.name, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = events(&suite, &case.name).await;
    assert_eq!(decode::<pb::DeadlineWarning>(&all).len(), 0);
    assert_eq!(decode::<pb::OverdueEscalated>(&all).len(), 0);

    // A case reported now (Thursday 13:31) is due Tuesday 1 Dec; Saturday 28 Nov made a
    // working day moves it a working day earlier, and leaves the first case's deadline alone.
    let mut req = submission("cal-2");
    req.description = "5号楼后面的路灯一直闪".into();
    let second = submit(&suite, req).await;
    let later = clock_when(&suite, &second.name, "the second clock", |c| {
        c.state == pb::ClockState::Running as i32
    })
    .await;
    let tuesday = secs(cst(30, 17, 30)) + 86_400;
    assert_eq!(later.due_time.unwrap().seconds, tuesday);
    edit.update_calendar(declare("2026-11-28", pb::DayKind::Workday))
        .await
        .unwrap();
    let earlier = clock_when(&suite, &second.name, "the deadline to move earlier", |c| {
        c.due_time
            .as_ref()
            .is_some_and(|t| t.seconds == secs(cst(30, 17, 30)))
    })
    .await;
    assert_eq!(earlier.state, pb::ClockState::Running as i32);
    let moved_back = events_when::<pb::ClockRescheduled>(&suite, &second.name, 1).await;
    assert_eq!(moved_back[0].previous_due_time.unwrap().seconds, tuesday);

    // Past the new warning time the first case is warned, exactly once.
    suite.clock.set(cst(27, 13, 31));
    let warned = events_when::<pb::DeadlineWarning>(&suite, &case.name, 1).await;
    assert_eq!(warned[0].due_time.unwrap().seconds, secs(cst(27, 17, 30)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = events(&suite, &case.name).await;
    assert_eq!(decode::<pb::DeadlineWarning>(&all).len(), 1);
    assert_eq!(decode::<pb::ClockRescheduled>(&all).len(), 1);
    // The second, due Monday now, is warned on Monday at 13:30, not on Tuesday.
    suite.clock.set(cst(30, 13, 31));
    let warned = events_when::<pb::DeadlineWarning>(&suite, &second.name, 1).await;
    assert_eq!(warned[0].due_time.unwrap().seconds, secs(cst(30, 17, 30)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        decode::<pb::DeadlineWarning>(&events(&suite, &second.name).await).len(),
        1
    );
    suite.stop().await;
}

backend_tests!(
    calendar_edits_move_running_deadlines_and_their_warnings,
    volunteers_work_on_a_case_shows_in_its_clock,
    emergencies_count_minutes_and_referrals_close_at_once,
    replies_are_retried_with_backoff_through_the_webhook,
    only_the_reporter_rates_once_and_places_are_scored_and_assessed,
    calendars_are_data_counted_on_and_edited,
    a_case_lives_on_its_clock_until_the_resident_is_answered,
    a_deadline_passes_and_the_case_is_escalated_a_level_at_a_time,
    papers_pause_the_clock_visits_and_clusters_get_their_replies,
    escalation_pauses_the_clock_until_the_decision,
);
